"""Losses: Panoptic-DeepLab semantic, center and offset losses."""

from axial_deeplab_tf.losses.panoptic_losses import PanopticDeepLabLoss
from axial_deeplab_tf.losses.panoptic_losses import WeightedBootstrappedCrossEntropy
from axial_deeplab_tf.losses.panoptic_losses import WeightedL1
from axial_deeplab_tf.losses.panoptic_losses import WeightedMSE
