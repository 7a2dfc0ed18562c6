"""Command-line pieces shared by the serving tools.

tools/export_saved_model.py and tools/visualize_attention.py take a model
the same way: a zoo name with builder overrides (`--model`, `--set`) or an
experiment's gin files (`--gin_file`, `--gin_param`), and a checkpoint. All
three serving tools report errors the same way: one line on stderr and exit
status 2 for usage and setup errors. Only absl is imported here, so a tool's
`--help` does not load TensorFlow.
"""

import glob
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, TextIO
from typing import TypeVar

from absl import flags

from axial_deeplab_tf.utils import errors
# The prediction tool's progress bar (cli.ProgressBar).
from axial_deeplab_tf.utils.progress import ProgressBar  # pylint: disable=unused-import

T = TypeVar("T")

USAGE_ERROR = 2


def define_model_flags(checkpoint_help: str,
                       flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines --gin_file, --gin_param, --model, --set and --checkpoint_path.

  Args:
    checkpoint_help: what happens without a checkpoint (appended to the
      --checkpoint_path help).
    flag_values: where to define them.
  """
  flags.DEFINE_multi_string("gin_file", [], "Experiment gin file(s).",
                            flag_values=flag_values)
  flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings.",
                            flag_values=flag_values)
  flags.DEFINE_string("model", None, "Zoo model name (instead of --gin_file).",
                      flag_values=flag_values)
  flags.DEFINE_multi_string(
      "set", [], "Builder override key=value for --model (Python literal "
      "values), repeatable.", flag_values=flag_values)
  flags.DEFINE_string(
      "checkpoint_path", None, "Checkpoint prefix, or a folder (its latest "
      "checkpoint), saved with model=...; " + checkpoint_help,
      flag_values=flag_values)


# app.run(cli.tool_main(main)): user errors end as one line, exit status 2.
tool_main = errors.tool_main


def usage_error(message: str, stream: Optional[TextIO] = None) -> int:
  """Prints `error: message` on stderr; returns the usage exit status."""
  print(f"error: {message}", file=stream or sys.stderr)
  return USAGE_ERROR


def report_error(error: BaseException, stream: Optional[TextIO] = None) -> int:
  """Prints an exception as one `error: ...` line (utils/errors); returns 2."""
  message = errors.describe(error) or " ".join(
      f"{type(error).__name__}: {error}".split())
  return usage_error(message, stream)


def check_usage(argv: Sequence[str],
                flag_values: flags.FlagValues,
                required: Sequence[str] = (),
                model_flags: bool = False) -> Optional[int]:
  """Checks what absl cannot: stray arguments, required and exclusive flags.

  Args:
    argv: the arguments absl left over (argv[0] is the program).
    flag_values: the parsed flags.
    required: names of flags that must be set (non-empty).
    model_flags: also require exactly one of --model and --gin_file.

  Returns:
    None if all is well, else the exit status after printing the error.
  """
  if len(argv) > 1:
    return usage_error(f"unexpected arguments {list(argv[1:])}")
  for name in required:
    if not flag_values[name].value:
      return usage_error(f"--{name} is required.")
  if model_flags and bool(flag_values.model) == bool(flag_values.gin_file):
    return usage_error("give either --model (a zoo model) or --gin_file (an "
                       "experiment).")
  return None


def load_model_from_flags(flag_values: flags.FlagValues, **kwargs):
  """`model_loading.load_model` with the model flags of `define_model_flags`.

  Args:
    flag_values: parsed flags.
    **kwargs: more `load_model` arguments (dataset_metadata, dtype).

  Returns:
    A model_loading.LoadedModel.
  """
  from axial_deeplab_tf.serving import model_loading  # pylint: disable=g-import-not-at-top
  return model_loading.load_model(
      model_name=flag_values.model,
      overrides=model_loading.parse_overrides(flag_values.set),
      gin_files=flag_values.gin_file, gin_params=flag_values.gin_param,
      checkpoint_path=flag_values.checkpoint_path, **kwargs)


def parse_list(name: str, values: Optional[Sequence[str]],
               convert: Callable[[str], T], expected: str
              ) -> Optional[List[T]]:
  """Converts the items of a list flag; None stays None.

  Raises:
    ValueError: an item `convert` rejects, naming the flag and `expected`.
  """
  if values is None:
    return None
  try:
    return [convert(v) for v in values]
  except ValueError as e:
    raise ValueError(f"--{name} must be {expected}, got "
                     f"{list(values)}.") from e


def output_name(path: str) -> str:
  """A safe output name for an input file: its name without extension.

  Characters other than letters, digits, `.`, `_` and `-` become `_`, and
  leading dots are dropped, so a name never holds a path separator, never
  is `.` or `..` and never hides a file.
  """
  stem = os.path.splitext(os.path.basename(path))[0]
  safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_"
                 for c in stem).lstrip(".")
  return safe or "image"


def find_files(name: str, patterns: Sequence[str]) -> Dict[str, str]:
  """Files matching the glob patterns of flag --name, by output name.

  The output name of a file is `output_name(path)`; files whose names
  coincide (the same base name in two folders, or names that differ only
  in characters that are replaced) get `-<8 hex digits of a hash of the
  absolute path>` appended, so no output overwrites another and the names
  stay the same from run to run.

  Args:
    name: the flag, for messages.
    patterns: glob patterns (`~` expanded); folders are skipped.

  Returns:
    {output name: path}, in path order.

  Raises:
    ValueError: nothing matches.
  """
  import hashlib  # pylint: disable=g-import-not-at-top
  paths = sorted({p for pattern in patterns
                  for p in glob.glob(os.path.expanduser(pattern))
                  if os.path.isfile(p)})
  if not paths:
    raise ValueError(f"no files match --{name} {list(patterns)}.")
  by_name: Dict[str, List[str]] = {}
  for path in paths:
    by_name.setdefault(output_name(path), []).append(path)
  result = {}
  for stem, found in by_name.items():
    for path in found:
      key = stem
      if len(found) > 1:
        digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()
        key = f"{stem}-{digest[:8]}"
      result[key] = path
  return dict(sorted(result.items(), key=lambda item: item[1]))
