"""Exports a model's network as LiteRT (.tflite, built-in ops only) at a fixed input size.

  axial-deeplab export-tflite --model=axial_deeplab_s --set=num_classes=19 \
      --checkpoint_path=/tmp/run --input_size=513,513 --output=/tmp/model.tflite

(or --gin_file=... for an experiment). Writes the file and a .json
description beside it; `axial-deeplab predict --saved_model=/tmp/model.tflite`
runs it with the post-processing step. See
axial_deeplab_tf/serving/portable_export.py.
"""

from typing import Sequence

# portable_export.main parses its own flags (one FlagValues per call).
PARSES_OWN_ARGUMENTS = True


def run_portable_export(argv: Sequence[str], fmt: str, doc: str) -> int:
  """`--help` (the docstring and the flags of `fmt`) or the export itself."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from axial_deeplab_tf.serving import portable_export  # pylint: disable=g-import-not-at-top
  if any(a in ("-h", "--help", "--helpshort") for a in argv[1:]):
    values = flags.FlagValues()
    portable_export.define_flags(fmt, values)
    print(doc)
    print("flags:")
    print(values.get_help())
    return 0
  return portable_export.main(list(argv), fmt)


def main(argv: Sequence[str]) -> int:
  return run_portable_export(argv, "tflite", __doc__)
