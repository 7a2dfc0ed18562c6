"""Tests of the scale stress test library against brute-force references."""

from fractions import Fraction
import math
import types

import numpy as np
import pytest
import tensorflow as tf

from axial_deeplab_tf.benchmarks import report
from axial_deeplab_tf.benchmarks import scale_stress

DIVISOR = 256
IGNORE = 255
NUM_CLASSES = 3  # 0, 1 things; 2 stuff.
META = types.SimpleNamespace(num_classes=NUM_CLASSES, thing_class_ids=(0, 1),
                             ignore_label=IGNORE, label_divisor=DIVISOR)


def _nearest_brute_force(label, out_h, out_w):
  """Each output pixel takes the source pixel whose area holds its center."""
  in_h, in_w = label.shape

  def source(i, n_in, n_out):
    center = (Fraction(2 * i + 1, 2)) * Fraction(n_in, n_out)
    for j in range(n_in):
      if j <= center < j + 1:
        return j
    raise AssertionError("no source pixel")

  out = np.empty((out_h, out_w), label.dtype)
  for y in range(out_h):
    for x in range(out_w):
      out[y, x] = label[source(y, in_h, out_h), source(x, in_w, out_w)]
  return out


def _bilinear_brute_force(image, out_h, out_w):
  """Half-pixel-center bilinear sampling with edge clamping, pixel by pixel."""
  in_h, in_w = image.shape[:2]
  out = np.zeros((out_h, out_w, image.shape[2]))
  for y in range(out_h):
    sy = min(max((y + 0.5) * in_h / out_h - 0.5, 0.0), in_h - 1)
    y0 = int(math.floor(sy))
    y1, fy = min(y0 + 1, in_h - 1), sy - y0
    for x in range(out_w):
      sx = min(max((x + 0.5) * in_w / out_w - 0.5, 0.0), in_w - 1)
      x0 = int(math.floor(sx))
      x1, fx = min(x0 + 1, in_w - 1), sx - x0
      out[y, x] = ((1 - fy) * (1 - fx) * image[y0, x0] +
                   (1 - fy) * fx * image[y0, x1] +
                   fy * (1 - fx) * image[y1, x0] + fy * fx * image[y1, x1])
  return out


@pytest.mark.parametrize("in_size,out_size", [
    ((7, 11), (3, 5)), ((7, 11), (20, 13)), ((9, 9), (9, 9)),
    ((5, 12), (8, 7)), ((16, 16), (6, 6))])
def test_nearest_label_resize_is_exact(in_size, out_size):
  rng = np.random.default_rng(sum(in_size) * 31 + sum(out_size))
  # Large panoptic ids, so any blending or float round trip would show.
  label = rng.integers(0, 2**24, in_size).astype(np.int64) * 37 + 11
  got = scale_stress.resize_label_nearest(label, out_size)
  assert got.dtype == label.dtype and got.shape == out_size
  np.testing.assert_array_equal(got, _nearest_brute_force(label, *out_size))
  # The same sampling as TensorFlow's nearest resize (ids below 2**24 are
  # exact in its float path).
  small = rng.integers(0, 1000, in_size).astype(np.int32)
  tf_out = tf.image.resize(small[..., None], out_size,
                           method="nearest").numpy()[..., 0]
  np.testing.assert_array_equal(
      scale_stress.resize_label_nearest(small, out_size), tf_out)


def test_resize_label_rejects_float_and_wrong_rank():
  with pytest.raises(ValueError, match="integer"):
    scale_stress.resize_label_nearest(np.zeros((4, 4), np.float32), (2, 2))
  with pytest.raises(ValueError, match="integer"):
    scale_stress.resize_label_nearest(np.zeros((4, 4, 1), np.int32), (2, 2))


def test_target_size_and_resolution_parsing():
  assert scale_stress.target_size(100, 50, 64) == (64, 32)
  assert scale_stress.target_size(50, 100, 64) == (32, 64)
  # 64 * 30 / 45 = 42.67 -> 43; 3 * 2 / 4 = 1.5 rounds half up to 2.
  assert scale_stress.target_size(30, 45, 64) == (43, 64)
  assert scale_stress.target_size(4, 2, 3) == (3, 2)
  assert scale_stress.target_size(40, 48, "20x30") == (20, 30)
  assert scale_stress.parse_resolutions("48, 64,96x128") == [48, 64,
                                                             (96, 128)]
  for bad in ("0", "-3", "64x", "axb", "1x2x3", ""):
    with pytest.raises(ValueError):
      scale_stress.parse_resolutions(bad)
  with pytest.raises(ValueError, match="duplicates"):
    scale_stress.parse_resolutions("64,64")


def _label_image(seed, height, width):
  """A panoptic label with 2-3 thing boxes on stuff and a void strip."""
  rng = np.random.default_rng(seed)
  label = np.full((height, width), 2 * DIVISOR, np.int64)
  for instance in range(1, 4):
    cls = int(rng.integers(0, 2))
    y, x = int(rng.integers(0, height - 4)), int(rng.integers(0, width - 4))
    h, w = int(rng.integers(3, height // 2)), int(rng.integers(3, width // 2))
    label[y:y + h, x:x + w] = cls * DIVISOR + instance
  label[:, :1] = IGNORE * DIVISOR
  return label


def _encode(label):
  """An image that spells the label: R = 60 * class (250 void), G = 50 * id."""
  cls, inst = label // DIVISOR, label % DIVISOR
  image = np.zeros(label.shape + (3,), np.float64)
  image[..., 0] = np.where(cls == IGNORE, 250, 60 * cls)
  image[..., 1] = 50 * inst
  return image.astype(np.uint8)


class _SpyModel:
  """Reads the label back from the (resized) image; records what it saw."""

  def __init__(self):
    self.inputs, self.outputs = [], []

  def __call__(self, images):
    images = np.asarray(images)
    cls = np.clip(np.round(images[..., 0] / 60.0), 0, 2).astype(np.int64)
    inst = np.round(images[..., 1] / 50.0).astype(np.int64)
    pred = np.where(cls == 2, 2 * DIVISOR, cls * DIVISOR + inst)
    pred = np.where(images[..., 0] > 200, IGNORE * DIVISOR, pred)
    self.inputs.extend(images)
    self.outputs.extend(pred)
    return pred


def _brute_force_pq(pairs):
  """PQ, PQ th, PQ st (percent) by explicit segment pairs; no crowd."""
  tp = np.zeros(NUM_CLASSES)
  fp = np.zeros(NUM_CLASSES)
  fn = np.zeros(NUM_CLASSES)
  iou_sum = np.zeros(NUM_CLASSES)
  for gt, pred in pairs:
    void = gt // DIVISOR == IGNORE
    gt_ids = [i for i in np.unique(gt) if i // DIVISOR != IGNORE]
    pred_ids = [i for i in np.unique(pred) if i // DIVISOR != IGNORE]
    matched_pred = set()
    for g in gt_ids:
      found = False
      for p in pred_ids:
        if g // DIVISOR != p // DIVISOR:
          continue
        inter = np.sum((gt == g) & (pred == p))
        union = np.sum(gt == g) + np.sum((pred == p) & ~void) - inter
        if inter / union > 0.5:
          tp[g // DIVISOR] += 1
          iou_sum[g // DIVISOR] += inter / union
          matched_pred.add(p)
          found = True
      if not found:
        fn[g // DIVISOR] += 1
    for p in pred_ids:
      if p in matched_pred:
        continue
      if np.sum((pred == p) & void) / np.sum(pred == p) <= 0.5:
        fp[p // DIVISOR] += 1

  def mean_pq(classes):
    values = [iou_sum[c] / (tp[c] + fp[c] / 2 + fn[c] / 2) for c in classes
              if tp[c] + fp[c] + fn[c] > 0]
    return 100 * float(np.mean(values)) if values else float("nan")

  return {"pq": mean_pq([0, 1, 2]), "pq_th": mean_pq([0, 1]),
          "pq_st": mean_pq([2])}


def test_pq_per_resolution_matches_brute_force():
  labels = [_label_image(0, 12, 16), _label_image(1, 12, 16),
            _label_image(2, 16, 10)]
  images = [_encode(l) for l in labels]
  resolutions = [8, 16, 25, (9, 21)]
  spy = _SpyModel()
  results = scale_stress.evaluate_resolutions(
      spy, images, labels, resolutions, META, batch_size=2, antialias=False)
  assert [r["resolution"] for r in results] == ["8", "16", "25", "9x21"]
  position = 0
  pq_values = []
  for resolution, result in zip(resolutions, results):
    pairs = []
    for image, label in zip(images, labels):
      if isinstance(resolution, tuple):
        size = resolution
      else:
        scale = resolution / max(label.shape)
        size = tuple(int(math.floor(s * scale + 0.5)) for s in label.shape)
      seen = spy.inputs[position]
      assert seen.shape == size + (3,)
      np.testing.assert_allclose(
          seen, _bilinear_brute_force(image.astype(np.float64), *size),
          atol=1e-3)
      pairs.append((_nearest_brute_force(label, *size),
                    spy.outputs[position]))
      position += 1
    expected = _brute_force_pq(pairs)
    for key in ("pq", "pq_th", "pq_st"):
      assert result[key] == pytest.approx(expected[key], abs=1e-9), (
          resolution, key)
    assert result["num_images"] == 3
    pq_values.append(result["pq"])
  assert position == len(spy.inputs)
  # The spy makes mistakes at blended boundaries: the numbers are not all
  # perfect, so the comparison above is not vacuous.
  assert min(pq_values) < 100.0 and max(pq_values) > 0.0
  assert len(set(np.round(pq_values, 6))) > 1


def test_evaluate_checks_prediction_shape():
  labels = [_label_image(0, 12, 16)]
  with pytest.raises(ValueError, match="predict returned shape"):
    scale_stress.evaluate_resolutions(
        lambda x: np.zeros((1, 3, 3), np.int64), [_encode(labels[0])], labels,
        [8], META)


def test_relative_change():
  def results(values):
    return [{"resolution": str(i), "value": i, "pq": v[0], "pq_th": v[1],
             "pq_st": v[2]} for i, v in enumerate(values)]
  a = results([(30.0, 10.0, float("nan")), (20.0, 0.0, 5.0)])
  b = results([(20.0, 0.0, 10.0), (40.0, 8.0, 10.0)])
  change = scale_stress.relative_change(a, b)
  assert change[0]["pq"] == pytest.approx(50.0)
  assert math.isnan(change[0]["pq_th"]) and math.isnan(change[0]["pq_st"])
  assert change[1]["pq"] == pytest.approx(-50.0)
  assert change[1]["pq_th"] == pytest.approx(-100.0)
  assert change[1]["pq_st"] == pytest.approx(-50.0)
  with pytest.raises(ValueError, match="same resolutions"):
    scale_stress.relative_change(a, b[:1])


def test_update_markdown_section_replaces_only_its_section(tmp_path):
  # The one BENCHMARKS.md writer (benchmarks/report.py): a hand-made
  # "## Scale stress test" section is replaced by the generated one (inside
  # markers), up to the next heading of its level outside code fences.
  path = str(tmp_path / "BENCHMARKS.md")
  original = ("# Benchmarks\n\nIntro.\n\n## Layer speed\nfast\n\n"
              "## Scale stress test\nold table\n### detail\nold detail\n"
              "```\n## not a heading inside code\n```\n\n"
              "## Model speed\nslow\n")
  with open(path, "w") as f:
    f.write(original)
  heading = "## Scale stress test"
  section_id = scale_stress.section_id(heading)
  assert section_id == "scale-stress:scale-stress-test"
  begin = ("<!-- BEGIN GENERATED SECTION: scale-stress:scale-stress-test "
           "(tools/benchmark.py rewrites it) -->\n")
  end = "<!-- END GENERATED SECTION: scale-stress:scale-stress-test -->\n"
  report.update_markdown_section(path, section_id, heading, "new table\n")
  with open(path) as f:
    text = f.read()
  assert text == ("# Benchmarks\n\nIntro.\n\n## Layer speed\nfast\n\n" +
                  begin + "## Scale stress test\n\nnew table\n" + end +
                  "\n## Model speed\nslow\n")
  # Idempotent; a second write replaces only the text between the markers.
  report.update_markdown_section(path, section_id, heading, "new table\n")
  with open(path) as f:
    assert f.read() == text
  report.update_markdown_section(path, section_id, heading, "newer\n")
  with open(path) as f:
    assert f.read() == text.replace("new table", "newer")
  # Missing section: appended; missing file: created.
  other = str(tmp_path / "other.md")
  with open(other, "w") as f:
    f.write("# Benchmarks\n\n## Layer speed\nfast\n")
  report.update_markdown_section(other, section_id, heading, "new table\n")
  with open(other) as f:
    assert f.read() == ("# Benchmarks\n\n## Layer speed\nfast\n\n" + begin +
                        "## Scale stress test\n\nnew table\n" + end)
  new = str(tmp_path / "new.md")
  report.update_markdown_section(new, section_id, heading, "new table\n")
  with open(new) as f:
    assert f.read() == ("# Benchmarks\n\n" + begin +
                        "## Scale stress test\n\nnew table\n" + end)
  with pytest.raises(ValueError, match="Markdown heading"):
    scale_stress.section_id("Scale stress test")


def test_table_and_summary_state_the_numbers():
  def entry(name, values):
    return {"name": name, "results": [
        {"resolution": str(r), "value": r, "pq": v, "pq_th": v / 2,
         "pq_st": float("nan")} for r, v in zip((64, 128, 256), values)]}
  a = entry("A", [30.0, 40.0, 24.0])
  b = entry("B", [20.0, 40.0, 30.0])
  report = {"resolutions": ["64", "128", "256"], "train_resolution": 128,
            "models": [a, b],
            "relative_change": scale_stress.relative_change(a["results"],
                                                            b["results"])}
  table = scale_stress.markdown_table(report).splitlines()
  assert len(table) == 5
  assert table[2].split(" | ") == ["| 64", "0.50", "30.0", "15.0", "n/a",
                                   "20.0", "10.0", "n/a", "+50.0", "+50.0",
                                   "n/a |"]
  summary = scale_stress.summarize(report)
  assert summary.startswith("A has the higher PQ at 1 of 3 test resolutions.")
  assert "below the training resolution (64): +50.0%" in summary
  assert "at the training resolution (128): +0.0%" in summary
  assert "above the training resolution (256): -20.0%" in summary
  assert "small numbers" not in summary
  b["results"][2]["pq_th"] = 4.0
  assert scale_stress.summarize(report, small_baseline=10.0).endswith(
      "B scores below 10 PQ for PQ th at 256: relative changes there are "
      "ratios of small numbers.")
