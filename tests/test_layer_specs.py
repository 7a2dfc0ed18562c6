"""The backend-free sub-layer plans of the twin layers (layer_specs)."""

import types

import pytest

from axial_deeplab_tf import layer_specs


def test_make_sublayers_sets_each_attribute_from_its_factory():
  made = []

  def factory(name, **arguments):
    made.append((name, arguments))
    return (name, arguments)

  layer = types.SimpleNamespace()
  layer_specs.make_sublayers(layer, (
      layer_specs.SubLayer("a", "x", {"k": 1}),
      layer_specs.SubLayer("_b", "x", {}, name="b"),
      layer_specs.SubLayer("c", None, {"ignored": 2})), {"x": factory})
  assert layer.a == ("a", {"k": 1})
  assert layer._b == ("b", {})  # pylint: disable=protected-access
  assert layer.c is None
  assert made == [("a", {"k": 1}), ("b", {})]


def test_hamburger_plan_checks_the_groups_against_the_channels():
  arguments = {"norm_groups": 32, "norm_epsilon": 1e-5}
  plan = layer_specs.hamburger_sublayers(arguments, 64)
  assert [(s.attribute, s.kind) for s in plan] == [
      ("lower_bread", "conv"), ("upper_bread", "conv"),
      ("upper_norm", "group_norm")]
  assert plan[0].arguments["use_bias"] and not plan[1].arguments["use_bias"]
  assert plan[2].arguments == {"groups": 32, "epsilon": 1e-5}
  with pytest.raises(ValueError, match=r"norm_groups \(32\) must divide "
                     r"the channels \(48\)"):
    layer_specs.hamburger_sublayers(arguments, 48)


@pytest.mark.parametrize("strides,pool", [(1, None), (2, "average_pool")])
def test_axial_2d_plan_pools_only_with_strides(strides, pool):
  arguments = {name: None for name in layer_specs._AXIAL_SHARED}  # pylint: disable=protected-access
  arguments.update(span=(5, 7), max_length=(9, 11), strides=strides)
  plan = {s.attribute: s for s in
          layer_specs.axial_attention_2d_sublayers(arguments)}
  assert plan["height_attention"].arguments["span"] == 5
  assert plan["width_attention"].arguments["max_length"] == 11
  assert plan["_pool"].kind == pool and plan["_pool"].name == "pool"


def test_generic_factories_pass_the_plan_arguments_to_the_layer_class():
  calls = {}

  class Recorder:

    def __getattr__(self, class_name):
      return lambda **kw: calls.setdefault(class_name, kw)

  factories = layer_specs.generic_sublayer_factories(Recorder())
  factories["average_pool"](name="p", pool_size=2)
  factories["group_norm"](name="g", groups=4, epsilon=1e-5)
  factories["spatial_dropout"](name="d", rate=0.1)
  assert calls == {
      "AveragePooling2D": dict(name="p", pool_size=2, strides=2,
                               padding="same"),
      "GroupNormalization": dict(name="g", groups=4, epsilon=1e-5,
                                 dtype="float32"),
      "SpatialDropout2D": dict(name="d", rate=0.1)}
