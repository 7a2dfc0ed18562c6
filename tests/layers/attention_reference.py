"""numpy helpers of the 2D attention tests: weights by name, random weights,
average pooling."""

import numpy as np


def weights_by_name(layer):
  """Maps 'sub_layer/variable' (layer prefix and ':0' stripped) to numpy."""
  out = {}
  for w in layer.weights:
    name = w.name.split(":")[0]
    name = name[len(layer.name) + 1:] if name.startswith(layer.name) else name
    out[name] = w.numpy().astype(np.float64)
  return out


def randomise(layer, seed, other_stddev=0.5):
  """Gives every weight (incl. BN moving stats) a random, valid value.

  Moving variances are U(0.5, 2), gammas U(0.5, 1.5), kernels and
  positional tables N(0, 0.5), everything else N(0, other_stddev).
  """
  rng = np.random.default_rng(seed)
  values = []
  for w in layer.weights:
    shape = w.shape
    if "moving_variance" in w.name:
      values.append(rng.uniform(0.5, 2.0, shape))
    elif "gamma" in w.name:
      values.append(rng.uniform(0.5, 1.5, shape))
    elif "kernel" in w.name or "positional" in w.name:
      values.append(rng.normal(0.0, 0.5, shape))
    else:
      values.append(rng.normal(0.0, other_stddev, shape))
  layer.set_weights([v.astype(np.float32) for v in values])


def average_pool_same(x, strides):
  """[b, h, w, c] -> [b, ceil(h / s), ceil(w / s), c]: 'same' average
  pooling, the mean over the in-image pixels of each window."""
  b, h, w, c = x.shape
  ho, wo = -(-h // strides), -(-w // strides)
  pooled = np.zeros([b, ho, wo, c])
  for i in range(ho):
    for j in range(wo):
      pooled[:, i, j] = x[:, i * strides:(i + 1) * strides,
                          j * strides:(j + 1) * strides].mean((1, 2))
  return pooled
