"""A base class for modeling layers that keep their arguments in a dict."""

from typing import Any, Dict

import tf_keras

from axial_deeplab_tf.layers import common


class ConfigDictLayer(tf_keras.layers.Layer):
  """A layer whose constructor arguments are the dict `self._config_dict`.

  `get_config` returns them beside the Layer's own entries, with the
  `kernel_initializer` and `kernel_regularizer` entries serialised.
  """

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(self._config_dict)
    config["kernel_initializer"] = common.serialize_initializer(
        config["kernel_initializer"])
    config["kernel_regularizer"] = common.serialize_regularizer(
        config["kernel_regularizer"])
    return config
