"""End-to-end test of tools/benchmark.py on tiny sizes (no timing checks)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from axial_deeplab_tf.benchmarks import benchmark
from axial_deeplab_tf.benchmarks import report
from axial_deeplab_tf.benchmarks import suites as benchmark_suites

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

# The module fixture runs the tool once; with pytest-xdist's
# --dist=loadgroup its tests share one worker instead of each worker
# running the fixture again.
pytestmark = pytest.mark.xdist_group("benchmark_tool")


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
  report.update_markdown_section(path, "benchmark:x", "### X", "one")
  report.update_markdown_section(path, "benchmark:y", "### Y", "two")
  report.update_markdown_section(path, "benchmark:x", "### X", "three")
  text = open(path).read()
  assert text.startswith("# Benchmarks\n")
  assert "one" not in text and text.index("three") < text.index("two")
  with pytest.raises(ValueError, match="section_id"):
    report.update_markdown_section(path, "bad id", "t", "b")
  with open(path, "a") as f:
    f.write(text[text.index("<!-- BEGIN GENERATED SECTION: benchmark:y"):])
  with pytest.raises(ValueError, match="duplicated"):
    report.update_markdown_section(path, "benchmark:y", "### Y", "four")


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


@pytest.mark.slow
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


# ------------------------------------------------ issa_dense, recompute_memory,
# input_pipeline, large_inference
NEW_SUITES = ("issa_dense", "recompute_memory", "input_pipeline",
              "large_inference")


@pytest.fixture(scope="module")
def run_new(tmp_path_factory):
  """Runs the four suites once, on tiny sizes, in one process.

  The model suites share one model build and the train-step trace (same
  crop); depth 26 at width x0.125 keeps building and tracing short.
  """
  out = tmp_path_factory.mktemp("bench_new")
  md = out / "BENCHMARKS.md"
  md.write_text("# Benchmarks\n\nhand-written\n")
  cmd = [
      sys.executable, TOOL, "--suite=" + ",".join(NEW_SUITES),
      f"--output_dir={out}", f"--markdown={md}", "--runs=2", "--warmup=1",
      "--issa_sizes=32x32,16x24", "--issa_channels=32",
      "--issa_key_channels=16", "--issa_partition=4,4",
      "--model_overrides=depth=26,width_multiplier=0.125", "--num_classes=7",
      "--recompute_crop=33x33", "--pipeline_crop=33x33",
      "--pipeline_image_size=40x56", "--pipeline_images=2",
      "--pipeline_batches=4", "--pipeline_warmup_batches=1",
      "--large_size=33x49", "--large_gflops_size=33x33", "--matmul_size=64",
  ]
  result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return out, md


def _group_map_bytes(height, width, p_h, p_w):
  """Softmax-map bytes of ISSA's two passes, by listing each group's members.

  Positions of the padded map; long-range groups share (row % P_h,
  col % P_w), short-range groups share (row // P_h, col // P_w); a group of
  n positions has an n x n float32 map.
  """
  rows = -(-height // p_h) * p_h
  cols = -(-width // p_w) * p_w
  long_groups, short_groups = {}, {}
  for r in range(rows):
    for c in range(cols):
      key = (r % p_h, c % p_w)
      long_groups[key] = long_groups.get(key, 0) + 1
      key = (r // p_h, c // p_w)
      short_groups[key] = short_groups.get(key, 0) + 1
  return 4 * sum(n * n for g in (long_groups, short_groups)
                 for n in g.values())


@pytest.mark.slow
def test_issa_dense_json_and_memory(run_new):
  out, _ = run_new
  data = _load(out, "issa_dense")
  assert data["sizes"] == [[32, 32], [16, 24]]
  assert data["channels"] == 32 and data["key_channels"] == 16
  assert data["partition_factors"] == [4, 4]
  for case in data["cases"]:
    assert "error" not in case, case
    h, w = case["size"]
    assert case["attention_map_bytes"] == {
        "dense": 4 * (h * w)**2, "issa": _group_map_bytes(h, w, 4, 4)}
    secs = case["seconds"]
    assert secs["issa"]["runs"] == 2 and secs["dense"]["median_s"] > 0
    assert case["time_ratio"]["wall_ratio_of_medians"] == pytest.approx(
        secs["issa"]["median_s"] / secs["dense"]["median_s"])
  big = data["cases"][0]
  # At 32x32 the dense layer holds a 4 MiB softmax map (1024 x 1024); ISSA's
  # maps total 320 KiB (16 groups of 64 x 64, 64 of 16 x 16) and its feature
  # maps are 128 KiB each: its peak must be far below the dense one.
  peaks = big["peak_bytes"]
  assert peaks["dense"] >= 4 * 1024 * 1024
  assert peaks["issa"] is not None and peaks["issa"] < 0.5 * peaks["dense"]
  assert big["memory_ratio"] == pytest.approx(peaks["issa"] / peaks["dense"])
  with open(os.path.join(out, "issa_dense.png"), "rb") as f:
    assert f.read(4) == b"\x89PNG"


@pytest.mark.slow
def test_recompute_memory_same_results(run_new):
  out, _ = run_new
  data = _load(out, "recompute_memory")
  assert data["model"] == "axial_deeplab_s" and data["crop"] == [33, 33]
  assert data["model_overrides"] == {"depth": 26, "width_multiplier": 0.125}
  v = data["variants"]
  assert v["recompute_off"]["recompute_grad"] is False
  assert v["recompute_on"]["recompute_grad"] is True
  # Recomputing the attention maps must not change the step's results.
  loss = data["loss"]
  assert np.isfinite(loss["recompute_off"]) and loss["recompute_off"] > 0
  assert abs(loss["recompute_on"] - loss["recompute_off"]) <= 1e-5 * abs(
      loss["recompute_off"])
  grads = data["gradients"]
  assert grads["compared"] == data["trainable_variables"] > 100
  assert grads["gradient_present_in_one_only"] == []
  assert grads["max_relative_difference"] <= 1e-5
  off, on = (v[k]["peak_bytes"] for k in ("recompute_off", "recompute_on"))
  assert off > 0 and on > 0
  assert data["memory_ratio"] == pytest.approx(on / off)
  assert data["time_ratio"]["wall_ratio_of_medians"] == pytest.approx(
      v["recompute_on"]["seconds"]["median_s"] /
      v["recompute_off"]["seconds"]["median_s"])


@pytest.mark.slow
def test_input_pipeline_json(run_new):
  out, _ = run_new
  data = _load(out, "input_pipeline")
  assert data["batch_image_shape"] == [1, 33, 33, 3]
  assert data["records"]["num_images"] == 2
  assert data["records"]["image_size"] == [40, 56]
  assert data["records"]["bytes"] > 2 * 40 * 56 // 10
  assert data["augmentation"]["min_scale"] == 0.5
  assert data["augmentation"]["max_scale"] == 1.5
  p = data["pipeline"]
  assert p["batches"] == 4 and p["batch_seconds"]["runs"] == 4
  assert p["examples_per_s"] == pytest.approx(4 / p["wall_s"])
  # Per-batch waits happen inside the timed span.
  assert sum([p["batch_seconds"]["min_s"]] * 4) <= p["wall_s"]
  step = data["train_step"]
  assert step["runs"] == 2 and step["median_s"] > 0
  assert data["input_to_step_ratio"] == pytest.approx(
      p["seconds_per_example"] / step["median_s"])


@pytest.mark.slow
def test_large_inference_json(run_new):
  out, _ = run_new
  data = _load(out, "large_inference")
  cases = data["cases"]
  assert cases["large"]["size"] == [33, 49]
  assert cases["gflops_input"]["size"] == [33, 33]
  for c in cases.values():
    assert c["latency_s"] > 0
    assert c["peak_bytes"] is None or c["peak_bytes"] >= 0
  assert data["gflops_madds"] > 0
  assert data["gflops"] == pytest.approx(
      2 * data["gflops_madds"] / cases["gflops_input"]["latency_s"] / 1e9)
  assert data["fraction_of_matmul"] == pytest.approx(
      data["gflops"] / data["matmul_gflops"])
  assert data["madds_method"].startswith("graph walk")


@pytest.mark.slow
def test_new_markdown_sections(run_new):
  _, md = run_new
  text = md.read_text()
  assert text.startswith("# Benchmarks\n\nhand-written\n")
  for suite in NEW_SUITES:
    assert text.count(f"<!-- BEGIN GENERATED SECTION: benchmark:{suite} ") == 1
    assert text.count(f"<!-- END GENERATED SECTION: benchmark:{suite} -->") == 1
    assert f"![{suite}.png]({suite}.png)" in text
  assert text.count("- Command: `python tools/benchmark.py --suite="
                    "issa_dense,recompute_memory,input_pipeline,"
                    "large_inference") == 4
  assert text.count("- Date: ") == 4
  assert "Target at 128x256: ISSA peak memory <= 0.10 x dense" in text
  assert "The target size 128x256 was not measured in this run." in text
  assert "| 32x32 |" in text and "| 16x24 |" in text
  assert "Tolerance 1e-05: met." in text
  assert "(target <= 0.6: " in text
  assert "| input pipeline |" in text and "| train step |" in text
  assert "| 33x49 |" in text and "| 33x33 |" in text


def test_attention_map_elements_match_spec():
  # Spec (segnext_issa.md section 3): 512 channels, P = 8x8: a 64x64 map
  # needs 64 MiB dense vs 2 MiB ISSA; 128x256: 4096 MiB vs 72 MiB.
  mib = 2**20
  e = benchmark_suites.attention_map_elements(64, 64, (8, 8))
  assert (4 * e["dense"] / mib, 4 * e["issa"] / mib) == (64, 2)
  e = benchmark_suites.attention_map_elements(128, 256, (8, 8))
  assert (4 * e["dense"] / mib, 4 * e["issa"] / mib) == (4096, 72)
  # Padding: 13x10 with 4x4 cells is padded to 16x12.
  assert 4 * benchmark_suites.attention_map_elements(13, 10, (4, 4))[
      "issa"] == _group_map_bytes(13, 10, 4, 4)


def test_max_relative_difference():
  a = np.array([[1.0, -4.0], [2.0, 0.0]])
  b = np.array([[1.0, -3.0], [2.5, 0.0]])
  assert benchmark_suites.max_relative_difference(a, b) == 0.25  # 1 / 4
  assert benchmark_suites.max_relative_difference(np.zeros(3),
                                                  np.zeros(3)) == 0.0
  assert benchmark_suites.max_relative_difference(
      np.zeros(2), np.array([0.0, 1e-9])) == float("inf")
  with pytest.raises(ValueError, match="shapes differ"):
    benchmark_suites.max_relative_difference(np.zeros(2), np.zeros(3))


def test_new_suites_reject_bad_arguments():
  with pytest.raises(ValueError, match="recompute_grad"):
    benchmark_suites.run_recompute_memory(
        model_overrides={"recompute_grad": True})
  with pytest.raises(ValueError, match="num_classes"):
    benchmark_suites.run_large_inference(model_overrides={"num_classes": 3})
  with pytest.raises(ValueError, match=r"\['bogus'\]"):
    benchmark_suites.zoo_model("axial_deeplab_s", bogus=1)
  with pytest.raises(ValueError, match=r"sizes\[1\]"):
    benchmark_suites.run_issa_dense(sizes=[(8, 8), (8, 0)])
  with pytest.raises(ValueError, match="image_format"):
    benchmark_suites.write_synthetic_records("/nonexistent", 1, (16, 16),
                                             "gif")


def test_new_suite_flags_exit_with_message(tmp_path):
  for flag, message in (("--issa_sizes=64", "--issa_sizes takes HxW"),
                        ("--model_overrides=depth",
                         "--model_overrides takes key=value"),
                        ("--recompute_crop=0x5",
                         "--recompute_crop takes positive sizes")):
    result = subprocess.run(
        [sys.executable, TOOL, "--suite=issa_dense", flag,
         f"--output_dir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
