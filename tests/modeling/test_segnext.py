"""SegNeXt: parameter counts, a torch reference of MSCAN, zoo entries."""

import inspect

import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F

from axial_deeplab_tf.layers import hamburger
from axial_deeplab_tf.modeling.heads import light_ham_head
from axial_deeplab_tf.modeling import registry
from axial_deeplab_tf.modeling import segnext
from axial_deeplab_tf.modeling.backbones import mscan

# variant: (backbone, full at 150 classes, full at 19 classes), from the
# official configs.
PARAMS = {
    "t": (3_903_584, 4_263_414, 4_229_747),
    "s": (13_450_176, 13_932_886, 13_899_219),
    "b": (26_277_824, 27_636_310, 27_569_107),
    "l": (44_636_864, 48_926_550, 48_792_275),
}


def _count(weights):
  return sum(int(np.prod(w.shape)) for w in weights)


def _entry(name):
  return registry.get_entry(name)


@pytest.fixture(scope="module")
def segnext_t19():
  """The zoo's SegNeXt-T at 19 classes, built for any input size."""
  return segnext.build_segnext(19, input_size=None,
                               **_entry("segnext_t").defaults)


@pytest.mark.parametrize("variant", ["t", "s", "b", "l"])
def test_parameter_counts_match_spec(variant, request):
  backbone_want, full150_want, full19_want = PARAMS[variant]
  d = _entry(f"segnext_{variant}").defaults
  full150 = full19 = None
  if variant == "t":
    model = request.getfixturevalue("segnext_t19")
    backbone = _count(model.backbone.trainable_weights)
    full19 = _count(model.trainable_weights)
  elif variant == "s":
    model = segnext.build_segnext(150, input_size=(32, 32), **d)
    backbone = _count(model.backbone.trainable_weights)
    full150 = _count(model.trainable_weights)
  else:
    # Building B and L is slow on CPU, so the whole model is built only for
    # T and S, where it is checked to be exactly backbone + head; here the
    # encoder and the heads are built from the same zoo defaults.
    backbone = _count(mscan.MSCAN(
        embed_dims=d["embed_dims"], depths=d["depths"],
        mlp_ratios=d["mlp_ratios"]).trainable_weights)
  heads = {}
  for classes in (150, 19):
    head = light_ham_head.LightHamHead(
        num_classes=classes, channels=d["head_channels"],
        ham_channels=d["head_channels"], rank=d["md_r"])
    head([tf.zeros([1, 4 >> i, 4 >> i, c])
          for i, c in enumerate(d["embed_dims"][1:])])
    heads[classes] = _count(head.trainable_weights)
  for classes, full in ((150, full150), (19, full19)):
    assert full is None or full == backbone + heads[classes]
  full150 = backbone + heads[150]
  full19 = backbone + heads[19]
  # The architecture is the official one: the counts are exact (the README
  # states the 150-class figures as equal to the published tables).
  assert (backbone, full150, full19) == (backbone_want, full150_want,
                                         full19_want), variant


def _t(a):
  return torch.tensor(np.asarray(a), dtype=torch.float64)


def _conv(x, layer, groups=1, stride=1, padding=None):
  if groups == 1:
    kernel = _t(layer.kernel.numpy().transpose(3, 2, 0, 1))
  else:
    kernel = _t(layer.depthwise_kernel.numpy().transpose(2, 3, 0, 1))
  kh, kw = kernel.shape[2:]
  if padding is None:
    padding = (kh // 2, kw // 2)
  return F.conv2d(x, kernel, _t(layer.bias.numpy()), stride=stride,
                  padding=padding, groups=groups)


def _bn(x, bn):
  return F.batch_norm(x, _t(bn.moving_mean.numpy()),
                      _t(bn.moving_variance.numpy()), _t(bn.gamma.numpy()),
                      _t(bn.beta.numpy()), training=False, eps=bn.epsilon)


def _block(block, x):
  c = x.shape[1]
  y = _bn(x, block.attn_norm)
  shortcut = y
  y = F.gelu(_conv(y, block.attn_proj_in))
  m = block.msca
  a = _conv(y, m.base_conv, groups=c)
  total = a
  for conv_row, conv_col in m.strip_convs:
    total = total + _conv(_conv(a, conv_row, c), conv_col, c)
  y = _conv(_conv(total, m.mix_conv) * y, block.attn_proj_out) + shortcut
  x = x + _t(block.attn_layer_scale.numpy())[None, :, None, None] * y
  y = _conv(_bn(x, block.mlp_norm), block.mlp_fc1)
  y = F.gelu(_conv(y, block.mlp_dwconv, groups=y.shape[1]))
  y = _conv(y, block.mlp_fc2)
  return x + _t(block.mlp_layer_scale.numpy())[None, :, None, None] * y


def _torch_mscan(model, x, depths):
  """MSCAN in inference with torch ops (PyTorch padding=1 strided convs)."""
  get = model.get_layer
  outputs = []
  for stage in range(1, 5):
    p = f"stage{stage}"
    if stage == 1:
      x = F.gelu(_bn(_conv(x, get(f"{p}_stem_conv1"), stride=2, padding=1),
                     get(f"{p}_stem_bn1")))
      x = _bn(_conv(x, get(f"{p}_stem_conv2"), stride=2, padding=1),
              get(f"{p}_stem_bn2"))
    else:
      x = _bn(_conv(x, get(f"{p}_embed_conv"), stride=2, padding=1),
              get(f"{p}_embed_bn"))
    for b in range(depths[stage - 1]):
      x = _block(get(f"{p}_block{b + 1}"), x)
    ln = get(f"{p}_norm")
    x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],),
                     _t(ln.gamma.numpy()), _t(ln.beta.numpy()),
                     eps=ln.epsilon).permute(0, 3, 1, 2)
    outputs.append(x)
  return outputs


@pytest.fixture
def one_torch_thread():
  # Tiny convolutions: more threads only spin and compete with TensorFlow.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def test_mscan_matches_torch_reference(one_torch_thread):
  del one_torch_thread
  rng = np.random.default_rng(0)
  depths = (1, 2, 1, 1)
  model = mscan.MSCAN(embed_dims=(8, 16, 16, 24), depths=depths,
                      mlp_ratios=(2, 2, 2, 2))
  for w in model.weights:
    shape = w.shape.as_list()
    if "moving_variance" in w.name:
      value = rng.uniform(0.5, 1.5, shape)
    elif "gamma" in w.name:
      value = rng.normal(1.0, 0.2, shape)
    elif "layer_scale" in w.name:
      value = rng.normal(0.5, 0.1, shape)
    else:
      value = rng.normal(0.0, 0.2, shape)
    w.assign(value.astype(np.float32))
  # Odd and even sizes: strided convs pad one pixel on each side.
  for h, w in [(19, 23), (16, 18)]:
    x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
    got = model(x, training=False)
    want = _torch_mscan(model, _t(x).permute(0, 3, 1, 2), depths)
    for level, ref in zip(["2", "3", "4", "5"], want):
      ref = ref.permute(0, 2, 3, 1).numpy()
      stride = 2 ** int(level)
      assert ref.shape[1:3] == (-(-h // stride), -(-w // stride))
      np.testing.assert_allclose(got[level].numpy(), ref, rtol=1e-4,
                                 atol=1e-4)


@pytest.fixture(scope="module")
def tiny():
  return segnext.build_segnext(
      5, embed_dims=(8, 16, 32, 32), depths=(1, 1, 1, 1),
      mlp_ratios=(2, 2, 2, 2), head_channels=32, md_r=4, norm_groups=8,
      nmf_seed=3, one_step_gradient=False)


def test_forward_odd_size_unknown_hw_under_tf_function(segnext_t19):
  model = segnext_t19
  fn = tf.function(lambda x: model(x, training=False),
                   input_signature=[tf.TensorSpec([None, None, None, 3])])
  out = fn(tf.random.normal([1, 65, 97, 3]))
  assert set(out) == {"semantic_logits"}
  assert out["semantic_logits"].shape == (1, 65, 97, 19)
  assert out["semantic_logits"].dtype == tf.float32
  assert np.all(np.isfinite(out["semantic_logits"].numpy()))
  assert fn(tf.random.normal([2, 33, 40, 3]))["semantic_logits"].shape == (
      2, 33, 40, 19)


def test_training_flag_reaches_nmf(tiny, monkeypatch):
  nmf = tiny.decode_head.hamburger.nmf
  seen = []
  original = nmf.factorize

  def spy(x, bases, steps):
    seen.append(steps)
    return original(x, bases, steps)

  monkeypatch.setattr(nmf, "factorize", spy)
  x = tf.random.normal([2, 40, 24, 3])
  tiny(x, training=True)
  tiny(x, training=False)
  tiny(x)
  assert seen == [6, 7, 7]


def test_seeded_model_is_deterministic_and_config_round_trips(tiny):
  x = tf.random.normal([1, 48, 41, 3])
  a = tiny(x)["semantic_logits"].numpy()
  np.testing.assert_array_equal(a, tiny(x)["semantic_logits"].numpy())
  # Fresh random NMF bases per call unless a seed is given.
  assert inspect.signature(segnext.SegNeXt).parameters[
      "nmf_seed"].default is None
  clone = segnext.SegNeXt.from_config(tiny.get_config())
  clone.build((None, None, None, 3))
  clone.set_weights(tiny.get_weights())
  np.testing.assert_allclose(clone(x)["semantic_logits"].numpy(), a,
                             atol=1e-5)


def test_zoo_entries_and_errors():
  assert {"segnext_t", "segnext_s", "segnext_b", "segnext_l"} <= set(
      registry.list_models("semantic"))
  for variant, (channels, rank) in {"t": (256, 16), "s": (256, 16),
                                    "b": (512, 64), "l": (1024, 64)}.items():
    entry = _entry(f"segnext_{variant}")
    assert entry.task == "semantic"
    assert entry.defaults["head_channels"] == channels
    assert entry.defaults["md_r"] == rank
    assert tuple(entry.defaults["depths"]) == tuple(
        mscan.MSCAN_SPECS[variant]["depths"])
  with pytest.raises(ValueError, match="input_size"):
    segnext.build_segnext(3, input_size=(64,))
  with pytest.raises(ValueError, match="num_classes"):
    segnext.build_segnext(0)
  with pytest.raises(ValueError, match="variant"):
    mscan.build_mscan("xl")
  with pytest.raises(ValueError, match="depths"):
    mscan.MSCAN(depths=(1, 2, 3))
