"""End-to-end test of tools/benchmark.py on tiny sizes (no timing checks)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from axial_deeplab_tf.utils import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "benchmark.py")

HAND_WRITTEN = """# Benchmarks

## Notes written by hand

Keep me.

<!-- BEGIN GENERATED SECTION: benchmark:other (tools/benchmark.py rewrites it) -->
### Someone else's section
old text of another section
<!-- END GENERATED SECTION: benchmark:other -->

<!-- BEGIN GENERATED SECTION: benchmark:layers (tools/benchmark.py rewrites it) -->
### Layers
STALE LAYER TABLE
<!-- END GENERATED SECTION: benchmark:layers -->

## Later section

Also keep me.
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Runs all three suites once, on tiny sizes, in one process."""
  out = tmp_path_factory.mktemp("bench")
  md = out / "BENCHMARKS.md"
  md.write_text(HAND_WRITTEN)
  cmd = [
      sys.executable, TOOL, "--suite=layers,resnet_ratio,models",
      f"--output_dir={out}", f"--markdown={md}", "--runs=2", "--warmup=1",
      "--xla=off",
      # layers
      "--layer_sizes=6,9", "--layer_channels=32",
      "--layer_kinds=axial_global,axial_local,global_2d",
      "--local_span=3", "--max_dense_pixels=40",
      # resnet_ratio: the smallest zoo model, forward only.
      "--model=axial_resnet_26s", "--input_size=32", "--modes=forward",
      "--matmul_size=64",
      # models
      "--models=axial_resnet_26s", "--model_input_size=32",
      "--dtypes=float32", "--throughput_batch=2",
  ]
  result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return out, md


def _load(out, suite):
  with open(os.path.join(out, f"{suite}.json")) as f:
    return json.load(f)


def test_layers_json_and_plots(run):
  out, _ = run
  data = _load(out, "layers")
  assert data["suite"] == "layers" and data["sizes"] == [6, 9]
  cases = {(c["kind"], c["mode"], c["size"]) for c in data["cases"]}
  for kind in ("axial_global", "axial_local"):
    for mode in ("forward", "forward_backward"):
      assert {(kind, mode, 6), (kind, mode, 9)} <= cases
  # 9 x 9 = 81 pixels > --max_dense_pixels=40: skipped and said so.
  assert ("global_2d", "forward", 9) not in cases
  assert ("global_2d", "forward", 6) in cases
  assert any(s["kind"] == "global_2d" and s.get("size") == 9
             for s in data["skipped"])
  for c in data["cases"]:
    assert c["median_s"] > 0 and c["pixels"] == c["size"]**2
    assert c["peak_bytes"] is None or c["peak_bytes"] >= 0
  fits = {(f["kind"], f["mode"]): f for f in data["fits"]}
  assert isinstance(fits[("axial_global", "forward")]["time_exponent"],
                    float)
  # One size only: no fit.
  assert fits[("global_2d", "forward")]["time_exponent"] is None
  for name in ("layers_time.png", "layers_memory.png"):
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert data["machine"]["nproc"] >= 1
  assert "--suite=layers,resnet_ratio,models" in data["command"]


def test_resnet_ratio_json(run):
  out, _ = run
  data = _load(out, "resnet_ratio")
  assert data["model"] == "axial_resnet_26s"
  assert data["input_shape"] == [1, 32, 32, 3]
  assert data["madds"]["axial_resnet_26s"] > 0
  assert data["madds"]["resnet50"] > 0
  assert data["madds_ratio"] == pytest.approx(
      data["madds"]["axial_resnet_26s"] / data["madds"]["resnet50"])
  (entry,) = data["results"]
  assert entry["mode"] == "forward" and entry["xla"] is False
  secs = entry["seconds"]
  assert set(secs) == {"axial_resnet_26s", "resnet50", "matmul"}
  assert all(s["runs"] == 2 and s["median_s"] > 0 for s in secs.values())
  assert entry["ratio"]["wall_ratio_of_medians"] == pytest.approx(
      secs["axial_resnet_26s"]["median_s"] / secs["resnet50"]["median_s"])
  # GFLOP/s = 2 x M-Adds / median seconds.
  assert entry["matmul_gflops"] == pytest.approx(
      2 * 64**3 / secs["matmul"]["median_s"] / 1e9)
  g = entry["gflops"]["resnet50"]
  assert g["gflops"] == pytest.approx(
      2 * data["madds"]["resnet50"] / secs["resnet50"]["median_s"] / 1e9)
  assert g["fraction_of_matmul"] == pytest.approx(
      g["gflops"] / entry["matmul_gflops"])
  with open(os.path.join(out, "resnet_ratio.png"), "rb") as f:
    assert f.read(4) == b"\x89PNG"


def test_models_json(run):
  out, _ = run
  data = _load(out, "models")
  (model,) = data["models"]
  assert model["model"] == "axial_resnet_26s"
  assert model["params"] > 0 and model["madds"] > 0
  (case,) = model["cases"]
  assert "error" not in case, case
  assert case["dtype"] == "float32" and case["xla"] is False
  assert case["latency_s"] > 0 and case["throughput_images_per_s"] > 0
  assert case["gflops"] == pytest.approx(
      2 * model["madds"] / case["latency_s"] / 1e9)
  assert case["fraction_of_matmul"] == pytest.approx(
      case["gflops"] / case["matmul_gflops"])


def test_markdown_sections_replaced_in_place(run):
  _, md = run
  text = md.read_text()
  # Hand-written text and other people's sections are untouched.
  assert text.startswith("# Benchmarks\n\n## Notes written by hand\n\nKeep me.")
  assert "old text of another section" in text
  assert "## Later section\n\nAlso keep me.\n" in text
  # The stale layer section was replaced in place, not duplicated; the new
  # suites were appended once each, after the existing text.
  assert text.index("Also keep me.") < text.index("benchmark:resnet_ratio")
  assert "STALE LAYER TABLE" not in text
  for suite in ("layers", "resnet_ratio", "models"):
    begin = (f"<!-- BEGIN GENERATED SECTION: benchmark:{suite} "
             "(tools/benchmark.py rewrites it) -->")
    assert text.count(begin) == 1
    assert text.count(f"<!-- END GENERATED SECTION: benchmark:{suite} -->") == 1
  layers = text[text.index("benchmark:layers"):]
  assert layers.index("benchmark:layers") < layers.index("## Later section")
  # Machine, date and the exact command are in each section.
  with open("/proc/cpuinfo") as f:
    cpu = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
  assert text.count(f"- Machine: {cpu[0]}") == 3
  assert text.count("- Command: `python tools/benchmark.py --suite=layers,"
                    "resnet_ratio,models") == 3
  assert text.count("- Date: ") == 3
  assert "| axial_global |" in text and "| forward | off |" in text
  assert "| axial_resnet_26s |" in text
  assert "![layers_time.png](layers_time.png)" in text


def test_update_markdown_section_creates_appends_and_rejects(tmp_path):
  path = str(tmp_path / "B.md")
  benchmark.update_markdown_section(path, "benchmark:x", "### X", "one")
  benchmark.update_markdown_section(path, "benchmark:y", "### Y", "two")
  benchmark.update_markdown_section(path, "benchmark:x", "### X", "three")
  text = open(path).read()
  assert text.startswith("# Benchmarks\n")
  assert "one" not in text and text.index("three") < text.index("two")
  with pytest.raises(ValueError, match="section_id"):
    benchmark.update_markdown_section(path, "bad id", "t", "b")
  with open(path, "a") as f:
    f.write(text[text.index("<!-- BEGIN GENERATED SECTION: benchmark:y"):])
  with pytest.raises(ValueError, match="duplicated"):
    benchmark.update_markdown_section(path, "benchmark:y", "### Y", "four")


def test_fit_exponent_and_ratios_against_numpy():
  pixels = np.array([64.0, 256.0, 1024.0, 4096.0])
  rng = np.random.default_rng(0)
  seconds = 3e-6 * pixels**1.5 * np.exp(rng.normal(0, 0.01, 4))
  # Independent: the closed-form least-squares slope.
  lx, ly = np.log(pixels), np.log(seconds)
  slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean())**2
                                                         ).sum()
  assert benchmark.fit_exponent(pixels, seconds) == pytest.approx(slope)
  assert benchmark.fit_exponent([16], [1.0]) is None
  with pytest.raises(ValueError, match="length"):
    benchmark.fit_exponent([1, 2], [1.0])
  a = {"wall": [4.0, 2.0, 9.0], "cpu": [8.0, 4.0, 18.0]}
  b = {"wall": [1.0, 2.0, 3.0], "cpu": [2.0, 4.0, 6.0]}
  stats = benchmark.ratio_stats(a, b)
  assert stats["wall_ratio_of_medians"] == pytest.approx(4.0 / 2.0)
  assert stats["wall_median_paired_ratio"] == pytest.approx(3.0)  # 4, 1, 3
  assert stats["cpu_ratio_of_medians"] == pytest.approx(8.0 / 4.0)


def test_bad_flags_exit_with_message(tmp_path):
  result = subprocess.run(
      [sys.executable, TOOL, "--suite=nope", f"--output_dir={tmp_path}"],
      capture_output=True, text=True, cwd=REPO, timeout=120)
  assert result.returncode != 0
  assert "--suite takes some of" in result.stderr
  result = subprocess.run(
      [sys.executable, TOOL, "--suite=layers", "--layer_sizes=8,x",
       f"--output_dir={tmp_path}"],
      capture_output=True, text=True, cwd=REPO, timeout=120)
  assert result.returncode != 0
  assert "--layer_sizes takes integers" in result.stderr


def test_render_json_rewrites_a_section_without_running(run, tmp_path):
  out, _ = run
  md = tmp_path / "R.md"
  md.write_text("# Benchmarks\n\nhand-written\n")
  result = subprocess.run(
      [sys.executable, TOOL, f"--render_json={out / 'layers.json'}",
       f"--output_dir={tmp_path}", f"--markdown={md}"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  text = md.read_text()
  assert text.startswith("# Benchmarks\n\nhand-written\n")
  assert text.count("<!-- BEGIN GENERATED SECTION: benchmark:layers ") == 1
  # The original run's command and date are kept, not the re-render's.
  assert "- Command: `python tools/benchmark.py --suite=layers," in text
  assert (tmp_path / "layers.json").exists()
  assert (tmp_path / "layers_time.png").exists()
