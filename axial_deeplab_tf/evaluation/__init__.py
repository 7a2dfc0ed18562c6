"""Metrics: panoptic quality, mean IoU, instance mask AP, COCO panoptic I/O."""

from axial_deeplab_tf.evaluation import coco_panoptic_format
from axial_deeplab_tf.evaluation.instance_ap import InstanceAP
from axial_deeplab_tf.evaluation.panoptic_quality import PanopticQuality
from axial_deeplab_tf.evaluation.segmentation_metrics import MeanIoU

__all__ = ["InstanceAP", "MeanIoU", "PanopticQuality", "coco_panoptic_format"]
