"""Serving: SavedModel export modules, prediction files, attention maps.

Submodules: model_loading (building a zoo model or an experiment's model
and restoring its checkpoint, for export, evaluation and the scale-stress
experiment), export_module (export), predictor (running an export on image
files), attention_maps (paper Appendix C), cli (shared tool flags).

The names below load their module (and TensorFlow) on first use, so that
`axial_deeplab_tf.serving.cli` stays light for the tools' `--help`.
"""

import importlib

_EXPORTS = {
    "build_export_module": "export_module",
    "ClassificationExportModule": "export_module",
    "compute_dtype_scope": "model_loading",
    "export_loaded_model": "export_module",
    "export_saved_model": "export_module",
    "ImageExportModule": "export_module",
    "LoadedModel": "model_loading",
    "load_model": "model_loading",
    "PanopticExportModule": "export_module",
    "read_serving_config": "export_module",
    "SemanticExportModule": "export_module",
    "ServingParams": "export_module",
    "SIGNATURE_NAMES": "export_module",
    "PredictionWriter": "predictor",
    "SavedModelPredictor": "predictor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
  return getattr(module, name)
