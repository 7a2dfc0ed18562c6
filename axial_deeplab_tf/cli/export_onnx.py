"""Exports a model's network as ONNX (tf2onnx) at a fixed input size.

  axial-deeplab export-onnx --model=axial_deeplab_s --set=num_classes=19 \
      --checkpoint_path=/tmp/run --input_size=513,513 --output=/tmp/model.onnx

The flags, the .json description written beside the file and running it with
`axial-deeplab predict --saved_model=/tmp/model.onnx` are those of
`axial-deeplab export-tflite` (ONNX files are float32: no --quantization).
"""

from typing import Sequence

from axial_deeplab_tf.cli import export_tflite

# portable_export.main parses its own flags (one FlagValues per call).
PARSES_OWN_ARGUMENTS = True


def main(argv: Sequence[str]) -> int:
  return export_tflite.run_portable_export(argv, "onnx", __doc__)
