"""Hostile inputs to the converters, run as the user runs them (subprocess).

Every case ends as specified: one `error: <what>, <which file>, <why>` line
with exit status 2 and no traceback, or a correct result; in bounded time;
nothing partial under a final name; no earlier shard lost.
"""

import glob
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from axial_deeplab_tf.data import synthetic
from axial_deeplab_tf.data.converters import cityscapes
from axial_deeplab_tf.data.converters import coco_panoptic
from axial_deeplab_tf.utils import errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "build_panoptic_data.py")
TOOL_MODULE = "axial_deeplab_tf.cli.build_panoptic_data"  # What TOOL runs.
TIMEOUT = 120


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
              PYTHONPATH=REPO)


def _args(split_paths, out, *extra):
  return [f"--image_dir={split_paths['image_dir']}",
          f"--panoptic_json={split_paths['panoptic_json']}",
          f"--panoptic_dir={split_paths['panoptic_dir']}",
          f"--output_dir={out}", "--split=train", "--num_workers=1"
         ] + list(extra or ["--num_shards=2"])


def _run(args, preexec_fn=None, timeout=TIMEOUT):
  start = time.monotonic()
  result = subprocess.run([sys.executable, TOOL] + args, capture_output=True,
                          text=True, env=_env(), cwd=REPO, timeout=timeout,
                          preexec_fn=preexec_fn)
  result.elapsed = time.monotonic() - start
  return result


def _error_line(result):
  """The one error line; checks status 2, no traceback, one line."""
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


def _final_files(out):
  """Files under final names (anything not hidden)."""
  if not os.path.isdir(out):
    return []
  return sorted(n for n in os.listdir(out) if not n.startswith("."))


def _digests(out):
  return {n: hashlib.sha256(open(os.path.join(out, n), "rb").read())
          .hexdigest() for n in _final_files(out)
          if n.endswith(".tfrecord") or n == "metadata.json"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("hostile") / "shapes")
  paths = synthetic.generate_synthetic_panoptic(
      root, num_train=6, num_val=0, image_size=(24, 28), seed=3)
  return root, paths["train"]


def _hostile_json(tmp_path, split_paths, edit):
  data = json.load(open(split_paths["panoptic_json"]))
  data = edit(data)
  path = str(tmp_path / "hostile.json")
  with open(path, "w") as f:
    if isinstance(data, str):
      f.write(data)
    else:
      json.dump(data, f)
  return dict(split_paths, panoptic_json=path)


# ------------------------------------------------------ 2. annotation JSON
def _many_problems(data):
  data["images"][1]["id"] = data["images"][0]["id"]  # Duplicate image id.
  data["images"][2]["height"] = None
  data["images"][3]["file_name"] = 7
  data["annotations"][0]["segments_info"] = None
  data["annotations"].append(dict(data["annotations"][1]))  # Duplicate.
  return data


@pytest.mark.parametrize("name,edit,expected", [
    ("images_not_a_list", lambda d: dict(d, images={"a": 1}),
     ["'images' must be a list"]),
    ("list_instead_of_object", lambda d: [d], ["top level must be an object"]),
    ("all_at_once", _many_problems,
     ["6 problem(s)", "duplicates images[0]", "images[2].height",
      "images[3].file_name", "annotations[0].segments_info",
      "second annotation of image id", "is also the PNG of"]),
    ("deeply_nested", lambda d: "[" * 100000 + "]" * 100000,
     ["nested too deeply"]),
    ("not_json", lambda d: "{'images': [", ["malformed JSON", "line 1"]),
])
def test_malformed_json_lists_every_problem_before_any_work(
    dataset, tmp_path, name, edit, expected):
  _, split = dataset
  paths = _hostile_json(tmp_path, split, edit)
  out = str(tmp_path / "out")
  result = _run(_args(paths, out))
  line = _error_line(result)
  assert paths["panoptic_json"] in line, line
  for text in expected:
    assert text in line, (name, line)
  assert not _final_files(out), _final_files(out)
  assert result.elapsed < 60, result.elapsed


# ------------------------------------------------------- 2. paths outside
@pytest.mark.parametrize("where", ["image", "label"])
def test_paths_outside_the_dataset_are_refused_unless_allowed(
    dataset, tmp_path, where):
  _, split = dataset
  outside = tmp_path / "elsewhere"
  outside.mkdir()

  def edit(data):
    if where == "image":
      name = data["images"][0]["file_name"]
      shutil.copy(os.path.join(split["image_dir"], name), outside / name)
      data["images"][0]["file_name"] = os.path.join(
          "..", "..", "..", "elsewhere", name)
      data["images"][1]["file_name"] = "/etc/passwd"
    else:
      name = data["annotations"][0]["file_name"]
      shutil.copy(os.path.join(split["panoptic_dir"], name), outside / name)
      data["annotations"][0]["file_name"] = str(outside / name)
    return data

  paths = _hostile_json(tmp_path, split, edit)
  # Make the relative path land exactly on the copy.
  if where == "image":
    data = json.load(open(paths["panoptic_json"]))
    rel = os.path.relpath(outside / os.path.basename(
        data["images"][0]["file_name"]), split["image_dir"])
    data["images"][0]["file_name"] = rel
    json.dump(data, open(paths["panoptic_json"], "w"))
  out = str(tmp_path / "out")
  line = _error_line(_run(_args(paths, out)))
  assert "outside the dataset folder" in line, line
  assert "--allow_outside_root" in line
  if where == "image":
    assert "/etc/passwd" in line and "2 problem(s)" in line, line
  assert not _final_files(out)

  if where == "label":
    # Allowed explicitly: the outside PNG (a copy) gives the same records.
    result = _run(_args(paths, out, "--num_shards=2",
                        "--allow_outside_root"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 of 6 input(s) failed" in result.stderr


def test_cityscapes_frame_ids_cannot_climb_out_of_the_root(tmp_path):
  root = tmp_path / "cityscapes"
  (root / "gtFine").mkdir(parents=True)
  data = {"images": [{"id": "../../../../etc/x_1_2", "file_name": "a.png"}],
          "annotations": [{"image_id": "../../../../etc/x_1_2",
                           "file_name": "a.png", "segments_info": []}],
          "categories": [{"id": 7, "name": "road", "isthing": 0}]}
  json_path = root / "gtFine" / "cityscapes_panoptic_val.json"
  json_path.write_text(json.dumps(data))
  with pytest.raises(errors.UserError, match="outside the dataset folder"):
    cityscapes.convert_cityscapes(
        cityscapes_root=str(root), split="val", output_dir=str(tmp_path / "o"))
  assert not os.path.exists(tmp_path / "o")


def test_unknown_categories_are_all_reported_before_the_work(dataset):
  _, split = dataset
  data = json.load(open(split["panoptic_json"]))
  for ann in data["annotations"][:2]:
    ann["segments_info"][0]["category_id"] = 999
  tasks, problems = coco_panoptic.index_panoptic_json(
      data, split["panoptic_json"], split["image_dir"],
      split["panoptic_dir"], os.path.dirname(split["image_dir"]),
      category_to_train_id={c["id"]: i for i, c in
                            enumerate(data["categories"])})
  assert len(tasks) == 4
  assert sorted(p.kind for p in problems) == ["category id not in metadata"] * 2
  assert all("999" in p.detail for p in problems)


# --------------------------------------- 2. temporary files and final names
@pytest.mark.slow
def test_all_bad_inputs_leave_nothing_under_final_names(dataset, tmp_path):
  _, split = dataset
  images = tmp_path / "broken_images"
  shutil.copytree(split["image_dir"], images)
  for name in os.listdir(images):
    (images / name).write_bytes(b"not an image")
  out = str(tmp_path / "out")
  line = _error_line(_run(_args(dict(split, image_dir=str(images)), out)))
  assert "no record written" in line and "6 input(s)" in line, line
  assert not _final_files(out), _final_files(out)
  assert not glob.glob(os.path.join(out, ".tmp-*"))


@pytest.mark.slow
def test_stale_temporaries_never_match_and_are_cleaned(dataset, tmp_path):
  _, split = dataset
  out = tmp_path / "out"
  out.mkdir()
  # What a killed run leaves (a pid that no longer runs).
  dead = subprocess.Popen(["true"])
  dead.wait()
  stale = out / f".tmp-train-00000-of-00002.tfrecord.{dead.pid}"
  stale.write_bytes(b"half a shard")
  assert not glob.glob(str(out / "train-*"))
  result = _run(_args(split, str(out)))
  assert result.returncode == 0, result.stderr[-3000:]
  assert not stale.exists()
  assert sorted(glob.glob(str(out / "train-*"))) == [
      str(out / "train-00000-of-00002.tfrecord"),
      str(out / "train-00001-of-00002.tfrecord")]
  assert not glob.glob(str(out / ".tmp-*"))


_SLOW_DECODE = """
import time
from PIL import ImageFile
_load = ImageFile.ImageFile.load
def _slow_load(self):
  time.sleep(0.25)
  return _load(self)
ImageFile.ImageFile.load = _slow_load
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_remove_temporaries(tmp_path, sig):
  # Big enough that the write loop runs for a while.
  root = str(tmp_path / "shapes")
  split = synthetic.generate_synthetic_panoptic(
      root, num_train=40, num_val=0, image_size=(96, 96), seed=5)["train"]
  out = tmp_path / "out"
  # Each image decode is slowed down (a sitecustomize on the child's path),
  # so the signal surely lands while records are being written.
  slow = tmp_path / "slow_site"
  slow.mkdir()
  (slow / "sitecustomize.py").write_text(_SLOW_DECODE)
  env = dict(_env(), PYTHONPATH=os.pathsep.join([str(slow), REPO]))
  # The child starts with the default SIGINT action whatever this process
  # inherited (a shell starts background jobs with SIGINT ignored, and an
  # ignored SIGINT stays ignored in the tool, as such jobs expect).
  process = subprocess.Popen(
      [sys.executable, TOOL] + _args(split, str(out)), env=env, cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  # The signal goes once a few records are written (the progress line
  # "4/40" on stderr), when the write loop is surely running.
  seen = []
  for line in process.stderr:
    seen.append(line)
    match = re.search(r"\b(\d+)/40\b", line)
    if match and int(match.group(1)) >= 4:
      break
  assert glob.glob(str(out / ".tmp-*")), "".join(seen)[-3000:]
  process.send_signal(sig)
  _, stderr = process.communicate(timeout=60)
  stderr = "".join(seen) + stderr
  assert process.returncode != 0
  assert "Traceback" not in stderr, stderr[-3000:]
  assert not glob.glob(str(out / ".tmp-*"))
  assert not glob.glob(str(out / "train-*"))


# ---------------------------------------------------------- 1. environment
def test_output_dir_that_is_a_file(dataset, tmp_path):
  _, split = dataset
  a_file = tmp_path / "a_file"
  a_file.write_text("keep me")
  line = _error_line(_run(_args(split, str(a_file))))
  assert "--output_dir is not a folder" in line and str(a_file) in line
  assert a_file.read_text() == "keep me"
  line = _error_line(_run(_args(split, str(a_file / "sub"))))
  assert str(a_file) in line, line


def _limit(kind, value):
  def apply():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(kind, (value, value))
  return apply


def test_too_few_file_handles_for_the_shards(dataset, tmp_path):
  _, split = dataset
  out = str(tmp_path / "out")
  args = _args(split, out, "--num_shards=300")
  line = _error_line(_run(args, preexec_fn=_limit(resource.RLIMIT_NOFILE,
                                                    256)))
  assert "too few file handles" in line and "ulimit -n" in line, line
  assert not _final_files(out)


@pytest.mark.slow
def test_disk_full_keeps_the_previous_shards(dataset, tmp_path):
  _, split = dataset
  out = str(tmp_path / "out")
  assert _run(_args(split, out)).returncode == 0
  before = _digests(out)
  assert len(before) == 3
  # A file size limit makes writes fail like a full disk (EFBIG).
  line = _error_line(_run(_args(split, out),
                          preexec_fn=_limit(resource.RLIMIT_FSIZE, 2048)))
  assert "shard" in line or "too large" in line, line
  assert _digests(out) == before
  assert not glob.glob(os.path.join(out, ".tmp-*"))


def test_read_only_output_dir(dataset, tmp_path):
  _, split = dataset
  out = tmp_path / "ro"
  out.mkdir()
  if os.geteuid() == 0:
    # Root ignores permission bits; an immutable folder refuses it too.
    if subprocess.run(["chattr", "+i", str(out)]).returncode != 0:
      pytest.skip("chattr +i is not available")
  else:
    out.chmod(0o555)
  try:
    line = _error_line(_run(_args(split, str(out))))
    assert str(out) in line and "not writable" in line, line
    assert not os.listdir(out)
  finally:
    if os.geteuid() == 0:
      subprocess.run(["chattr", "-i", str(out)])
    else:
      out.chmod(0o755)


# --------------------------------------------- SIGKILL at random points
# A warm process (the tool module and TensorFlow imported once) forks one
# child per run, so that ten kills and reruns do not pay ten imports: the
# child runs the tool's own main() with the given flags, as the command
# line would.
_ZYGOTE = r"""
import importlib, json, os, sys
import tensorflow as tf  # Imported before forking, as the tool would.
tool = importlib.import_module(sys.argv[1])  # The tool's module.
for line in sys.stdin:
  argv = json.loads(line)
  pid = os.fork()
  if pid == 0:
    code = 0
    try:
      devnull = os.open(os.devnull, os.O_WRONLY)
      os.dup2(devnull, 2)
      tool.FLAGS(["tool"] + argv)
      tool.main(["tool"])
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else 1
    except BaseException:
      code = 1
    os._exit(code)
  print(f"pid {pid}", flush=True)
  _, status = os.waitpid(pid, 0)
  print(f"status {os.waitstatus_to_exitcode(status)}", flush=True)
"""


class _Zygote:

  def __init__(self):
    self.process = subprocess.Popen(
        [sys.executable, "-c", _ZYGOTE, TOOL_MODULE], env=_env(), cwd=REPO,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

  def start(self, argv):
    self.process.stdin.write(json.dumps(argv) + "\n")
    self.process.stdin.flush()
    line = self.process.stdout.readline()
    assert line.startswith("pid "), line
    return int(line.split()[1])

  def status(self):
    line = self.process.stdout.readline()
    assert line.startswith("status "), line
    return int(line.split()[1])

  def run(self, argv):
    self.start(argv)
    return self.status()

  def close(self):
    self.process.stdin.close()
    self.process.wait(timeout=60)


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_is_byte_identical(tmp_path):
  root = str(tmp_path / "shapes")
  split = synthetic.generate_synthetic_panoptic(
      root, num_train=24, num_val=0, image_size=(64, 64), seed=9)["train"]
  # The uninterrupted run: the command line itself.
  reference = str(tmp_path / "reference")
  result = _run(_args(split, reference, "--num_shards=3"))
  assert result.returncode == 0, result.stderr[-3000:]
  expected = _digests(reference)
  assert len(expected) == 4  # Three shards and metadata.json.
  zygote = _Zygote()
  try:
    warm = str(tmp_path / "warm")
    durations = []
    for _ in range(2):
      start = time.monotonic()
      assert zygote.run(_args(split, warm, "--num_shards=3")) == 0
      durations.append(time.monotonic() - start)
    assert _digests(warm) == expected
    rng = random.Random(0)
    # Kill times spread over the whole run (setup, reading and checking the
    # inputs, writing the records, closing and renaming the shards): try k
    # dies at (k + u) / 10 of a run, a run's length taken from the latest
    # uninterrupted runs (the machine's load changes it).
    fractions = [(k + rng.random()) / 10 for k in range(10)]
    statuses, kill_times = [], []
    for k, fraction in enumerate(fractions):
      out = str(tmp_path / f"try{k}")
      if k % 2:
        # Odd tries: over the shards of an earlier complete run.
        shutil.copytree(reference, out)
      args = _args(split, out, "--num_shards=3")
      delay = fraction * min(durations[-2:])
      kill_times.append(delay)
      pid = zygote.start(args)
      time.sleep(delay)
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass  # Already done.
      statuses.append(zygote.status())
      assert not glob.glob(os.path.join(out, "train-*.tmp*"))
      start = time.monotonic()
      assert zygote.run(args) == 0, out
      durations.append(time.monotonic() - start)
      assert _digests(out) == expected, (k, delay, os.listdir(out))
      assert not glob.glob(os.path.join(out, ".tmp-*")), os.listdir(out)
  finally:
    zygote.close()
  killed = statuses.count(-signal.SIGKILL)
  print(f"runs {[round(d, 2) for d in durations]} s; {killed} of 10 runs "
        f"killed before the end; kill times "
        f"{[round(t, 2) for t in kill_times]} s")
  assert killed >= 5, statuses
