"""Model Garden tasks and gin experiments (importing registers the tasks)."""

from axial_deeplab_tf.tasks import checkpoint_utils
from axial_deeplab_tf.tasks import experiment
from axial_deeplab_tf.tasks.segmentation import build_task
from axial_deeplab_tf.tasks.segmentation import ImageClassificationTask
from axial_deeplab_tf.tasks.segmentation import PanopticSegmentationTask
from axial_deeplab_tf.tasks.segmentation import SemanticSegmentationTask
