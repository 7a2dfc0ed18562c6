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
