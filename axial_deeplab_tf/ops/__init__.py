"""Ops: Panoptic-DeepLab post-processing and test-time augmentation."""

from axial_deeplab_tf.ops.post_processing import PanopticDeepLabPostProcessor
from axial_deeplab_tf.ops.test_time_augmentation import multi_scale_flip_inference
