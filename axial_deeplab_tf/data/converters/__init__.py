"""Dataset converters to the project's TFRecord schema.

Library code behind tools/build_*_data.py. Every converter reads one
dataset's own on-disk format, checks each example (reporting bad ones with
path and reason), and writes sharded TFRecords plus metadata.json with
writer.write_records. None of these modules imports TensorFlow at import
time, so the converter worker processes stay light.
"""

from axial_deeplab_tf.data.converters.ade20k import convert_ade20k
from axial_deeplab_tf.data.converters.cityscapes import convert_cityscapes
from axial_deeplab_tf.data.converters.coco_panoptic import convert_coco_panoptic
from axial_deeplab_tf.data.converters.coco_panoptic import convert_own_panoptic
from axial_deeplab_tf.data.converters.coco_panoptic import convert_panoptic_json
from axial_deeplab_tf.data.converters.common import BadExample
from axial_deeplab_tf.data.converters.imagenet import convert_imagenet
from axial_deeplab_tf.data.converters.mapillary import convert_mapillary
from axial_deeplab_tf.data.converters.writer import ConversionSummary
from axial_deeplab_tf.data.converters.writer import StrictModeError
from axial_deeplab_tf.data.converters.writer import write_records
