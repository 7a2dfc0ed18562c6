"""Checks of TFRecord shards before training reads them.

Data files are untrusted: a shard may be missing, empty, truncated, hold
flipped bytes or records of another schema. `check_shards` looks at every
shard matched by the input pattern before the input pipeline is built:

- it exists, is a regular file and is not empty (an empty shard made the
  endless training stream spin forever without an example);
- its record framing is whole: every record header (length and its
  checksum) is read and the lengths must add up to the file size exactly,
  which finds a truncated or cut shard and a corrupt length without reading
  the data;
- its first record passes TensorFlow's data checksum and parses with the
  record schema of the task (tfrecord_schema.feature_spec).

A problem ends with a `UserError` naming the shard. A corrupt record met
later (flipped data bytes inside a record) stops training with a
`DataLossError`; `locate_corrupt_shard` then names the shard and record for
the tool's one-line error. With `skip_corrupt_records=True` the check reads
every record instead, logs each corrupt shard with how many records are
skipped (TFRecord framing cannot be resynchronised: a shard is read up to
its first corrupt record), and refuses data left with no readable record.
"""

import os
import struct
import threading
from typing import List, Optional, Sequence, Union

from absl import logging

from axial_deeplab_tf.data import tfrecord_schema
from axial_deeplab_tf.utils import errors

_HEADER = 12  # uint64 length + uint32 masked crc32c of the length.
_FOOTER = 4  # uint32 masked crc32c of the data.

_lock = threading.Lock()
_checked_files: List[str] = []


def _crc32c_table() -> List[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """The checksum TFRecord stores: rotated CRC-32C plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def match_files(file_pattern: Union[str, Sequence[str]]) -> List[str]:
  """Files of comma-separated glob(s) or a list of them, in pattern order.

  Raises:
    errors.UserError: a pattern matches nothing.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  patterns = ([p.strip() for p in file_pattern.split(",")]
              if isinstance(file_pattern, str) else list(file_pattern))
  patterns = [p for p in patterns if p]
  if not patterns:
    raise errors.UserError("no input files", None, "the input path is empty")
  files = []
  for pattern in patterns:
    matched = sorted(tf.io.gfile.glob(pattern))
    if not matched:
      raise errors.UserError("input pattern matches no file", pattern,
                             "check input_path")
    files.extend(matched)
  return files


def walk_headers(path: str) -> int:
  """Reads every record header of a TFRecord file; returns the count.

  Raises:
    errors.UserError: the file is empty, truncated, or a length field is
      corrupt.
  """
  size = os.path.getsize(path)
  if size == 0:
    raise errors.UserError("empty shard", path,
                           "the file has 0 bytes (no record); remove it or "
                           "rerun the converter")
  count = 0
  offset = 0
  with open(path, "rb") as f:
    while offset < size:
      header = f.read(_HEADER)
      if len(header) < _HEADER:
        raise errors.UserError(
            "truncated shard", path,
            f"record {count} at byte {offset}: the header is cut off "
            f"({size} bytes in all)")
      length_bytes, length_crc = header[:8], struct.unpack("<I",
                                                           header[8:])[0]
      if masked_crc32c(length_bytes) != length_crc:
        raise errors.UserError(
            "corrupt shard", path,
            f"record {count} at byte {offset}: the length checksum does not "
            f"match (flipped bytes or not a TFRecord file)")
      length = struct.unpack("<Q", length_bytes)[0]
      end = offset + _HEADER + length + _FOOTER
      if end > size:
        raise errors.UserError(
            "truncated shard", path,
            f"record {count} at byte {offset} needs {length} bytes of data "
            f"but the file ends at byte {size}")
      f.seek(end)
      offset = end
      count += 1
  return count


def _first_record(tf, path: str):
  try:
    for record in tf.data.TFRecordDataset(path).take(1):
      return record
  except tf.errors.DataLossError as e:
    raise errors.UserError("corrupt first record", path,
                           _op_message(e)) from e
  raise errors.UserError("empty shard", path, "no record")


def _op_message(e) -> str:
  message = getattr(e, "message", None) or str(e)
  # Drop TensorFlow's function-node prefix; keep the reason.
  if "}}" in message:
    message = message.split("}}", 1)[1]
  return " ".join(message.replace("[Op:IteratorGetNext]", "").split())


def _check_schema(tf, path: str, record, label_type: str) -> None:
  spec = tfrecord_schema.feature_spec(label_type)
  try:
    tf.io.parse_single_example(record, spec)
  except (tf.errors.InvalidArgumentError, ValueError) as e:
    raise errors.UserError(
        f"shard does not hold {label_type} records", path,
        f"the first record does not parse with the {label_type} record "
        f"schema: {_op_message(e)}") from e


def count_readable(path: str) -> Optional[tuple]:
  """Reads every record; (records read, error message) or None if whole."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  count = 0
  try:
    for _ in tf.data.TFRecordDataset(path, buffer_size=1 << 20):
      count += 1
  except tf.errors.DataLossError as e:
    return count, _op_message(e)
  return None


def check_shards(file_pattern: Union[str, Sequence[str]], label_type: str,
                 skip_corrupt_records: bool = False) -> List[str]:
  """Checks every shard of `file_pattern` (see the module doc).

  Args:
    file_pattern: glob(s) as build_dataset takes them.
    label_type: "panoptic", "semantic" or "classification".
    skip_corrupt_records: read every record, log how many of each corrupt
      shard are skipped, and fail only when nothing readable is left.

  Returns:
    The matched files.

  Raises:
    errors.UserError: naming the first bad shard and why.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = match_files(file_pattern)
  readable = 0
  for path in files:
    if not tf.io.gfile.exists(path):
      raise errors.UserError("shard not found", path, "no such file")
    local = "://" not in path
    if local and not os.path.isfile(path):
      raise errors.UserError("shard is not a file", path,
                             "a folder or special file matched the pattern")
    if skip_corrupt_records:
      if local and os.path.getsize(path) == 0:
        logging.warning("Skipping empty shard %s (0 bytes).", path)
        continue
      problem = count_readable(path)
      if problem is not None:
        kept, message = problem
        logging.warning("Corrupt shard %s: %s; its %d record(s) before the "
                        "corrupt one are read, the rest of the shard is "
                        "skipped.", path, message, kept)
        print(f"warning: corrupt shard {path}: {message}; reading its first "
              f"{kept} record(s) and skipping the rest.", flush=True)
        readable += kept
        if kept == 0:
          continue
      else:
        readable += 1
      _check_schema(tf, path, _first_record(tf, path), label_type)
      continue
    if local:
      walk_headers(path)
    _check_schema(tf, path, _first_record(tf, path), label_type)
    readable += 1
  if readable == 0:
    raise errors.UserError("no readable record", ",".join(files[:3]),
                           "every shard is empty or corrupt from its first "
                           "record")
  with _lock:
    for path in files:
      if path not in _checked_files:
        _checked_files.append(path)
  return files


def locate_corrupt_shard(files: Optional[Sequence[str]] = None
                        ) -> Optional[errors.UserError]:
  """Finds the first corrupt record among `files` (default: those checked).

  Called after a DataLossError, whose message names no file.

  Returns:
    A UserError naming the shard and record, or None if all read whole.
  """
  with _lock:
    candidates = list(files if files is not None else _checked_files)
  for path in candidates:
    problem = count_readable(path)
    if problem is not None:
      kept, message = problem
      return errors.UserError(
          "corrupt record", path,
          f"record {kept}: {message}; rerun the converter for this shard, "
          f"or bind data.skip_corrupt_records=True to skip the rest of it")
  return None


errors.register_corrupt_record_locator(locate_corrupt_shard)


def tfrecord_dataset_fn(skip_corrupt_records: bool):
  """The InputReader dataset_fn: TFRecordDataset, dropping errors if asked."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not skip_corrupt_records:
    return tf.data.TFRecordDataset

  def read(files):
    # A DataLossError ends the file; ignore_errors goes on with the next.
    return tf.data.TFRecordDataset(files).ignore_errors()

  return read
