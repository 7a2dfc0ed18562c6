"""Parallel, atomic, sharded TFRecord writing with a progress bar and summary.

Worker processes (spawned, so they never inherit TensorFlow state) read and
check the inputs and return plain feature dicts; the parent turns them into
tf.train.Example records and writes the shards. Each shard is written to a
temporary file in the output directory and renamed into place only after
every record was written, so a crash, Ctrl-C or --strict stop never leaves a
half-written shard behind.
"""

import dataclasses
import functools
import glob
import json
import multiprocessing
import os
import sys
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data import tfrecord_schema
from axial_deeplab_tf.data.converters import common

# A worker's result: (features, notes) for a good example.
ProcessFn = Callable[[Any], Tuple[Dict[str, Any], List[Tuple[str, str]]]]


class StrictModeError(RuntimeError):
  """Raised under strict=True at the first bad input; nothing was written."""

  def __init__(self, bad: common.BadExample):
    super().__init__(
        f"strict mode: stopped at bad input {bad.path}: {bad.kind}: "
        f"{bad.detail}. No shard was written.")
    self.bad = bad


@dataclasses.dataclass
class ConversionSummary:
  """What a conversion wrote and what it skipped or converted, and why."""
  dataset: str
  split: str
  output_dir: str
  num_inputs: int
  num_records: int
  shard_paths: List[str]
  skipped: List[Tuple[str, str, str]]  # (path, kind, detail)
  converted: List[Tuple[str, str]]  # (path, note)
  elapsed_seconds: float

  def to_dict(self) -> Dict[str, Any]:
    return {
        "dataset": self.dataset,
        "split": self.split,
        "output_dir": self.output_dir,
        "num_inputs": self.num_inputs,
        "num_records": self.num_records,
        "shards": [os.path.basename(p) for p in self.shard_paths],
        "skipped": [{"path": p, "kind": k, "detail": d}
                    for p, k, d in self.skipped],
        "converted": [{"path": p, "note": n} for p, n in self.converted],
        "elapsed_seconds": round(self.elapsed_seconds, 3),
    }

  def format(self, max_listed: int = 50) -> str:
    """A human-readable report: counts, then every skipped/converted file."""
    lines = [
        f"{self.dataset} [{self.split}]: wrote {self.num_records} of "
        f"{self.num_inputs} examples to {len(self.shard_paths)} shard(s) in "
        f"{self.output_dir} ({self.elapsed_seconds:.1f} s).",
        f"Skipped {len(self.skipped)} example(s)."]
    for kind, count in _count_by([k for _, k, _ in self.skipped]):
      lines.append(f"  {count:6d}  {kind}")
    for path, kind, detail in self.skipped[:max_listed]:
      lines.append(f"  skipped {path}: {kind}: {detail}")
    if len(self.skipped) > max_listed:
      lines.append(f"  ... {len(self.skipped) - max_listed} more (see "
                   f"summary_{self.split}.json)")
    lines.append(f"Converted {len(self.converted)} image(s) while writing.")
    for note, count in _count_by([n for _, n in self.converted]):
      lines.append(f"  {count:6d}  {note}")
    for path, note in self.converted[:max_listed]:
      lines.append(f"  converted {path}: {note}")
    if len(self.converted) > max_listed:
      lines.append(f"  ... {len(self.converted) - max_listed} more (see "
                   f"summary_{self.split}.json)")
    return "\n".join(lines)


def _count_by(items: Sequence[str]) -> List[Tuple[str, int]]:
  counts: Dict[str, int] = {}
  for item in items:
    counts[item] = counts.get(item, 0) + 1
  return sorted(counts.items())


class ProgressBar:
  """A minimal stderr progress bar (redraws on a TTY, else prints lines)."""

  def __init__(self, total: int, description: str, stream=None,
               min_interval: float = 0.5):
    self._total = max(total, 1)
    self._description = description
    self._stream = stream if stream is not None else sys.stderr
    self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
    self._min_interval = min_interval
    self._count = 0
    self._start = time.monotonic()
    self._last_draw = 0.0
    self._last_decile = -1

  def update(self, n: int = 1) -> None:
    self._count += n
    now = time.monotonic()
    if self._tty:
      if now - self._last_draw >= self._min_interval or self._done():
        self._draw(now, end="\r")
        self._last_draw = now
    else:
      decile = int(10 * self._count / self._total)
      if decile != self._last_decile:
        self._last_decile = decile
        self._draw(now, end="\n")

  def _done(self) -> bool:
    return self._count >= self._total

  def _draw(self, now: float, end: str) -> None:
    fraction = min(self._count / self._total, 1.0)
    width = 30
    filled = int(width * fraction)
    elapsed = max(now - self._start, 1e-9)
    rate = self._count / elapsed
    eta = (self._total - self._count) / rate if rate > 0 else 0.0
    self._stream.write(
        f"{self._description} [{'#' * filled}{'.' * (width - filled)}] "
        f"{self._count}/{self._total} {rate:.1f}/s ETA {eta:.0f}s{end}")
    self._stream.flush()

  def close(self) -> None:
    if self._tty:
      self._draw(time.monotonic(), end="\n")


def _run_one(process_fn: ProcessFn, task: Any):
  # Runs in a worker: a bad example is a value to report, not a crash.
  try:
    features, notes = process_fn(task)
    return ("ok", features, notes)
  except common.BadExample as e:
    return ("bad", (e.path, e.kind, e.detail), None)


def shard_paths(output_dir: str, split: str, num_shards: int) -> List[str]:
  """The shard file names: {split}-00000-of-00008.tfrecord, ..."""
  return [os.path.join(output_dir,
                       f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord")
          for i in range(num_shards)]


def _check_arguments(split: str, num_shards: int, num_workers: int) -> None:
  if not split or os.sep in split or split.startswith("."):
    raise ValueError(f"split must be a plain name like 'train', got "
                     f"{split!r}.")
  if not isinstance(num_shards, int) or num_shards < 1:
    raise ValueError(f"num_shards must be a positive int, got "
                     f"{num_shards!r}.")
  if not isinstance(num_workers, int) or num_workers < 1:
    raise ValueError(f"num_workers must be a positive int, got "
                     f"{num_workers!r}.")


def _check_output_dir(output_dir: str, split: str, final_paths: List[str],
                      metadata: metadata_lib.DatasetMetadata) -> None:
  stale = sorted(set(glob.glob(os.path.join(
      output_dir, f"{split}-*-of-*.tfrecord"))) - set(final_paths))
  if stale:
    raise ValueError(
        f"{output_dir} already holds {len(stale)} shard(s) of split "
        f"{split!r} with another shard count (e.g. {stale[0]}); a file "
        f"pattern would mix them. Remove them or use another output_dir.")
  path = os.path.join(output_dir, metadata_lib.METADATA_FILENAME)
  if os.path.exists(path):
    existing = metadata_lib.DatasetMetadata.load(path)
    if existing != metadata:
      raise ValueError(f"{path} holds metadata of another dataset "
                       f"({existing.name!r}); use another output_dir.")


def _write_json_atomic(path: str, obj: Any) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def write_records(*, dataset: str, tasks: Sequence[Any],
                  process_fn: ProcessFn, output_dir: str, split: str,
                  num_shards: int, num_workers: int, strict: bool,
                  metadata: metadata_lib.DatasetMetadata,
                  pre_skipped: Sequence[common.BadExample] = (),
                  progress_stream=None) -> ConversionSummary:
  """Converts `tasks` with `process_fn` and writes sharded TFRecords.

  Records are written in task order, dealt round-robin over the shards.
  `metadata.json` and `summary_{split}.json` are written beside the shards.

  Args:
    dataset: dataset name for the summary.
    tasks: picklable work items, one per example.
    process_fn: picklable callable task -> (feature dict, [(path, note)]);
      raises common.BadExample for bad inputs.
    output_dir: output directory (created if needed).
    split: split name used in the shard file names.
    num_shards: number of output shards.
    num_workers: worker processes (1 = no pool, run in this process).
    strict: stop at the first bad input (StrictModeError), writing nothing.
    metadata: dataset metadata written as metadata.json.
    pre_skipped: bad inputs found before processing (e.g. while indexing a
      JSON); reported like the others.
    progress_stream: where the progress bar goes (default stderr).

  Returns:
    ConversionSummary.

  Raises:
    StrictModeError: strict and a bad input was met.
    ValueError: bad arguments, no tasks, or a conflicting output_dir.
  """
  _check_arguments(split, num_shards, num_workers)
  start = time.monotonic()
  num_inputs = len(tasks) + len(pre_skipped)
  if num_inputs == 0:
    raise ValueError(f"No input examples found for {dataset} [{split}].")
  if strict and pre_skipped:
    raise StrictModeError(pre_skipped[0])
  os.makedirs(output_dir, exist_ok=True)
  final_paths = shard_paths(output_dir, split, num_shards)
  _check_output_dir(output_dir, split, final_paths, metadata)
  tmp_paths = [f"{p}.tmp-{os.getpid()}" for p in final_paths]
  skipped = [(b.path, b.kind, b.detail) for b in pre_skipped]
  converted: List[Tuple[str, str]] = []
  num_records = 0
  writers = []
  pool = None
  progress = ProgressBar(len(tasks), f"{dataset} [{split}]",
                         stream=progress_stream)
  run = functools.partial(_run_one, process_fn)
  try:
    if num_workers > 1 and len(tasks) > 1:
      # spawn: workers start clean (no forked TensorFlow threads or locks).
      # They start before TensorFlow is imported here, overlapping the two.
      pool = multiprocessing.get_context("spawn").Pool(num_workers)
      chunksize = max(1, min(16, len(tasks) // (8 * num_workers)))
      results = pool.imap(run, tasks, chunksize=chunksize)
    else:
      results = map(run, tasks)
    # TensorFlow is needed only here, in the parent, to write the records.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    writers = [tf.io.TFRecordWriter(p) for p in tmp_paths]
    for status, payload, notes in results:
      progress.update()
      if status == "bad":
        bad = common.BadExample(*payload)
        if strict:
          raise StrictModeError(bad)
        skipped.append(payload)
        continue
      example = tfrecord_schema.to_tf_example(payload)
      writers[num_records % num_shards].write(example.SerializeToString())
      num_records += 1
      converted.extend(notes)
    progress.close()
    for w in writers:
      w.close()
    writers = []
    for tmp, final in zip(tmp_paths, final_paths):
      os.replace(tmp, final)
  except BaseException:
    for w in writers:
      w.close()
    for tmp in tmp_paths:
      if os.path.exists(tmp):
        os.remove(tmp)
    raise
  finally:
    if pool is not None:
      pool.terminate()
      pool.join()
  metadata.save(output_dir)
  summary = ConversionSummary(
      dataset=dataset, split=split, output_dir=output_dir,
      num_inputs=num_inputs, num_records=num_records,
      shard_paths=final_paths, skipped=skipped, converted=converted,
      elapsed_seconds=time.monotonic() - start)
  _write_json_atomic(os.path.join(output_dir, f"summary_{split}.json"),
                     summary.to_dict())
  return summary
