"""The error discipline of every tool: one line, exit status 2.

A problem in the user's input or environment (a bad flag value, a missing
or corrupt file, a full disk, a read-only folder, too few file handles, a
gin file importing a missing module, a corrupt TFRecord) ends a tool with
one line on stderr

  error: <what>, <which file>, <why>

and exit status 2; the traceback is printed only with `--verbose`. Bugs
(anything not listed in `describe`) keep their traceback. Batch tools report
per-item problems with path and reason, go on with the rest and say in their
final line how many failed.

`run_tool(main)` applies this to a tool's `main(argv)`; `UserError` is the
exception library code raises for such problems when no standard type fits.
Only the standard library and absl are imported at module level, so a
tool's `--help` stays fast.
"""

import errno
import os
import re
import sys
import tokenize
import traceback
from typing import Callable, List, Optional, Sequence, TextIO

from absl import flags

USAGE_ERROR = 2
INTERRUPTED = 130

if "verbose" not in flags.FLAGS:
  flags.DEFINE_boolean("verbose", False,
                       "On an error, print the traceback besides the one-line "
                       "'error:' message.")


class UserError(ValueError):
  """A problem in the user's input or environment, reported as one line.

  Attributes:
    what: what went wrong ("corrupt record", "not an export folder").
    path: the file or folder concerned (may be None).
    why: the reason or what to do about it (may be None).
  """

  def __init__(self, what: str, path: Optional[str] = None,
               why: Optional[str] = None):
    self.what = what
    self.path = path
    self.why = why
    super().__init__(", ".join(
        str(part) for part in (what, path, why) if part))


# errno -> (what, why). `why` says what to do where there is something to do.
_ERRNO_TEXT = {
    errno.ENOSPC: ("no space left on device",
                   "free space or choose another output folder"),
    errno.EDQUOT: ("disk quota exceeded",
                   "free space or choose another output folder"),
    errno.EFBIG: ("file too large",
                  "the file system or a size limit (ulimit -f) refuses it"),
    errno.EACCES: ("permission denied", "the file or folder is not "
                   "accessible to this user"),
    errno.EPERM: ("operation not permitted", "the file or folder is not "
                  "accessible to this user"),
    errno.EROFS: ("read-only file system",
                  "choose a writable output folder"),
    errno.EMFILE: ("too many open files",
                   "raise the limit (ulimit -n) or lower --num_shards"),
    errno.ENFILE: ("too many open files in the system",
                   "raise the limit or lower --num_shards"),
    errno.ENOTDIR: ("not a folder",
                    "a part of the path is a file, not a folder"),
    errno.EISDIR: ("is a folder", "a file was expected"),
    errno.ENOENT: ("no such file or folder", None),
    errno.EEXIST: ("already exists", None),
    errno.ENAMETOOLONG: ("file name too long", None),
    errno.ELOOP: ("too many levels of symbolic links", None),
}


def _one_line(text: str, limit: int = 600) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe_os_error(e: OSError) -> str:
  what, why = _ERRNO_TEXT.get(e.errno, (None, None))
  path = e.filename
  if e.filename2:
    path = f"{e.filename} -> {e.filename2}"
  if what is None:
    what = e.strerror or type(e).__name__
    why = None if e.strerror else str(e)
  if path is None:
    # Messages like "[Errno 28] No space left on device" name no file; an
    # exception chained to this one sometimes does.
    why = why or _one_line(str(e))
  return ", ".join(str(p) for p in (what, path, why) if p)


def describe(error: BaseException) -> Optional[str]:
  """The one-line message of a user/environment error, else None (a bug)."""
  if isinstance(error, UserError):
    # From the parts: wrappers (gin's "In call to configurable ...") may
    # have appended to the message.
    return _one_line(", ".join(
        str(part) for part in (error.what, error.path, error.why) if part))
  if isinstance(error, OSError):
    return _one_line(_describe_os_error(error))
  if isinstance(error, ImportError):
    # Typically a gin file's `import` line naming a missing module: gin
    # files are code, and their imports run.
    name = getattr(error, "name", None)
    if not name:
      found = re.search(r"No module named '([^']+)'", str(error))
      name = found.group(1) if found else "?"
    return _one_line(f"cannot import module {name}, {error}")
  if isinstance(error, tokenize.TokenError):
    # gin's tokenizer on an unbalanced gin file: it names no file.
    return _one_line(f"syntax error in a gin file or binding, "
                     f"{_gin_files() or 'the --gin_param values'}, "
                     f"{error.args[0] if error.args else error}")
  if isinstance(error, RecursionError):
    return _one_line(f"input nested too deeply, {error}")
  if isinstance(error, MemoryError):
    return "out of memory, the input is too large for this machine"
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    if isinstance(error, Image.DecompressionBombError):
      return _one_line(f"image too large, {error}")
  except ImportError:
    pass
  if isinstance(error, SyntaxError) and getattr(error, "filename", None):
    # gin parse errors carry the file and line.
    return _one_line(f"syntax error, {error.filename} line {error.lineno}, "
                     f"{error.msg}")
  tf = sys.modules.get("tensorflow")
  if tf is not None and isinstance(error, tf.errors.OpError):
    return _describe_op_error(tf, error)
  if isinstance(error, (ValueError, TypeError, KeyError)):
    # The project's convention: bad input raises ValueError / TypeError
    # naming the argument, the value and what was expected.
    return _one_line(f"{type(error).__name__}: {error}")
  return None


def _gin_files() -> str:
  try:
    return ", ".join(flags.FLAGS["gin_file"].value or ())
  except (KeyError, flags.Error):
    return ""


# Functions that name the corrupt record behind a DataLossError (whose
# message names no file), or return None. The data layer registers its own
# (`data.shard_check.locate_corrupt_shard`) when it is imported, so this
# module imports nothing above it.
_CORRUPT_RECORD_LOCATORS: List[Callable[[], Optional[object]]] = []


def register_corrupt_record_locator(
    locate: Callable[[], Optional[object]]) -> None:
  """Adds `locate()` (a finding whose str names the record, or None)."""
  if locate not in _CORRUPT_RECORD_LOCATORS:
    _CORRUPT_RECORD_LOCATORS.append(locate)


def _describe_op_error(tf, error) -> Optional[str]:
  message = _one_line(getattr(error, "message", None) or str(error))
  if isinstance(error, tf.errors.DataLossError):
    for locate in _CORRUPT_RECORD_LOCATORS:
      found = locate()
      if found is not None:
        return _one_line(str(found))
    return f"corrupt record, {message}"
  if isinstance(error, (tf.errors.NotFoundError,
                        tf.errors.PermissionDeniedError,
                        tf.errors.InvalidArgumentError,
                        tf.errors.FailedPreconditionError,
                        tf.errors.ResourceExhaustedError,
                        tf.errors.OutOfRangeError)):
    return f"{type(error).__name__}: {message}"
  return None


def _verbose_requested(argv: Optional[Sequence[str]]) -> bool:
  try:
    if flags.FLAGS.is_parsed() and flags.FLAGS["verbose"].value:
      return True
  except (KeyError, flags.Error):
    pass
  args = sys.argv if argv is None else argv
  return any(a in ("--verbose", "--verbose=true", "--verbose=True", "-verbose")
             for a in args)


def report(error: BaseException, stream: Optional[TextIO] = None,
           verbose: bool = False) -> int:
  """Prints `error: ...` for a user error and returns 2; re-raises bugs."""
  stream = stream or sys.stderr
  message = describe(error)
  if message is None:
    raise error
  if verbose:
    traceback.print_exception(type(error), error, error.__traceback__,
                              file=stream)
  print(f"error: {message}", file=stream)
  stream.flush()
  return USAGE_ERROR


def run_tool(main: Callable[[List[str]], Optional[int]],
             argv: Optional[List[str]] = None,
             stream: Optional[TextIO] = None) -> int:
  """Runs a tool's main(argv); maps user errors to one line and status 2.

  Returns:
    main's exit status (0 when it returns None), 2 after a user or
    environment error, 130 after Ctrl-C. Bugs propagate with their
    traceback.
  """
  argv = list(sys.argv if argv is None else argv)
  try:
    status = main(argv)
  except SystemExit:
    raise
  except KeyboardInterrupt:
    print("error: interrupted", file=stream or sys.stderr)
    return INTERRUPTED
  except Exception as e:  # pylint: disable=broad-except
    return report(e, stream=stream, verbose=_verbose_requested(argv))
  return 0 if status is None else int(status)


def tool_main(main: Callable[[List[str]], Optional[int]]
             ) -> Callable[[List[str]], None]:
  """For absl's app.run: `app.run(errors.tool_main(main))`."""

  def wrapped(argv: List[str]) -> None:
    sys.exit(run_tool(main, argv))

  return wrapped


def check_writable_dir(path: str, flag: str = "output_dir") -> None:
  """Refuses an output folder that is a file or cannot be written.

  Creates the folder when missing.

  Raises:
    UserError: naming the folder and why.
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"--{flag} is not a folder", path,
                    "it is an existing file; choose a folder")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create --{flag}", path,
                    _describe_os_error(e)) from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError(f"--{flag} is not writable", path,
                    "read-only folder or file system, or no permission")
