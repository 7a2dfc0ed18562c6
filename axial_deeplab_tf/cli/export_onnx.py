"""Exports a model's network as ONNX (tf2onnx) at a fixed input size.

  axial-deeplab export-onnx --model=axial_deeplab_s --set=num_classes=19 \
      --checkpoint_path=/tmp/run --input_size=513,513 --output=/tmp/model.onnx

(or --gin_file=... for an experiment). Writes the file and a .json
description beside it; `axial-deeplab predict --saved_model=/tmp/model.onnx`
runs it with the post-processing step. See
axial_deeplab_tf/serving/portable_export.py.
"""

from typing import Sequence

from axial_deeplab_tf.cli import export_tflite

# portable_export.main parses its own flags (one FlagValues per call).
PARSES_OWN_ARGUMENTS = True


def main(argv: Sequence[str]) -> int:
  return export_tflite.run_portable_export(argv, "onnx", __doc__)
