"""File writes that a reader never sees half done."""

import os
import tempfile
from typing import Callable


def write_atomically(path: str, write_fn: Callable[[str], None]) -> None:
  """Writes a file via write_fn(temporary path) in its folder, then renames.

  A reader never sees a half-written file; the folder is created.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  handle, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_",
                                 suffix=os.path.splitext(path)[1])
  os.close(handle)
  try:
    write_fn(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


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
