"""Serving: SavedModel export modules and attention-map extraction."""

from axial_deeplab_tf.serving.export_module import build_export_module
from axial_deeplab_tf.serving.export_module import ClassificationExportModule
from axial_deeplab_tf.serving.export_module import compute_dtype_scope
from axial_deeplab_tf.serving.export_module import export_saved_model
from axial_deeplab_tf.serving.export_module import ImageExportModule
from axial_deeplab_tf.serving.export_module import load_model
from axial_deeplab_tf.serving.export_module import PanopticExportModule
from axial_deeplab_tf.serving.export_module import read_serving_config
from axial_deeplab_tf.serving.export_module import SemanticExportModule
from axial_deeplab_tf.serving.export_module import ServingParams
from axial_deeplab_tf.serving.export_module import SIGNATURE_NAMES

__all__ = [
    "build_export_module", "ClassificationExportModule",
    "compute_dtype_scope", "export_saved_model", "ImageExportModule",
    "load_model", "PanopticExportModule", "read_serving_config",
    "SemanticExportModule", "ServingParams", "SIGNATURE_NAMES",
]
