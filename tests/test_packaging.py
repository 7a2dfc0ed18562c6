"""The package as a user installs it: a wheel, a fresh venv, an empty folder.

The wheel is built once from a copy of the checkout and installed (without
its dependencies) into a temporary venv that sees the running interpreter's
site-packages through a .pth file, so TensorFlow is not downloaded again.
Only that folder is added to sys.path: .pth files inside it (such as the
editable install's path hook of a checkout) are not run. Commands run from
an empty folder with a clean environment.

The quickstart chain is the README's command-line block, run as written,
once through the `axial-deeplab` console script and once through
`python -m axial_deeplab_tf`.
"""

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_readme  # pylint: disable=g-import-not-at-top,wrong-import-position

# What a build needs from the checkout (build/ and *.egg-info of earlier
# builds stay out: they could put stale files into the wheel).
_SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in",
            "README.md", "axial_deeplab_tf", "gin")
# An absl log line's prefix, e.g. "I1206 06:29:00.210460 1400 x.py:400] ".
_ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] ")

# The wheel and the venv are module fixtures: with pytest-xdist's
# --dist=loadgroup the tests share one worker, which builds them once.
pytestmark = pytest.mark.xdist_group("packaging")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  root = tmp_path_factory.mktemp("wheel")
  source = root / "source"
  source.mkdir()
  for name in _SOURCES:
    path = os.path.join(REPO, name)
    if os.path.isdir(path):
      shutil.copytree(path, source / name, ignore=shutil.ignore_patterns(
          "__pycache__", "*.pyc"))
    elif os.path.isfile(path):
      shutil.copy(path, source / name)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                  "--no-build-isolation", "-q", "-w", str(root / "dist"),
                  str(source)], check=True, capture_output=True, text=True)
  (path,) = (root / "dist").glob("axial_deeplab_tf-*.whl")
  return str(path)


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
  """(python, bin folder, site-packages) of a venv with the wheel."""
  root = tmp_path_factory.mktemp("venv")
  env_dir = root / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                  str(env_dir)], check=True)
  python = str(env_dir / "bin" / "python")
  site = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()"
       "['purelib'])"], check=True, capture_output=True,
      text=True).stdout.strip()
  paths = sysconfig.get_paths()
  with open(os.path.join(site, "_main_environment.pth"), "w") as f:
    f.write("\n".join(sorted({paths["purelib"], paths["platlib"]})) + "\n")
  subprocess.run([sys.executable, "-m", "pip", "--python", python, "install",
                  "-q", "--no-deps", "--no-index",
                  # The main environment (seen through the .pth) may hold an
                  # editable install of the package: install beside it.
                  "--ignore-installed", wheel], check=True,
                 capture_output=True, text=True)
  return python, str(env_dir / "bin"), site


def _kernel_cache(bin_dir):
  """The fused kernel's build cache of the venv's tests (beside the venv)."""
  return os.path.join(os.path.dirname(os.path.dirname(bin_dir)),
                      "kernel_cache")


def _clean_env(bin_dir, home):
  return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home),
          "LANG": "C.UTF-8", "TF_CPP_MIN_LOG_LEVEL": "2",
          "CUDA_VISIBLE_DEVICES": "",
          "AXIAL_DEEPLAB_KERNEL_CACHE": _kernel_cache(bin_dir)}


def test_wheel_holds_only_the_package(wheel):
  listing = subprocess.run([sys.executable, "-m", "zipfile", "-l", wheel],
                           check=True, capture_output=True,
                           text=True).stdout.splitlines()[1:]
  names = [line.split()[0] for line in listing if line.strip()]
  with zipfile.ZipFile(wheel) as z:
    assert sorted(names) == sorted(z.namelist())
  outside = [n for n in names if not n.startswith("axial_deeplab_tf/")
             and not re.match(r"axial_deeplab_tf-[\d.]+\.dist-info/", n)]
  assert not outside, outside
  assert "axial_deeplab_tf/experiments/coco/axial_deeplab_l.gin" in names
  assert "axial_deeplab_tf/experiments/common/panoptic_deeplab.gin" in names
  assert "axial_deeplab_tf/ops/kernels/axial_span_attention.cc" in names
  assert "axial_deeplab_tf/cli/main.py" in names
  gin_files = {os.path.relpath(os.path.join(d, f), os.path.join(REPO, "gin"))
               for d, _, files in os.walk(os.path.join(REPO, "gin"))
               for f in files if f.endswith(".gin")}
  shipped = {n[len("axial_deeplab_tf/experiments/"):] for n in names
             if n.startswith("axial_deeplab_tf/experiments/")}
  assert shipped == gin_files
  with zipfile.ZipFile(wheel) as z:
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = z.read(entry_points).decode()
  assert "axial-deeplab = axial_deeplab_tf.cli.main:run" in text


def test_installed_package_is_used_and_finds_its_data(venv, tmp_path):
  python, bin_dir, site = venv
  work = tmp_path / "empty"
  work.mkdir()
  code = (
      "import json, axial_deeplab_tf\n"
      "from axial_deeplab_tf.tasks import experiment\n"
      "from axial_deeplab_tf.ops import fused_attention\n"
      "library = fused_attention.load()\n"
      "config = experiment.parse_experiment(['coco/axial_deeplab_l'])\n"
      "print(json.dumps({'file': axial_deeplab_tf.__file__,\n"
      "  'root': experiment.GIN_ROOT,\n"
      "  'experiments': experiment.list_experiments(),\n"
      "  'model': config.task.model.name,\n"
      "  'kernel': library is not None,\n"
      "  'kernel_error': fused_attention.load_error(),\n"
      "  'kernel_source': str(fused_attention._SOURCE),\n"
      "  'kernel_library': str(fused_attention.library_path())}))\n")
  result = subprocess.run([python, "-c", code], cwd=work, text=True,
                          capture_output=True,
                          env=_clean_env(bin_dir, tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  info = json.loads(result.stdout.strip().splitlines()[-1])
  assert info["file"].startswith(site), info
  assert info["root"] == os.path.join(site, "axial_deeplab_tf",
                                      "experiments"), info
  assert "quickstart/axial_deeplab" in info["experiments"]
  assert len(info["experiments"]) == sum(
      f.endswith(".gin") for _, _, files in os.walk(os.path.join(REPO, "gin"))
      for f in files)
  # coco/axial_deeplab_l includes coco/axial_deeplab_base.gin, which
  # includes common/panoptic_deeplab.gin: both found in site-packages.
  assert info["model"] == "axial_deeplab_l"
  assert info["kernel_source"].startswith(site)
  if shutil.which("g++") or shutil.which("c++"):
    assert info["kernel"], info["kernel_error"]
    assert info["kernel_library"].startswith(_kernel_cache(bin_dir))
    assert os.path.isfile(info["kernel_library"])


def test_console_script_and_module_list_subcommands(venv, tmp_path):
  python, bin_dir, _ = venv
  env = _clean_env(bin_dir, tmp_path)
  for command in ([os.path.join(bin_dir, "axial-deeplab"), "--help"],
                  [python, "-m", "axial_deeplab_tf", "--help"]):
    result = subprocess.run(command, cwd=tmp_path, env=env, text=True,
                            capture_output=True)
    assert result.returncode == 0, result.stderr
    for name in ("train", "eval", "export", "predict", "build-data",
                 "make-synthetic", "import-deeplab2"):
      assert f"\n  {name} " in result.stdout, result.stdout


def _start_chain(launcher, bin_dir, root):
  """Starts the README's command-line block in root/empty.

  Each `axial-deeplab ...` line of the block runs through `launcher`, with
  its output in a log file of its own under root/logs.

  Returns:
    (process, work folder, logs folder).
  """
  block = test_readme.cli_chain_block()
  work = root / "empty"
  logs = root / "logs"
  work.mkdir(parents=True)
  logs.mkdir()
  script = (
      "set -euo pipefail\n"
      "n=0\n"
      "axial-deeplab() {\n"
      "  n=$((n + 1))\n"
      f"  {launcher} \"$@\" > \"{logs}/$n-$1.log\" 2>&1 || "
      f"{{ cat \"{logs}/$n-$1.log\" >&2; return 1; }}\n"
      "}\n" + block)
  process = subprocess.Popen(["bash", "-c", script], cwd=work, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=_clean_env(bin_dir, root))
  return process, work, logs


def _finish_chain(process, work, logs):
  """Waits for a chain; {log file name: text}."""
  output, _ = process.communicate(timeout=3600)
  assert process.returncode == 0, output[-5000:]
  return work, {name: (logs / name).read_text()
                for name in sorted(os.listdir(logs))}


def _check_chain(work, logs):
  names = [name.split("-", 1)[1][:-len(".log")] for name in logs]
  assert names == ["make-synthetic", "build-data", "build-data", "train",
                   "eval", "export", "predict"], names
  results = json.loads((work / "qs" / "model" / "eval_results.json")
                       .read_text())
  assert 0.0 <= results["panoptic_quality"] <= 1.0
  assert (work / "qs" / "saved_model" / "saved_model.pb").is_file()
  val_images = os.listdir(work / "qs" / "raw" / "val")
  overlays = os.listdir(work / "qs" / "predictions" / "overlays")
  assert len(overlays) == len(val_images) > 0
  (train_log,) = [text for name, text in logs.items() if "-train" in name]
  _check_log(train_log)
  (export_log,) = [text for name, text in logs.items() if "-export" in name]
  assert len(export_log) < 8000, export_log[:3000]
  assert not [l for l in export_log.splitlines() if len(l) > 1000]


def _check_log(log):
  """One line per message; no traceback or failure; an honest first step.

  A message is duplicated when it is both printed and logged (absl prefix)
  or printed twice. Lines of metric dicts (Orbit prints them one key a
  line) and absl messages that recur by design (one per checkpoint) are
  not compared.
  """
  assert "Traceback" not in log, log[-5000:]
  assert "Failed to" not in log, log[-5000:]
  printed, logged = [], []
  for line in log.splitlines():
    text = _ABSL_PREFIX.sub("", line).strip()
    if not text or text.startswith(("'", "{'")):
      continue
    (logged if _ABSL_PREFIX.match(line) else printed).append(text)
  assert not set(printed) & set(logged), set(printed) & set(logged)
  counts = collections.Counter(printed)
  assert not [m for m, c in counts.items() if c > 1], counts
  steps = [l for l in printed if re.match(r"step \d+/\d+ \|", l)]
  assert "tracing and compiling" in steps[0], steps
  assert "ETA" not in steps[0] and "ETA" not in steps[1], steps
  assert re.search(r"first 2 step\(s\) incl\. tracing and compiling took "
                   r"[\d.]+ s", steps[1]), steps
  assert any("ETA" in l for l in steps[2:]), steps
  assert any(re.search(r"FLOPs \(multi-adds\) in model: [\d.]+ Billions", l)
             for l in logged), log[-3000:]


@pytest.mark.slow
def test_quickstart_chain_with_the_console_script_and_python_m(venv,
                                                               tmp_path):
  # Both chains at once: most of their time is single-threaded tracing.
  python, bin_dir, _ = venv
  chains = [_start_chain(launcher, bin_dir, tmp_path / name)
            for name, launcher in (
                ("console_script", "command axial-deeplab"),
                ("python_m", f"{python} -m axial_deeplab_tf"))]
  for chain in chains:
    _check_chain(*_finish_chain(*chain))
