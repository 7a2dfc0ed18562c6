"""The model families of the zoo: importing this module registers them all.

Each family module registers its own models with `registry.register_model`
when it is imported; `registry` itself imports none of them. The package
`axial_deeplab_tf.modeling` imports this module, so the registry is
complete as soon as any part of the modeling layer is loaded. A family that
fails to import is an error naming the module and the cause, never a
silently shorter zoo.
"""

import importlib

from axial_deeplab_tf.layers import common
from axial_deeplab_tf.modeling import registry

FAMILY_MODULES = (
    "axial_deeplab_tf.modeling.backbones.axial_resnet",
    "axial_deeplab_tf.modeling.axial_deeplab",
    "axial_deeplab_tf.modeling.conv_baselines",
    "axial_deeplab_tf.modeling.deeplab2_panoptic",
    "axial_deeplab_tf.modeling.isanet",
    "axial_deeplab_tf.modeling.segnext",
)


def load_families(modules=FAMILY_MODULES) -> None:
  """Imports every family module; ImportError naming the one that failed."""
  for module in modules:
    try:
      importlib.import_module(module)
    except Exception as e:  # pylint: disable=broad-except
      raise ImportError(f"model family module {module} failed to import: "
                        f"{type(e).__name__}: {e}") from e


load_families()


# Synchronized batch norms of every zoo model, those Model Garden's modules
# make included, get the two-pass statistics (layers.common).
registry.after_build(common.use_two_pass_sync_statistics)
