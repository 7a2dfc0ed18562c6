"""File writes that a reader never sees half done."""

import os
import shutil
import uuid
from typing import Callable, Optional, Union


def is_remote(path: str) -> bool:
  """Whether `path` names a tf.io.gfile file system (gs://, s3://, ...)."""
  return "://" in path


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def _exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.lexists(path)


def _remove(path: str) -> None:
  """Removes a file or a whole folder, local or remote."""
  if is_remote(path):
    gfile = _gfile()
    (gfile.rmtree if gfile.isdir(path) else gfile.remove)(path)
  elif os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  else:
    os.remove(path)


def move_into_place(tmp: str, path: str) -> None:
  """Renames a finished temporary file or folder `tmp` to `path`.

  An existing file at `path` is replaced in one rename; an existing folder
  is removed first (the caller has checked that it may go). Remote paths go
  through tf.io.gfile.
  """
  if os.path.isdir(tmp) if not is_remote(tmp) else _gfile().isdir(tmp):
    if _exists(path):
      _remove(path)
  if is_remote(path):
    _gfile().rename(tmp, path, overwrite=True)
  else:
    os.replace(tmp, path)


def write_atomically(path: str,
                     write_fn: Callable[[str], None],
                     *,
                     folder: bool = False,
                     temporary: Optional[str] = None) -> None:
  """Writes `path` via write_fn(temporary path) beside it, then renames.

  A reader never sees a half-written file or folder: on any error (or
  KeyboardInterrupt) the temporary is removed and `path` is untouched. The
  parent folder is created. Local paths use os; remote model_dirs (gs://
  and other tf.io.gfile file systems) go through tf.io.gfile.

  Args:
    path: the file or folder to write.
    write_fn: called with the temporary path; writes the file there (or, with
      folder=True, fills the empty temporary folder).
    folder: `path` is a folder; an existing one is replaced (the caller
      checks what may be replaced).
    temporary: the temporary name to use (e.g. one a cleanup of killed runs
      recognises); default a fresh hidden name in path's folder, with
      path's extension (some writers choose the format by it).
  """
  remote = is_remote(path)
  parent = os.path.dirname(path if remote else os.path.abspath(path))
  if temporary is None:
    suffix = "" if folder else os.path.splitext(path)[1]
    temporary = os.path.join(
        parent, f".tmp_{os.path.basename(path)}_{uuid.uuid4().hex}{suffix}")
  if remote:
    _gfile().makedirs(parent)
  else:
    os.makedirs(parent, exist_ok=True)
  if folder:
    if remote:
      _gfile().makedirs(temporary)
    else:
      os.mkdir(temporary)
  try:
    write_fn(temporary)
    move_into_place(temporary, path)
  except BaseException:
    if _exists(temporary):
      _remove(temporary)
    raise


def write_text_atomically(path: str, data: Union[str, bytes],
                          temporary: Optional[str] = None) -> None:
  """Writes text or bytes to `path` (local or remote) atomically.

  `temporary` as for `write_atomically`.
  """
  def write(tmp):
    opener = _gfile().GFile if is_remote(tmp) else open
    with opener(tmp, "wb" if isinstance(data, bytes) else "w") as f:
      f.write(data)
  write_atomically(path, write, temporary=temporary)


# Images above this many pixels are refused before decoding (8192 x 8192).
MAX_IMAGE_PIXELS = 1 << 26


def check_image_pixels(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> str:
  """Refuses an image whose header states more than `max_pixels` pixels.

  Only the header is read (no pixel is decoded), so a decompression bomb
  (a small file claiming a huge size) is refused before it allocates.

  Returns:
    path, for chaining.

  Raises:
    errors.UserError: not an image, or too many pixels.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.utils import errors  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:  # Lazy: reads the header only.
      width, height = image.size
  except Image.DecompressionBombError as e:
    raise errors.UserError("image too large", path, str(e)) from e
  except (OSError, SyntaxError, ValueError) as e:
    if isinstance(e, OSError) and not os.path.isfile(path):
      raise errors.UserError("image not found", path, "no such file") from e
    raise errors.UserError("not a readable image", path, str(e)) from e
  if width * height > max_pixels:
    raise errors.UserError(
        "image too large", path,
        f"{width}x{height} = {width * height} pixels, more than the limit "
        f"of {max_pixels} (decompression bomb?)")
  return path
