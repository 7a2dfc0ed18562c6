"""Parallel, atomic, sharded TFRecord writing with a progress bar and summary.

Worker processes (spawned, so they never inherit TensorFlow state) read and
check the inputs and return plain feature dicts; the parent turns them into
tf.train.Example records and writes the shards. Each shard is written to a
temporary file in the output directory and renamed into place only after
every record was written, so a crash, Ctrl-C or --strict stop never leaves a
half-written shard behind. Temporary files are named `.tmp-{split}-...` (a
`{split}-*` shard pattern never matches them); they are removed on an
error, SIGTERM or SIGINT, and a later run removes those a killed run left.
A run that writes no record leaves nothing under a final name.
"""

import dataclasses
import functools
import glob
import json
import multiprocessing
import os
import re
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from axial_deeplab_tf.attention_math import check_positive_int
from axial_deeplab_tf.data import metadata as metadata_lib
from axial_deeplab_tf.data import tfrecord_schema
from axial_deeplab_tf.data.converters import common
from axial_deeplab_tf.utils import errors
from axial_deeplab_tf.utils import io as io_lib
from axial_deeplab_tf.utils import progress as progress_lib

# A worker's result: (features, notes) for a good example.
ProcessFn = Callable[[Any], Tuple[Dict[str, Any], List[Tuple[str, str]]]]


class StrictModeError(errors.UserError):
  """Raised under strict=True at the first bad input; nothing was written."""

  def __init__(self, bad: common.BadExample):
    super().__init__("strict mode: stopped at bad input", bad.path,
                     f"{bad.kind}: {bad.detail}; no shard was written")
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
  check_positive_int("num_shards", num_shards)
  check_positive_int("num_workers", num_workers)


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
  _write_text_atomic(path, json.dumps(obj, indent=1))


def _write_text_atomic(path: str, text: str) -> None:
  # The temporary's name is one `remove_stale_temporaries` recognises.
  io_lib.write_text_atomically(path, text,
                               temporary=temporary_paths([path])[0])


# Temporary shards: ".tmp-{split}-00000-of-00008.tfrecord.{pid}". The
# leading dot and prefix keep them out of "{split}-*" patterns.
TMP_PREFIX = ".tmp-"


def temporary_paths(final_paths: Sequence[str]) -> List[str]:
  pid = os.getpid()
  return [os.path.join(os.path.dirname(p),
                       f"{TMP_PREFIX}{os.path.basename(p)}.{pid}")
          for p in final_paths]


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_stale_temporaries(output_dir: str, split: str) -> List[str]:
  """Removes temporary files of `split` left by killed runs; returns them.

  Files of a still running process (its pid alive) are kept.
  """
  pattern = re.compile(
      re.escape(TMP_PREFIX) + r"(?:" + re.escape(split) + r"-.*|" +
      re.escape(metadata_lib.METADATA_FILENAME) + r"|summary_" +
      re.escape(split) + r"\.json)\.(\d+)$")
  removed = []
  for name in sorted(os.listdir(output_dir)):
    match = pattern.match(name)
    if match and (int(match.group(1)) == os.getpid() or
                  not _pid_alive(int(match.group(1)))):
      os.remove(os.path.join(output_dir, name))
      removed.append(name)
  return removed


def check_open_files(num_shards: int, num_workers: int) -> None:
  """Refuses to start when the open-file limit cannot hold every shard.

  Raises:
    errors.UserError: `ulimit -n` too low for num_shards.
  """
  try:
    import resource  # pylint: disable=g-import-not-at-top
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
  except (ImportError, ValueError, OSError):
    return
  if soft == resource.RLIM_INFINITY:
    return
  try:
    in_use = len(os.listdir("/proc/self/fd"))
  except OSError:
    in_use = 16
  # Shards open at once, worker pipes, and TensorFlow's own files.
  needed = in_use + num_shards + 4 * num_workers + 64
  if needed > soft:
    raise errors.UserError(
        "too few file handles", None,
        f"--num_shards={num_shards} needs about {needed} open files but "
        f"the limit (ulimit -n) is {soft}; raise it or lower --num_shards")


class _Terminated(BaseException):
  """SIGTERM, raised in the main thread so cleanup runs."""


# Signals received during write_records. An exception raised by a signal
# handler is lost when it lands inside a finalizer (__del__ and weakref
# callbacks swallow exceptions), so the write loop also checks this list.
_received_signals: List[int] = []


def _raise_terminated(signum, frame):
  del frame
  _received_signals.append(signum)
  if signum == signal.SIGINT:
    raise KeyboardInterrupt
  raise _Terminated(f"terminated by signal {signum}")


def _check_signals() -> None:
  if _received_signals:
    raise _Terminated(f"terminated by signal {_received_signals[0]}")


def _interruption(error: BaseException) -> Optional[BaseException]:
  """The SIGTERM/SIGINT behind `error` (itself or a cause), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, (_Terminated, KeyboardInterrupt)):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


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
    errors.UserError: output_dir unusable, too few file handles, a write
      failed (disk full...), or no record was written.
  """
  in_main = threading.current_thread() is threading.main_thread()
  previous = {}
  if in_main:
    del _received_signals[:]
    for signum in (signal.SIGTERM, signal.SIGINT):
      if signal.getsignal(signum) is not signal.SIG_IGN:
        previous[signum] = signal.signal(signum, _raise_terminated)
  try:
    return _write_records(
        dataset=dataset, tasks=tasks, process_fn=process_fn,
        output_dir=output_dir, split=split, num_shards=num_shards,
        num_workers=num_workers, strict=strict, metadata=metadata,
        pre_skipped=pre_skipped, progress_stream=progress_stream)
  except BaseException as e:  # pylint: disable=broad-except
    interrupt = _interruption(e)
    if interrupt is None:
      raise
    # A signal that lands inside an import or a class body arrives wrapped
    # (e.g. a RuntimeError from __set_name__): still an interruption.
    raise KeyboardInterrupt(str(interrupt)) from e
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def _write_records(*, dataset, tasks, process_fn, output_dir, split,
                   num_shards, num_workers, strict, metadata, pre_skipped,
                   progress_stream) -> ConversionSummary:
  """write_records without the signal handling."""
  _check_arguments(split, num_shards, num_workers)
  start = time.monotonic()
  num_inputs = len(tasks) + len(pre_skipped)
  if num_inputs == 0:
    raise ValueError(f"No input examples found for {dataset} [{split}].")
  if strict and pre_skipped:
    raise StrictModeError(pre_skipped[0])
  errors.check_writable_dir(output_dir)
  check_open_files(num_shards, num_workers)
  remove_stale_temporaries(output_dir, split)
  final_paths = shard_paths(output_dir, split, num_shards)
  _check_output_dir(output_dir, split, final_paths, metadata)
  tmp_paths = temporary_paths(final_paths)
  skipped = [(b.path, b.kind, b.detail) for b in pre_skipped]
  converted: List[Tuple[str, str]] = []
  num_records = 0
  writers = []
  pool = None
  # On a terminal at most two redraws a second; in a log about 11 lines.
  progress = progress_lib.ProgressBar(len(tasks), f"{dataset} [{split}]",
                                      stream=progress_stream,
                                      min_interval=0.5, steps=10)
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
    writers = [_open_writer(tf, p) for p in tmp_paths]
    for status, payload, notes in results:
      _check_signals()
      progress.update()
      if status == "bad":
        bad = common.BadExample(*payload)
        if strict:
          raise StrictModeError(bad)
        skipped.append(payload)
        continue
      example = tfrecord_schema.to_tf_example(payload)
      shard = num_records % num_shards
      # Deterministic: map entries sorted, so a rerun (another process,
      # another hash seed) writes byte-identical shards.
      _write(tf, writers[shard], tmp_paths[shard],
             example.SerializeToString(deterministic=True))
      num_records += 1
      converted.extend(notes)
    progress.close()
    _check_signals()
    for w, tmp in zip(writers, tmp_paths):
      _write(tf, w, tmp, None)
    writers = []
    if num_records == 0:
      raise errors.UserError(
          "no record written", output_dir,
          f"all {num_inputs} input(s) of split {split!r} were bad; nothing "
          f"was written under a final name. Skipped: " + "; ".join(
              f"{p}: {k}: {d}" for p, k, d in skipped[:5]) +
          (f"; ... {len(skipped) - 5} more" if len(skipped) > 5 else ""))
    for tmp, final in zip(tmp_paths, final_paths):
      io_lib.move_into_place(tmp, final)
  except BaseException:
    for w in writers:
      try:
        w.close()
      except Exception:  # pylint: disable=broad-except
        pass  # A full disk fails the close too; the file goes anyway.
    for tmp in tmp_paths:
      if os.path.exists(tmp):
        os.remove(tmp)
    raise
  finally:
    if pool is not None:
      pool.terminate()
      pool.join()
  _save_metadata(metadata, output_dir)
  summary = ConversionSummary(
      dataset=dataset, split=split, output_dir=output_dir,
      num_inputs=num_inputs, num_records=num_records,
      shard_paths=final_paths, skipped=skipped, converted=converted,
      elapsed_seconds=time.monotonic() - start)
  _write_json_atomic(os.path.join(output_dir, f"summary_{split}.json"),
                     summary.to_dict())
  return summary


def _open_writer(tf, path: str):
  try:
    return tf.io.TFRecordWriter(path)
  except tf.errors.OpError as e:
    raise errors.UserError("cannot create shard", path, e.message) from e


def _write(tf, writer_, path: str, record) -> None:
  """Writes a record (or closes the writer when record is None).

  A failed write (disk full, file size limit, I/O error) becomes a
  UserError naming the temporary shard.
  """
  try:
    if record is None:
      writer_.close()
    else:
      writer_.write(record)
  except tf.errors.OpError as e:
    raise errors.UserError("cannot write shard", path, e.message) from e


def _save_metadata(metadata: metadata_lib.DatasetMetadata,
                   output_dir: str) -> None:
  path = os.path.join(output_dir, metadata_lib.METADATA_FILENAME)
  if os.path.exists(path):
    return  # Checked equal by _check_output_dir.
  _write_text_atomic(path, metadata.to_json())
