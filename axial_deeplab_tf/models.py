"""Public model-zoo entry points: `build(name, **overrides)` and `list_models()`."""

from axial_deeplab_tf.modeling.registry import build, get_entry, list_models  # pylint: disable=unused-import
