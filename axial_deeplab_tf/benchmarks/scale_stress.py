"""Scale stress test (Axial-DeepLab paper, figure 4).

A panoptic model trained at one input size is evaluated on the whole
validation images resized to other sizes: the image bilinearly, its
panoptic label map with nearest-neighbour sampling, so PQ is measured at the
test resolution against exactly the labels of the resized pixels. For each
resolution it reports PQ, PQ (things) and PQ (stuff) and, given a second
model (the convolutional baseline), the relative change of the first against
it, `100 * (PQ_a - PQ_b) / PQ_b` percent.

A resolution is either an int S (the longer image side becomes S pixels, the
aspect ratio is kept, the shorter side rounded) or an (height, width) pair.

The report is a plain dict (JSON-serialisable after `to_json_compatible`);
`plot_report` draws it, `markdown_section` renders it as a BENCHMARKS.md
section, which `benchmarks.report.update_markdown_section` writes.
"""

import datetime
import math
import os
import re
from typing import (Any, Callable, Dict, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np
import tensorflow as tf

from axial_deeplab_tf.attention_math import check_positive_int
from axial_deeplab_tf.benchmarks import benchmark
from axial_deeplab_tf.evaluation import panoptic_quality
from axial_deeplab_tf.serving import model_loading

Resolution = Union[int, Tuple[int, int]]
PQ_KEYS = ("pq", "pq_th", "pq_st")
_RESULT_KEYS = ("pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st",
                "rq_st")
_LABELS = {"pq": "PQ", "pq_th": "PQ th", "pq_st": "PQ st"}


def parse_resolution(value: Union[str, int, Sequence[int]]) -> Resolution:
  """Parses "S", "HxW", an int or an (h, w) pair into a Resolution.

  Raises:
    ValueError: not a positive int or pair of positive ints.
  """
  if isinstance(value, str):
    text = value.strip().lower()
    parts = text.split("x")
    if not all(re.fullmatch(r"[0-9]+", p) for p in parts) or len(parts) > 2:
      raise ValueError(f"resolution must be 'S' or 'HxW' with positive "
                       f"integers, got {value!r}.")
    value = int(parts[0]) if len(parts) == 1 else (int(parts[0]),
                                                   int(parts[1]))
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    if value <= 0:
      raise ValueError(f"resolution must be positive, got {value!r}.")
    return int(value)
  if (isinstance(value, (tuple, list)) and len(value) == 2 and all(
      isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
      for v in value)):
    return (int(value[0]), int(value[1]))
  raise ValueError(f"resolution must be a positive int or a (height, width) "
                   f"pair of positive ints, got {value!r}.")


def parse_resolutions(text: str) -> List[Resolution]:
  """Parses a comma-separated list such as "64,96,128,192x256"."""
  items = [t for t in text.split(",") if t.strip()]
  if not items:
    raise ValueError(f"resolutions must list at least one size, got "
                     f"{text!r}.")
  resolutions = [parse_resolution(t) for t in items]
  if len(set(resolutions)) != len(resolutions):
    raise ValueError(f"resolutions has duplicates: {text!r}.")
  return resolutions


def resolution_name(resolution: Resolution) -> str:
  """"S" or "HxW"."""
  if isinstance(resolution, tuple):
    return f"{resolution[0]}x{resolution[1]}"
  return str(resolution)


def resolution_value(resolution: Resolution) -> int:
  """The longer side of a resolution (the x coordinate of the plots)."""
  return max(resolution) if isinstance(resolution, tuple) else resolution


def target_size(height: int, width: int,
                resolution: Resolution) -> Tuple[int, int]:
  """The (height, width) an image of (height, width) is resized to.

  For an int S the longer side becomes S and the shorter side
  round(S * shorter / longer) (at least 1); a pair is taken as it is.
  """
  if height <= 0 or width <= 0:
    raise ValueError(f"image size must be positive, got {height}x{width}.")
  resolution = parse_resolution(resolution)
  if isinstance(resolution, tuple):
    return resolution
  longer = max(height, width)
  # Integer rounding half up, so the result does not depend on float error.
  short = max(1, (2 * resolution * min(height, width) + longer) //
              (2 * longer))
  return (resolution, short) if height >= width else (short, resolution)


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source index of each output index under half-pixel nearest sampling.

  Output pixel i covers [i, i + 1) * in_size / out_size of the source; it
  takes the source pixel containing the center of that interval:
  floor((2 i + 1) * in_size / (2 out_size)), computed in integers. This is
  what tf.image.resize(method="nearest") does (half-pixel centers), without
  its float rounding.
  """
  if in_size <= 0 or out_size <= 0:
    raise ValueError(f"sizes must be positive, got in_size={in_size}, "
                     f"out_size={out_size}.")
  i = np.arange(out_size, dtype=np.int64)
  return np.minimum((2 * i + 1) * in_size // (2 * out_size), in_size - 1)


def resize_label_nearest(label: np.ndarray,
                         size: Tuple[int, int]) -> np.ndarray:
  """Resizes an integer label map [H, W] with nearest-neighbour sampling.

  Every output value is a value of the input (ids are never blended).

  Args:
    label: integer [height, width] array.
    size: (out_height, out_width).

  Returns:
    [out_height, out_width] array of label's dtype.
  """
  label = np.asarray(label)
  if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
    raise ValueError(f"label must be an integer [height, width] array, got "
                     f"dtype {label.dtype} shape {label.shape}.")
  rows = nearest_indices(label.shape[0], int(size[0]))
  cols = nearest_indices(label.shape[1], int(size[1]))
  return label[rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, size: Tuple[int, int],
                 antialias: bool = True) -> np.ndarray:
  """Bilinear resize of a [H, W, 3] image to float32 [h, w, 3] in [0, 255].

  antialias=True low-pass filters when shrinking (a camera at a lower
  resolution), no effect when enlarging.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image must be [height, width, 3], got shape "
                     f"{image.shape}.")
  if tuple(image.shape[:2]) == tuple(size):
    return image.astype(np.float32)
  out = tf.image.resize(tf.convert_to_tensor(image, tf.float32),
                        [int(size[0]), int(size[1])], method="bilinear",
                        antialias=antialias)
  return np.clip(out.numpy(), 0.0, 255.0)


def read_panoptic_examples(file_pattern: str,
                           max_images: Optional[int] = None
                          ) -> Tuple[List[np.ndarray], List[np.ndarray]]:
  """Reads whole images and panoptic labels from the project's TFRecords.

  Args:
    file_pattern: glob of panoptic TFRecord shards.
    max_images: read at most this many (None: all).

  Returns:
    (images, labels): lists of uint8 [H, W, 3] and int32 [H, W] arrays.

  Raises:
    FileNotFoundError: no shard matches.
  """
  # Imported here: the data package is needed only to read records.
  from axial_deeplab_tf.data import input_pipeline  # pylint: disable=g-import-not-at-top
  files = sorted(tf.io.gfile.glob(file_pattern))
  if not files:
    raise FileNotFoundError(f"No TFRecord shard matches {file_pattern!r}.")
  if max_images is not None and max_images <= 0:
    raise ValueError(f"max_images must be positive, got {max_images!r}.")
  decoder = input_pipeline.Decoder("panoptic")
  dataset = tf.data.TFRecordDataset(files).map(decoder.decode)
  if max_images is not None:
    dataset = dataset.take(max_images)
  images, labels = [], []
  for example in dataset:
    images.append(example["image"].numpy())
    labels.append(example["panoptic"].numpy().astype(np.int32))
  if not images:
    raise ValueError(f"The shards of {file_pattern!r} hold no example.")
  return images, labels


def panoptic_predictor(model, post_processor
                      ) -> Callable[[np.ndarray], np.ndarray]:
  """Wraps a Panoptic-DeepLab model and post-processor as images -> ids.

  Returns:
    predict(images float32 [batch, h, w, 3] in [0, 255]) -> int32
    [batch, h, w] panoptic ids, traced once for any batch and size.
  """

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3],
                                              tf.float32)])
  def predict(images):
    outputs = model(images, training=False)
    return post_processor(outputs)["panoptic_pred"]

  return lambda images: predict(tf.convert_to_tensor(images,
                                                     tf.float32)).numpy()


def _pq_metric(metadata):
  return panoptic_quality.PanopticQuality(
      num_classes=metadata.num_classes,
      thing_classes=list(metadata.thing_class_ids),
      ignored_label=metadata.ignore_label,
      label_divisor=metadata.label_divisor)


def _percent(value: float) -> float:
  return float("nan") if value is None or math.isnan(value) else 100.0 * value


def evaluate_resolutions(predict: Callable[[np.ndarray], np.ndarray],
                         images: Sequence[np.ndarray],
                         labels: Sequence[np.ndarray],
                         resolutions: Sequence[Resolution],
                         metadata,
                         batch_size: int = 8,
                         antialias: bool = True) -> List[Dict[str, Any]]:
  """PQ / SQ / RQ (overall, things, stuff) of `predict` at each resolution.

  Args:
    predict: float32 [batch, h, w, 3] images -> int [batch, h, w] panoptic
      ids.
    images: uint8 [H, W, 3] images.
    labels: their int [H, W] panoptic labels (the dataset encoding).
    resolutions: Resolutions to test.
    metadata: DatasetMetadata-like (num_classes, thing_class_ids,
      ignore_label, label_divisor).
    batch_size: images per predict call (images of one size only).
    antialias: low-pass filter images when shrinking them.

  Returns:
    One dict per resolution: "resolution" (name), "value" (longer side),
    "sizes" (distinct (h, w) tested), "num_images", and the metrics in
    percent (NaN when a subset has no class).
  """
  if len(images) != len(labels) or not images:
    raise ValueError(f"images and labels must be non-empty and of equal "
                     f"length, got {len(images)} and {len(labels)}.")
  check_positive_int("batch_size", batch_size)
  for image, label in zip(images, labels):
    if tuple(np.shape(image)[:2]) != tuple(np.shape(label)):
      raise ValueError(f"image {np.shape(image)} and label {np.shape(label)} "
                       f"differ in size.")
  results = []
  for resolution in resolutions:
    resolution = parse_resolution(resolution)
    metric = _pq_metric(metadata)
    sizes = []
    pending_images, pending_labels = [], []

    def flush():
      if not pending_images:
        return
      prediction = np.asarray(predict(np.stack(pending_images)))
      expected = (len(pending_images),) + pending_labels[0].shape
      if prediction.shape != expected:
        raise ValueError(f"predict returned shape {prediction.shape}, "
                         f"expected {expected}.")
      metric.update(np.stack(pending_labels), prediction.astype(np.int64))
      pending_images.clear()
      pending_labels.clear()

    for image, label in zip(images, labels):
      size = target_size(label.shape[0], label.shape[1], resolution)
      if size not in sizes:
        sizes.append(size)
      if pending_labels and pending_labels[0].shape != size:
        flush()
      pending_images.append(resize_image(image, size, antialias))
      pending_labels.append(resize_label_nearest(label, size))
      if len(pending_images) == batch_size:
        flush()
    flush()
    pq = metric.result()
    entry = {"resolution": resolution_name(resolution),
             "value": resolution_value(resolution),
             "sizes": [list(s) for s in sizes], "num_images": len(images)}
    entry.update({k: _percent(pq[k]) for k in _RESULT_KEYS})
    results.append(entry)
  return results


def relative_change(results: Sequence[Dict[str, Any]],
                    baseline: Sequence[Dict[str, Any]]
                   ) -> List[Dict[str, Any]]:
  """100 * (a - b) / b per resolution for PQ, PQ th and PQ st.

  NaN where the baseline value is 0 or either value is NaN.
  """
  if [r["resolution"] for r in results] != [r["resolution"]
                                            for r in baseline]:
    raise ValueError("results and baseline must cover the same resolutions "
                     "in the same order.")
  changes = []
  for a, b in zip(results, baseline):
    entry = {"resolution": a["resolution"], "value": a["value"]}
    for key in PQ_KEYS:
      va, vb = a[key], b[key]
      if math.isnan(va) or math.isnan(vb) or vb == 0:
        entry[key] = float("nan")
      else:
        entry[key] = 100.0 * (va - vb) / vb
    changes.append(entry)
  return changes


def load_trained_model(gin_files: Sequence[str],
                       gin_params: Sequence[str] = (),
                       model_dir: Optional[str] = None,
                       checkpoint: Optional[str] = None,
                       name: Optional[str] = None
                      ) -> model_loading.LoadedModel:
  """Builds an experiment's model and restores its trained weights.

  Args:
    gin_files: the experiment's gin files (as given to tools/train.py).
    gin_params: extra bindings (data paths etc.).
    model_dir: the training model_dir; its latest checkpoint is restored.
    checkpoint: a checkpoint path (prefix) instead of model_dir.
    name: label in reports; default the zoo model name.

  Returns:
    A model_loading.LoadedModel (`experiment` holds the parsed config).

  Raises:
    ValueError: neither or both of model_dir and checkpoint.
    FileNotFoundError: no checkpoint found.
  """
  if (model_dir is None) == (checkpoint is None):
    raise ValueError(f"Give exactly one of model_dir and checkpoint; got "
                     f"model_dir={model_dir!r}, checkpoint={checkpoint!r}.")
  if model_dir is not None:
    checkpoint = tf.train.latest_checkpoint(model_dir)
    if checkpoint is None:
      raise FileNotFoundError(f"model_dir {model_dir!r} holds no "
                              f"checkpoint.")
  # Optimizer slots and the step counter in the checkpoint are left unread.
  return model_loading.load_model(gin_files=list(gin_files),
                                  gin_params=list(gin_params),
                                  checkpoint_path=checkpoint, label=name)


def check_same_labels(a, b) -> None:
  """Raises ValueError unless two metadata share the label encoding."""
  for field in ("num_classes", "thing_class_ids", "ignore_label",
                "label_divisor"):
    va, vb = getattr(a, field), getattr(b, field)
    if (list(va) if isinstance(va, (list, tuple)) else va) != (
        list(vb) if isinstance(vb, (list, tuple)) else vb):
      raise ValueError(f"The two models' data differ in {field}: {va!r} vs "
                       f"{vb!r}; they must be trained on the same labels.")


def run_scale_stress_test(model: model_loading.LoadedModel,
                          data_pattern: str,
                          resolutions: Sequence[Resolution],
                          baseline: Optional[model_loading.LoadedModel] = None,
                          max_images: Optional[int] = None,
                          batch_size: int = 8,
                          antialias: bool = True,
                          train_resolution: Optional[int] = None
                         ) -> Dict[str, Any]:
  """Evaluates one or two trained models at each resolution.

  Args:
    model: the model under test (model A).
    data_pattern: glob of the evaluation TFRecords.
    resolutions: Resolutions to test.
    baseline: the model it is compared with (model B), or None.
    max_images: evaluate on at most this many images.
    batch_size: images per forward pass.
    antialias: low-pass filter images when shrinking.
    train_resolution: the training input size (longer side) for the report;
      default the larger side of model A's training crop.

  Returns:
    The report dict: "resolutions", "train_resolution", "data_pattern",
    "num_images", "models" (list of {"name", "checkpoint", "gin_files",
    "num_params", "results"}), "relative_change" (A vs B, when a baseline is
    given), "date", "machine".
  """
  resolutions = [parse_resolution(r) for r in resolutions]
  metadata = model.metadata
  if baseline is not None:
    check_same_labels(model.metadata, baseline.metadata)
  images, labels = read_panoptic_examples(data_pattern, max_images)
  entries = []
  for loaded in [model] + ([baseline] if baseline is not None else []):
    predict = panoptic_predictor(loaded.model, loaded.post_processor)
    results = evaluate_resolutions(predict, images, labels, resolutions,
                                   metadata, batch_size, antialias)
    entries.append({"name": loaded.name, "checkpoint": loaded.checkpoint,
                    "gin_files": loaded.gin_files,
                    "num_params": loaded.num_params,
                    "train_crop_size": loaded.train_crop_size,
                    "results": results})
  report = {
      "resolutions": [resolution_name(r) for r in resolutions],
      "train_resolution": (train_resolution if train_resolution is not None
                           else max(model.train_crop_size)),
      "data_pattern": data_pattern,
      "num_images": len(images),
      "antialias": antialias,
      "models": entries,
      "date": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M UTC"),
      "machine": machine_description(),
  }
  if baseline is not None:
    report["relative_change"] = relative_change(entries[0]["results"],
                                                entries[1]["results"])
  return report


def machine_description() -> str:
  """CPU model and core count (and visible GPUs) of this machine."""
  cpu = benchmark.cpu_model()
  gpus = tf.config.list_physical_devices("GPU")
  text = f"{cpu}, {os.cpu_count()} cores"
  return text + (f", {len(gpus)} GPU(s)" if gpus else ", no GPU")


def to_json_compatible(value: Any) -> Any:
  """Replaces NaN/inf by None and numpy scalars by Python numbers."""
  if isinstance(value, dict):
    return {k: to_json_compatible(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json_compatible(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return None if not math.isfinite(float(value)) else float(value)
  return value


def plot_report(report: Dict[str, Any], path: str) -> None:
  """Draws PQ per resolution (and the relative change) to a PNG file."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  has_change = "relative_change" in report
  fig, axes = plt.subplots(1, 2 if has_change else 1,
                           figsize=(12 if has_change else 6.5, 4.5),
                           squeeze=False)
  styles = {"pq": "-", "pq_th": "--", "pq_st": ":"}
  colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
  ax = axes[0][0]
  for color, entry in zip(colors, report["models"]):
    xs = [r["value"] for r in entry["results"]]
    for key, style in styles.items():
      ys = [r[key] if r[key] is not None else float("nan")
            for r in entry["results"]]
      ax.plot(xs, ys, style, marker="o", color=color,
              label=f"{entry['name']} {_LABELS[key]}")
  ax.set_xlabel("test resolution (longer side, px)")
  ax.set_ylabel("PQ (%)")
  ax.set_title("Panoptic quality per test resolution")
  train = report.get("train_resolution")
  if train:
    ax.axvline(train, color="grey", lw=0.8)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  if has_change:
    ax = axes[0][1]
    changes = report["relative_change"]
    xs = np.arange(len(changes))
    width = 0.27
    for i, (key, color) in enumerate(zip(PQ_KEYS, colors)):
      ys = [c[key] if c[key] is not None else float("nan") for c in changes]
      ax.bar(xs + (i - 1) * width, ys, width, color=color,
             label=_LABELS[key])
    ax.axhline(0.0, color="black", lw=0.8)
    # Ratios over a small baseline PQ can be hundreds of percent: a
    # symmetric log scale keeps the small changes readable too.
    ax.set_yscale("symlog", linthresh=10.0)
    ax.set_xticks(xs)
    ax.set_xticklabels([c["resolution"] for c in changes])
    ax.set_xlabel("test resolution (px)" + (
        f"; trained at {train}" if train else ""))
    ax.set_ylabel("relative change (%)")
    names = [m["name"] for m in report["models"]]
    ax.set_title(f"{names[0]} vs {names[1]}: 100 (A - B) / B")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _fmt(value: Optional[float], signed: bool = False) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  return f"{value:+.1f}" if signed else f"{value:.1f}"


def markdown_table(report: Dict[str, Any]) -> str:
  """PQ / PQ th / PQ st per resolution (and relative change) as Markdown."""
  models = report["models"]
  train = report.get("train_resolution")
  header = ["resolution"] + (["x train"] if train else [])
  for m in models:
    header += [f"{m['name']} {_LABELS[k]}" for k in PQ_KEYS]
  if "relative_change" in report:
    header += [f"rel. {_LABELS[k]} (%)" for k in PQ_KEYS]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * len(header)) + "|"]
  for i, name in enumerate(report["resolutions"]):
    row = [name]
    if train:
      row.append(f"{models[0]['results'][i]['value'] / train:.2f}")
    for m in models:
      row += [_fmt(m["results"][i][k]) for k in PQ_KEYS]
    if "relative_change" in report:
      row += [_fmt(report["relative_change"][i][k], signed=True)
              for k in PQ_KEYS]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def summarize(report: Dict[str, Any], small_baseline: float = 10.0) -> str:
  """Sentences that state what the numbers show (computed, not written).

  Args:
    report: a run_scale_stress_test report.
    small_baseline: baseline PQ values below this are pointed out, since
      relative changes over them are large and unstable.

  Returns:
    The sentences; "" without a baseline model.
  """
  if "relative_change" not in report:
    return ""
  names = [m["name"] for m in report["models"]]
  changes = report["relative_change"]
  train = report.get("train_resolution")
  lines = []
  for label, subset in (("below", [c for c in changes if train and
                                   c["value"] < train]),
                        ("at", [c for c in changes if train and
                                c["value"] == train]),
                        ("above", [c for c in changes if train and
                                   c["value"] > train])):
    values = [c["pq"] for c in subset if c["pq"] is not None and
              not math.isnan(c["pq"])]
    names_in = ", ".join(c["resolution"] for c in subset)
    if len(values) == 1:
      lines.append(f"{label} the training resolution ({names_in}): "
                   f"{values[0]:+.1f}%")
    elif values:
      lines.append(
          f"{label} the training resolution ({names_in}): mean "
          f"{np.mean(values):+.1f}% (min {min(values):+.1f}%, max "
          f"{max(values):+.1f}%)")
  wins = sum(1 for a, b in zip(report["models"][0]["results"],
                               report["models"][1]["results"])
             if a["pq"] is not None and b["pq"] is not None and
             not math.isnan(a["pq"]) and not math.isnan(b["pq"]) and
             a["pq"] > b["pq"])
  text = (f"{names[0]} has the higher PQ at {wins} of {len(changes)} test "
          f"resolutions.")
  if lines:
    text += (f" Relative PQ change of {names[0]} against {names[1]}, " +
             "; ".join(lines) + ".")
  small = []
  for key in PQ_KEYS:
    low = [r["resolution"] for r in report["models"][1]["results"]
           if r[key] is not None and not math.isnan(r[key]) and
           r[key] < small_baseline]
    if low:
      small.append(f"{_LABELS[key]} at {', '.join(low)}")
  if small:
    text += (f" {names[1]} scores below {small_baseline:g} PQ for "
             f"{'; '.join(small)}: relative changes there are ratios of "
             f"small numbers.")
  return text


def markdown_section(report: Dict[str, Any], heading: str = (
    "## Scale stress test"), plot_path: Optional[str] = None,
                     notes: str = "", command: str = "") -> str:
  """The whole BENCHMARKS.md section: setup, table, plot link, summary."""
  models = report["models"]
  parts = [heading, ""]
  if notes.strip():
    parts += [notes.strip(), ""]
  parts.append(f"Machine: {report['machine']}. Date: {report['date']}.")
  if command:
    parts.append(f"Command: `{command}`.")
  parts.append("")
  for m in models:
    parts.append(f"- {m['name']}: {m['num_params']:,} parameters, trained "
                 f"on {m['train_crop_size'][0]}x{m['train_crop_size'][1]} "
                 f"crops (`{' '.join(m['gin_files'])}`).")
  if len(models) == 2:
    a, b = models[0]["num_params"], models[1]["num_params"]
    parts.append(f"- Parameter ratio {models[0]['name']} / "
                 f"{models[1]['name']}: {a / b:.3f}.")
  parts.append(f"- Evaluated on {report['num_images']} validation images "
               f"(`{report['data_pattern']}`), each resized whole to the "
               f"test resolution (longer side; image bilinear"
               f"{' with antialiasing' if report.get('antialias') else ''}, "
               f"labels nearest). PQ in %.")
  parts += ["", markdown_table(report), ""]
  summary = summarize(report)
  if summary:
    parts += [summary, ""]
  if plot_path:
    parts += [f"![scale stress test]({plot_path})", ""]
  return "\n".join(parts)


def section_id(heading: str) -> str:
  """Marker id of the BENCHMARKS.md section headed `heading`."""
  if not re.match(r"#+\s", heading):
    raise ValueError(f"heading must be a Markdown heading, got {heading!r}.")
  slug = re.sub(r"[^a-z0-9]+", "-", heading.lstrip("#").lower()).strip("-")
  return f"scale-stress:{slug or 'section'}"
