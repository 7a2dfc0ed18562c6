"""Optimizers: Rectified Adam and Lookahead, wired into Model Garden.

Importing this package registers RectifiedAdam with Model Garden's optimizer
factory under "radam" (once; re-importing is harmless).
"""

from axial_deeplab_tf.optimizers.configs import build_optimizer
from axial_deeplab_tf.optimizers.configs import LookaheadConfig
from axial_deeplab_tf.optimizers.configs import make_optimization_config
from axial_deeplab_tf.optimizers.configs import OptimizationConfig
from axial_deeplab_tf.optimizers.configs import OptimizerConfig
from axial_deeplab_tf.optimizers.configs import RADAM_KEY
from axial_deeplab_tf.optimizers.configs import RAdamConfig
from axial_deeplab_tf.optimizers.lookahead import Lookahead
from axial_deeplab_tf.optimizers.radam import RectifiedAdam
