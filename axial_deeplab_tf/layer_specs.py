"""Argument lists of the layers, shared by the tf_keras and Keras 3 twins.

Each layer that exists in both families (`axial_deeplab_tf.layers` and
`axial_deeplab_tf.keras_layers`) has one spec here: a function whose
signature is the layer's argument list (without `**kwargs`), which checks
the arguments and returns them normalised, in get_config order. Both twins
decorate their constructor with the spec (`LayerSpec.constructor`), so the
defaults, the checks and the config keys have one definition, and
`inspect.signature(Layer.__init__)` shows the real arguments. Initializer and
regularizer arguments are named in the spec and turned into (and back from)
objects by the family's own Keras, through the `load` / `dump` functions the
family passes in. Nothing here imports TensorFlow, tf_keras or Keras.
"""

import inspect
import types
from typing import (Any, Callable, Dict, Mapping, NamedTuple, Optional,
                    Sequence, Tuple, Union)

from axial_deeplab_tf import attention_math as am

INITIALIZER = "initializer"
REGULARIZER = "regularizer"
# An initializer argument kept as given (a name, a config, an object or None:
# the layer resolves it when it builds); get_config holds names and configs
# as they are and objects as their config.
AS_GIVEN = "as_given"
# An initializer whose None means the family's SegNeXt default (the load
# function gets the default from `defaults` of `LayerSpec.constructor`).
HE_FAN_OUT = "he_fan_out_initializer"

# load(kind, value) -> object of that family's Keras; dump(kind, obj) -> its
# config (None for None).
Loader = Callable[[str, Any], Any]


class LayerSpec:
  """A layer's argument list: binding, checks, normalisation and config."""

  def __init__(self, check: Callable[..., Dict[str, Any]],
               objects: Mapping[str, str]):
    self.check = check
    self.name = check.__name__
    self.signature = inspect.signature(check)
    self.objects = dict(objects)

  def bind(self, args: Sequence[Any], kwargs: Dict[str, Any]
          ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Splits a constructor call into (checked arguments, other kwargs)."""
    names = self.signature.parameters
    own = {k: v for k, v in kwargs.items() if k in names}
    rest = {k: v for k, v in kwargs.items() if k not in names}
    bound = self.signature.bind(*args, **own)
    bound.apply_defaults()
    return self.check(**bound.arguments), rest

  def init_signature(self) -> inspect.Signature:
    """(self, <the arguments>, **kwargs): the constructor's signature."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [inspect.Parameter("self", kind),
         *self.signature.parameters.values(),
         inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])

  def constructor(self, load: Loader,
                  defaults: Optional[Mapping[str, Callable[[], Any]]] = None):
    """Decorator of `__init__(self, arguments, **kwargs)`.

    The decorated constructor takes the layer's real arguments (positional
    or keyword); `arguments` is the dict the spec returns, with the
    initializer / regularizer entries loaded as objects (None replaced by
    `defaults[kind]()` where the kind has a default).
    """
    defaults = dict(defaults or {})
    spec = self

    def decorate(init):
      def __init__(self, *args, **kwargs):
        arguments, rest = spec.bind(args, kwargs)
        for name, kind in spec.objects.items():
          value = arguments[name]
          if kind == AS_GIVEN:
            continue
          if value is None and kind in defaults:
            value = defaults[kind]()
          arguments[name] = load(kind, value)
        init(self, arguments, **rest)

      __init__.__name__ = init.__name__
      __init__.__qualname__ = init.__qualname__
      __init__.__doc__ = init.__doc__ or spec.check.__doc__
      __init__.__signature__ = spec.init_signature()
      return __init__

    return decorate

  def config(self, arguments: Mapping[str, Any], dump: Loader
            ) -> Dict[str, Any]:
    """get_config entries of `arguments` (objects dumped as configs)."""
    return {name: (dump(self.objects[name], value)
                   if name in self.objects else value)
            for name, value in arguments.items()}


def spec(**objects: str):
  """Makes a check function a LayerSpec; `objects` name its object args."""
  return lambda check: LayerSpec(check, objects)


def store(layer, arguments: Mapping[str, Any], **derived: Any) -> None:
  """Keeps `arguments` for get_config (`layer._arguments`, read-only, so
  neither Keras tracks it) and sets `layer._<name>` for every argument and
  every `derived` value."""
  layer._arguments = types.MappingProxyType(dict(arguments))  # pylint: disable=protected-access
  for name, value in dict(arguments, **derived).items():
    setattr(layer, "_" + name, value)


class SubLayer(NamedTuple):
  """One sub-layer in a twin layer's plan.

  attribute: where the layer keeps it; kind: what it is (a key of the
  family's factories); arguments: the factory's keyword arguments (the
  sub-layer's `name` comes from the plan, not from here).
  """
  attribute: str
  kind: Optional[str]  # None: the attribute is set to None
  arguments: Mapping[str, Any]
  name: Optional[str] = None  # the Keras layer name; default: attribute


def make_sublayers(layer, plan: Sequence[SubLayer],
                   factories: Mapping[str, Callable[..., Any]]) -> None:
  """Creates every sub-layer of `plan` with the family's `factories` and
  sets it as `layer.<attribute>` (None for an entry of kind None)."""
  for sub in plan:
    setattr(layer, sub.attribute, None if sub.kind is None else
            factories[sub.kind](name=sub.name or sub.attribute,
                                **sub.arguments))


def set_up(layer, arguments: Mapping[str, Any], plan: Sequence[SubLayer],
           factories: Mapping[str, Callable[..., Any]]) -> None:
  """A twin constructor's body after Layer.__init__: `store` the arguments,
  then `make_sublayers` of `plan`."""
  store(layer, arguments)
  make_sublayers(layer, plan, factories)


# The plan kinds every family makes the same way: kind -> (the Keras layer
# class name, which tf_keras and Keras 3 share, and its arguments from the
# plan's). Group statistics of float16/bfloat16 activations lose precision,
# so group norms run in float32 whatever the global policy.
_GENERIC_SUBLAYERS = {
    "average_pool": ("AveragePooling2D", lambda pool_size: dict(
        pool_size=pool_size, strides=pool_size, padding="same")),
    "group_norm": ("GroupNormalization", lambda groups, epsilon: dict(
        groups=groups, epsilon=epsilon, dtype="float32")),
    "spatial_dropout": ("SpatialDropout2D", lambda rate: dict(rate=rate)),
}


def generic_sublayer_factories(layers_module) -> Dict[str, Callable[..., Any]]:
  """Factories of the generic plan kinds from a family's `layers` module
  (`tf_keras.layers` or `keras.layers`)."""

  def factory(class_name, arguments):
    return lambda name, **plan: getattr(layers_module, class_name)(
        name=name, **arguments(**plan))

  return {kind: factory(*entry) for kind, entry in _GENERIC_SUBLAYERS.items()}


def config_mixin(dump: Loader) -> type:
  """A mixin class whose get_config adds `self._spec.config(
  self._arguments, dump)` to the base class's (put it before the Keras
  layer class; `store` sets `_arguments`, the layer class `_spec`)."""

  class SpecConfig:
    """get_config from the layer's spec and stored arguments."""

    def get_config(self) -> Dict[str, Any]:
      config = super().get_config()
      config.update(self._spec.config(self._arguments, dump))  # pylint: disable=protected-access
      return config

  return SpecConfig


_WEIGHTS = dict(kernel_initializer=INITIALIZER,
                kernel_regularizer=REGULARIZER,
                bias_regularizer=REGULARIZER)


# ------------------------------------------------------ 2D self-attention
def _attention_2d(key_depth, value_depth, num_heads, strides):
  am.check_attention_depths(num_heads, key_depth, value_depth)
  am.check_positive_int("strides", strides)
  return dict(key_depth=int(key_depth), value_depth=int(value_depth),
              num_heads=int(num_heads), strides=int(strides))


def _norm(use_sync_bn, norm_momentum, norm_epsilon):
  return dict(use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
              norm_epsilon=norm_epsilon)


@spec(kernel_regularizer=REGULARIZER)
def local_self_attention_2d(key_depth: int,
                            value_depth: int,
                            num_heads: int = 8,
                            kernel_size: int = 7,
                            use_relative_position: bool = True,
                            position_sensitive: bool = False,
                            strides: int = 1,
                            block_size: int = 4,
                            kernel_regularizer=None,
                            use_sync_bn: bool = False,
                            norm_momentum: float = 0.99,
                            norm_epsilon: float = 0.001):
  """Local 2D self-attention (SASA / PS-SASA) arguments.

  Args:
    key_depth: total query/key depth over all heads; divisible by
      num_heads (and the per-head depth even when use_relative_position).
    value_depth: total value (= output) depth over all heads; divisible by
      num_heads (per-head depth even when position_sensitive).
    num_heads: number of attention heads.
    kernel_size: odd window size k; each pixel attends to k x k pixels.
    use_relative_position: add the query-dependent relative position logit
      (SASA). Positional embeddings are shared by all heads.
    position_sensitive: also add the key-dependent logit and the
      value-dependent output term, with a batch norm per logit term and
      per output term (Axial-DeepLab's position-sensitive attention).
      Requires use_relative_position.
    strides: output stride; > 1 average-pools (pool = stride, 'same'
      padding, so the output is ceil(H / s) x ceil(W / s)) after attention.
    block_size: query block side of the tf_keras implementation; changes
      speed, memory and executed multiply-adds, never the result (kept in
      the Keras 3 config for interchange).
    kernel_regularizer: regulariser of the q/k/v projection kernel.
    use_sync_bn: use synchronised batch norm across replicas.
    norm_momentum: batch-norm moving-average momentum.
    norm_epsilon: batch-norm epsilon.
  """
  shared = _attention_2d(key_depth, value_depth, num_heads, strides)
  am.check_positive_int("kernel_size", kernel_size)
  if kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be odd so the window is centred on "
                     f"the query, got {kernel_size}.")
  am.check_positive_int("block_size", block_size)
  if position_sensitive and not use_relative_position:
    raise ValueError("position_sensitive=True adds relative-position terms "
                     "and needs use_relative_position=True, got "
                     "use_relative_position=False.")
  if use_relative_position:
    am.check_even_head_depth("key_depth", key_depth, num_heads,
                             "use_relative_position")
  if position_sensitive:
    am.check_even_head_depth("value_depth", value_depth, num_heads,
                             "position_sensitive")
  return dict(shared, kernel_regularizer=kernel_regularizer,
              **_norm(use_sync_bn, norm_momentum, norm_epsilon),
              kernel_size=int(kernel_size),
              use_relative_position=bool(use_relative_position),
              position_sensitive=bool(position_sensitive),
              block_size=int(block_size))


@spec(kernel_regularizer=REGULARIZER)
def global_self_attention_2d(
    key_depth: int, value_depth: int, num_heads: int = 8,
    use_relative_position: bool = False,
    relative_span: Optional[Sequence[int]] = None, strides: int = 1,
    use_output_projection: bool = False, kernel_regularizer=None,
    use_sync_bn: bool = False, norm_momentum: float = 0.99,
    norm_epsilon: float = 0.001):
  """Global 2D self-attention (non-local) arguments.

  Args:
    key_depth, value_depth, num_heads, strides, kernel_regularizer,
      use_sync_bn, norm_momentum, norm_epsilon: as
      `local_self_attention_2d` (the key depth per head is even when
      use_relative_position).
    use_relative_position: add a query-dependent relative-position logit:
      half of each head's query channels meet an embedding of the row
      offset, half one of the column offset (tables shared by all heads).
    relative_span: (max_height, max_width), needed iff
      use_relative_position: the tables have 2 * max - 1 rows, and inputs
      larger than this are rejected (by a runtime assertion when the size
      is only known at run time; XLA drops such assertions).
    use_output_projection: apply a 1x1 convolution (value_depth ->
      value_depth, with bias) to the attention output, like the output
      transform of a non-local block.
  """
  shared = _attention_2d(key_depth, value_depth, num_heads, strides)
  if use_relative_position:
    if relative_span is None or len(relative_span) != 2:
      raise ValueError(f"relative_span must be (max_height, max_width) "
                       f"with use_relative_position=True, got "
                       f"{relative_span!r}.")
    for name, value in zip(("relative_span[0]", "relative_span[1]"),
                           relative_span):
      am.check_positive_int(name, value)
    am.check_even_head_depth("key_depth", key_depth, num_heads,
                             "use_relative_position")
    relative_span = [int(v) for v in relative_span]
  elif relative_span is not None:
    raise ValueError(f"relative_span is only used with "
                     f"use_relative_position=True, got relative_span="
                     f"{relative_span!r} and use_relative_position=False.")
  return dict(shared, kernel_regularizer=kernel_regularizer,
              **_norm(use_sync_bn, norm_momentum, norm_epsilon),
              use_relative_position=bool(use_relative_position),
              relative_span=relative_span,
              use_output_projection=bool(use_output_projection))


# ------------------------------------------------------------------- ISSA
ISSA_ACTIVATIONS = ("relu", "leaky_relu")


@spec(**_WEIGHTS)
def issa_block(key_channels: int = 256,
               value_channels: Optional[int] = None,
               output_channels: Optional[int] = None,
               activation: str = "relu",
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_initializer: Any = "he_normal",
               kernel_regularizer=None,
               bias_regularizer=None,
               value_use_bias: bool = True):
  """ISSASelfAttentionBlock arguments.

  Args:
    key_channels: channels of queries and keys.
    value_channels: channels of values; None = input channels.
    output_channels: channels of the output; None = input channels.
    activation: "relu" (mmsegmentation) or "leaky_relu" (slope 0.01, the
      official ISSA code's in-place ABN).
    use_sync_bn: synchronise BN statistics across replicas.
    norm_momentum: BN moving-average momentum (Keras convention).
    norm_epsilon: BN epsilon.
    kernel_initializer: conv kernel initializer.
    kernel_regularizer: optional regularizer of the conv kernels.
    bias_regularizer: optional regularizer of the value conv bias.
    value_use_bias: give the value conv a bias (True, mmsegmentation) or
      not (False, the official ISSA code).
  """
  am.check_bool("value_use_bias", value_use_bias)
  return dict(
      key_channels=am.check_positive_int("key_channels", key_channels),
      value_channels=am.check_positive_int("value_channels", value_channels,
                                           allow_none=True),
      output_channels=am.check_positive_int("output_channels",
                                            output_channels, allow_none=True),
      activation=am.check_choice("activation", activation, ISSA_ACTIVATIONS),
      **_norm(use_sync_bn, norm_momentum, norm_epsilon),
      kernel_initializer=kernel_initializer,
      kernel_regularizer=kernel_regularizer,
      bias_regularizer=bias_regularizer, value_use_bias=value_use_bias)


def _issa(key_channels: int = 256,
          value_channels: Optional[int] = None,
          output_channels: Optional[int] = None,
          partition_factors: Sequence[int] = (8, 8),
          **block):
  """InterlacedSparseSelfAttention arguments: those of `issa_block` (used
  by both passes) and partition_factors, (P_h, P_w), the cell size of the
  short-range pass (equivalently the stride of the long-range grids)."""
  factors = am.check_partition_factors(partition_factors)
  arguments = issa_block.check(key_channels, value_channels,
                               output_channels, **block)
  arguments["partition_factors"] = list(factors)
  return arguments


_issa.__signature__ = inspect.Signature(
    list(issa_block.signature.parameters.values())[:3] +
    [inspect.Parameter("partition_factors",
                       inspect.Parameter.POSITIONAL_OR_KEYWORD,
                       default=(8, 8), annotation=Sequence[int])] +
    list(issa_block.signature.parameters.values())[3:])
interlaced_sparse_self_attention = LayerSpec(_issa, _WEIGHTS)


def issa_block_arguments(arguments: Mapping[str, Any]) -> Dict[str, Any]:
  """The arguments of both ISSA passes out of the ISSA layer's."""
  return {k: v for k, v in arguments.items() if k != "partition_factors"}


def issa_sublayers(arguments: Mapping[str, Any]) -> Tuple[SubLayer, ...]:
  """InterlacedSparseSelfAttention's two passes ("issa_block")."""
  block = issa_block_arguments(arguments)
  return (SubLayer("long_range", "issa_block", block),
          SubLayer("short_range", "issa_block", block))


# ------------------------------------------------------------------ axial
def _listed(value):
  """A (height, width) tuple as the list a config holds; else as given."""
  return list(value) if isinstance(value, tuple) else value


@spec(kernel_initializer=AS_GIVEN, positional_initializer=AS_GIVEN,
      kernel_regularizer=REGULARIZER)
def axial_attention(num_heads: int = 8,
                    key_depth: int = 64,
                    value_depth: int = 128,
                    span: Optional[int] = None,
                    max_length: Optional[int] = None,
                    use_query_positional: bool = True,
                    use_key_positional: bool = True,
                    use_value_positional: bool = True,
                    kernel_initializer=None,
                    positional_initializer=None,
                    kernel_regularizer=None,
                    norm_momentum: float = 0.99,
                    norm_epsilon: float = 1e-3,
                    use_sync_bn: bool = False,
                    block_length: Optional[int] = None,
                    recompute_grad: bool = False):
  """AxialAttention arguments.

  Args:
    num_heads: number of attention heads.
    key_depth: total query/key depth (split over heads).
    value_depth: total value depth (split over heads) = output channels.
    span: None for global attention, or an odd positive int: keys within
      (span - 1) / 2 positions of the query.
    max_length: for global attention, the longest axis the relative tables
      cover (the paper's "global span", e.g. 56). Ignored for local span.
    use_query_positional: add q_l . r^q[m - l] to the similarity.
    use_key_positional: add k_m . r^k[m - l] to the similarity.
    use_value_positional: add sum_m a_lm r^v[m - l] to the output.
    kernel_initializer: for the q/k/v projection; default truncated normal
      with stddev channels^-0.5.
    positional_initializer: for the relative tables; default truncated
      normal with stddev 1.0.
    kernel_regularizer: for the q/k/v projection.
    norm_momentum: batch-norm moving-average momentum.
    norm_epsilon: batch-norm epsilon.
    use_sync_bn: synchronise batch-norm statistics across replicas.
    block_length: query block length of the local (span) computation of the
      tf_keras layer; default (span - 1) / 2, at least 8.
    recompute_grad: recompute the attention maps in the backward pass
      instead of keeping them (saves memory, same results; tf_keras layer).
  """
  am.check_positive_int("num_heads", num_heads)
  am.check_attention_depths(num_heads, key_depth, value_depth)
  am.axial_span_radius(span, max_length)
  am.check_positive_int("block_length", block_length, allow_none=True)
  return dict(
      num_heads=num_heads, key_depth=key_depth, value_depth=value_depth,
      span=span, max_length=max_length if span is None else None,
      use_query_positional=bool(use_query_positional),
      use_key_positional=bool(use_key_positional),
      use_value_positional=bool(use_value_positional),
      kernel_initializer=kernel_initializer,
      positional_initializer=positional_initializer,
      kernel_regularizer=kernel_regularizer, norm_momentum=norm_momentum,
      norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
      block_length=block_length, recompute_grad=recompute_grad)


def axial_attention_sizes(arguments: Mapping[str, Any]) -> Dict[str, int]:
  """Sizes an AxialAttention derives from its arguments: the span radius
  and the numbers of similarity and output terms."""
  return dict(
      radius=am.axial_span_radius(arguments["span"], arguments["max_length"]),
      num_similarity_terms=1 + int(arguments["use_query_positional"]) + int(
          arguments["use_key_positional"]),
      num_output_terms=1 + int(arguments["use_value_positional"]))


class AxialAttentionSizes:
  """`span` and `table_rows` of an AxialAttention (either family)."""

  @property
  def span(self):
    return self._span  # pylint: disable=protected-access

  @property
  def table_rows(self) -> int:
    """Rows of each relative table (2 * radius + 1)."""
    return 2 * self._radius + 1  # pylint: disable=protected-access


_AXIAL_SHARED = ("num_heads", "key_depth", "value_depth",
                 "use_query_positional", "use_key_positional",
                 "use_value_positional", "kernel_regularizer",
                 "norm_momentum", "norm_epsilon", "use_sync_bn",
                 "recompute_grad")


@spec(kernel_regularizer=REGULARIZER)
def axial_attention_2d(num_heads: int = 8,
                       key_depth: int = 64,
                       value_depth: int = 128,
                       span: Union[None, int, Sequence[Optional[int]]] = None,
                       max_length: Union[None, int,
                                         Sequence[Optional[int]]] = None,
                       strides: int = 1,
                       use_query_positional: bool = True,
                       use_key_positional: bool = True,
                       use_value_positional: bool = True,
                       kernel_regularizer=None,
                       norm_momentum: float = 0.99,
                       norm_epsilon: float = 1e-3,
                       use_sync_bn: bool = False,
                       recompute_grad: bool = False):
  """AxialAttention2D arguments.

  Args:
    num_heads, key_depth, value_depth: as `axial_attention`.
    span: None (global), an odd int, or a (height, width) pair of those.
    max_length: for global spans, the (height, width) the relative tables
      cover; an int means both.
    strides: output stride (average pooling after the width layer).
    use_query_positional, use_key_positional, use_value_positional,
    kernel_regularizer, norm_momentum, norm_epsilon, use_sync_bn,
    recompute_grad: as `axial_attention`.
  """
  am.check_positive_int("strides", strides)
  arguments = dict(locals())
  arguments.update(span=_listed(span), max_length=_listed(max_length))
  for length_args in axial_passes(arguments):
    axial_attention.check(**length_args)
  return arguments


def axial_passes(arguments: Mapping[str, Any]) -> Tuple[Dict[str, Any], ...]:
  """AxialAttention arguments of the height and the width pass of an
  AxialAttention2D with `arguments`."""
  shared = {name: arguments[name] for name in _AXIAL_SHARED}
  return tuple(dict(shared, span=span, max_length=length)
               for span, length in zip(am.pair(arguments["span"], "span"),
                                       am.pair(arguments["max_length"],
                                               "max_length")))


def axial_attention_2d_sublayers(arguments: Mapping[str, Any]
                                 ) -> Tuple[SubLayer, ...]:
  """AxialAttention2D's height and width passes ("axial_attention") and,
  the average pool after them (`_pool`: "average_pool" for strides > 1,
  else None)."""
  height, width = axial_passes(arguments)
  plan = (SubLayer("height_attention", "axial_attention", height),
          SubLayer("width_attention", "axial_attention", width))
  strides = arguments["strides"]
  return plan + (SubLayer("_pool", "average_pool" if strides > 1 else None,
                          {"pool_size": strides}, name="pool"),)


ATTENTION_TYPES = ("axial", "local", "global")


@spec(kernel_initializer=AS_GIVEN, kernel_regularizer=REGULARIZER)
def axial_block(
    filters: int, strides: int = 1,
    span: Union[None, int, Sequence[Optional[int]]] = None,
    max_length: Union[None, int, Sequence[Optional[int]]] = None,
    num_heads: int = 8, attention_type: str = "axial", kernel_size: int = 7,
    use_query_positional: bool = True, use_key_positional: bool = True,
    use_value_positional: bool = True, expansion: int = 4,
    drop_path_rate: float = 0.0, kernel_initializer="he_normal",
    kernel_regularizer=None, norm_momentum: float = 0.99,
    norm_epsilon: float = 1e-3, use_sync_bn: bool = False,
    recompute_grad: bool = False):
  """AxialBlock arguments.

  Args:
    filters: block width f (attention key depth; values 2f; output
      expansion * f).
    strides: block stride (applied after attention).
    span, max_length: axial attention span / global table size.
    num_heads: attention heads.
    attention_type: "axial" (position-sensitive axial attention), "local"
      (LocalSelfAttention2D with kernel_size windows; the SASA baseline) or
      "global" (GlobalSelfAttention2D).
    kernel_size: window of "local" attention.
    use_query_positional, use_key_positional, use_value_positional: the
      positional terms (for "local", key/value terms make it
      position-sensitive).
    expansion: output channels = expansion * filters.
    drop_path_rate: stochastic depth rate of the residual branch.
    kernel_initializer, kernel_regularizer: for the 1x1 convolutions.
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.
    recompute_grad: recompute attention maps in the backward pass.
  """
  am.check_positive_int("filters", filters)
  am.check_positive_int("strides", strides)
  am.check_choice("attention_type", attention_type, ATTENTION_TYPES)
  am.check_rate("drop_path_rate", drop_path_rate)
  arguments = dict(locals())
  arguments.update(span=_listed(span), max_length=_listed(max_length))
  return arguments


def axial_block_attention(arguments: Mapping[str, Any]
                         ) -> Tuple[str, Dict[str, Any]]:
  """(attention_type, constructor arguments) of an AxialBlock's attention
  sub-layer "attention" (its key depth is the block width f, its value
  depth 2f)."""
  c = arguments
  f = c["filters"]
  shared = dict(num_heads=c["num_heads"], key_depth=f, value_depth=2 * f,
                kernel_regularizer=c["kernel_regularizer"],
                norm_momentum=c["norm_momentum"],
                norm_epsilon=c["norm_epsilon"],
                use_sync_bn=c["use_sync_bn"], name="attention")
  if c["attention_type"] == "axial":
    return "axial", dict(
        shared, span=c["span"], max_length=c["max_length"],
        strides=c["strides"], use_query_positional=c["use_query_positional"],
        use_key_positional=c["use_key_positional"],
        use_value_positional=c["use_value_positional"],
        recompute_grad=c["recompute_grad"])
  if c["attention_type"] == "local":
    return "local", dict(
        shared, kernel_size=c["kernel_size"], strides=c["strides"],
        position_sensitive=(c["use_key_positional"] or
                            c["use_value_positional"]))
  return "global", shared


# ---------------------------------------------------------------- SegNeXt
_SEGNEXT_WEIGHTS = dict(kernel_initializer=HE_FAN_OUT,
                        kernel_regularizer=REGULARIZER,
                        bias_regularizer=REGULARIZER)


def _check_kernel_sizes(kernel_sizes) -> list:
  if isinstance(kernel_sizes, (str, bytes)) or not isinstance(
      kernel_sizes, Sequence) or not kernel_sizes:
    raise ValueError("kernel_sizes must be a non-empty sequence of odd "
                     f"ints, got {kernel_sizes!r}.")
  return [am.check_odd_positive("kernel_sizes[]", k) for k in kernel_sizes]


@spec(**_SEGNEXT_WEIGHTS)
def multi_scale_conv_attention(kernel_sizes: Sequence[int] = (7, 11, 21),
                               base_kernel_size: int = 5,
                               kernel_initializer: Any = None,
                               kernel_regularizer=None,
                               bias_regularizer=None):
  """MultiScaleConvAttention arguments.

  Args:
    kernel_sizes: odd lengths k of the strip-convolution branches.
    base_kernel_size: odd size of the square depthwise conv applied first.
    kernel_initializer: initializer of all kernels; default
      N(0, sqrt(2 / fan_out)).
    kernel_regularizer: optional regularizer of the kernels.
    bias_regularizer: optional regularizer of the biases.
  """
  return dict(kernel_initializer=kernel_initializer,
              kernel_regularizer=kernel_regularizer,
              bias_regularizer=bias_regularizer,
              kernel_sizes=_check_kernel_sizes(kernel_sizes),
              base_kernel_size=am.check_odd_positive("base_kernel_size",
                                                     base_kernel_size))


@spec(**_SEGNEXT_WEIGHTS)
def mscan_block(mlp_ratio: float = 4.0,
                drop_path_rate: float = 0.0,
                dropout_rate: float = 0.0,
                layer_scale_init_value: float = 1e-2,
                kernel_sizes: Sequence[int] = (7, 11, 21),
                base_kernel_size: int = 5,
                use_sync_bn: bool = False,
                norm_momentum: float = 0.9,
                norm_epsilon: float = 1e-5,
                kernel_initializer: Any = None,
                kernel_regularizer=None,
                bias_regularizer=None):
  """MSCANBlock arguments.

  Args:
    mlp_ratio: hidden width of the MLP as a multiple of the channels.
    drop_path_rate: stochastic depth rate of both residual branches.
    dropout_rate: dropout rate inside the MLP.
    layer_scale_init_value: initial value of the per-channel layer scales.
    kernel_sizes: strip lengths of MSCA.
    base_kernel_size: square depthwise kernel size of MSCA.
    use_sync_bn: synchronise BN statistics across replicas.
    norm_momentum: BN moving-average momentum (Keras convention; PyTorch
      momentum 0.1 is 0.9 here).
    norm_epsilon: BN epsilon.
    kernel_initializer: conv kernel initializer; default
      N(0, sqrt(2 / fan_out)).
    kernel_regularizer: optional regularizer of the conv kernels.
    bias_regularizer: optional regularizer of the conv biases.
  """
  if isinstance(mlp_ratio, bool) or not isinstance(
      mlp_ratio, (int, float)) or mlp_ratio <= 0:
    raise ValueError(f"mlp_ratio must be a positive number, got "
                     f"{mlp_ratio!r}.")
  return dict(
      **_norm(use_sync_bn, norm_momentum, norm_epsilon),
      kernel_initializer=kernel_initializer,
      kernel_regularizer=kernel_regularizer,
      bias_regularizer=bias_regularizer, mlp_ratio=mlp_ratio,
      drop_path_rate=am.check_rate("drop_path_rate", drop_path_rate),
      dropout_rate=am.check_rate("dropout_rate", dropout_rate),
      layer_scale_init_value=float(layer_scale_init_value),
      kernel_sizes=list(kernel_sizes), base_kernel_size=base_kernel_size)


def _check_steps(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(f"{name} must be an int >= 0, got {value!r}.")
  return value


@spec()
def nmf_2d(rank: int = 64, num_channel_groups: int = 1, train_steps: int = 6,
           eval_steps: int = 7, inv_t: float = 1.0,
           one_step_gradient: bool = True, seed: Optional[int] = None,
           epsilon: float = 1e-6):
  """NMF2D arguments.

  Args:
    rank: R, the number of bases.
    num_channel_groups: S; channels are split into S groups of D = C / S
      channels, each factorised on its own (SegNeXt uses S = 1).
    train_steps: update iterations in training.
    eval_steps: update iterations at inference.
    inv_t: inverse temperature of the softmax initialising coef.
    one_step_gradient: if True, gradients flow only through the last coef
      update and the reconstruction (the iterations are treated as
      constants, O(1) memory in the number of steps), as in the original
      Hamburger; if False, through every iteration.
    seed: None draws new random bases in every call. An int makes the bases
      a fixed function of the seed (one draw of [S, D, R] shared by all
      batch elements), so outputs are reproducible and each image's output
      does not depend on the rest of the batch.
    epsilon: added to the denominators of the updates.
  """
  if isinstance(inv_t, bool) or not isinstance(inv_t, (int, float)):
    raise TypeError(f"inv_t must be a number, got {inv_t!r}.")
  if seed is not None and (isinstance(seed, bool) or
                           not isinstance(seed, int)):
    raise TypeError(f"seed must be None or an int, got {seed!r}.")
  if not isinstance(epsilon, (int, float)) or epsilon <= 0:
    raise ValueError(f"epsilon must be a positive number, got {epsilon!r}.")
  return dict(
      rank=am.check_positive_int("rank", rank),
      num_channel_groups=am.check_positive_int("num_channel_groups",
                                               num_channel_groups),
      train_steps=_check_steps("train_steps", train_steps),
      eval_steps=_check_steps("eval_steps", eval_steps),
      inv_t=float(inv_t),
      one_step_gradient=am.check_bool("one_step_gradient",
                                      one_step_gradient),
      seed=seed, epsilon=float(epsilon))


# NMF2D arguments that Hamburger and LightHamHead pass through.
NMF_ARGUMENTS = ("rank", "num_channel_groups", "train_steps", "eval_steps",
                 "inv_t", "one_step_gradient", "seed")


def _nmf_parameters():
  return [p for name, p in nmf_2d.signature.parameters.items()
          if name in NMF_ARGUMENTS]


def _signature(check, *groups):
  """Gives `check(**arguments)` the signature of the listed parameters."""
  check.__signature__ = inspect.Signature(
      [p for group in groups for p in group])
  return check


def _parameters(*specs):
  """Parameters of a template function's signature, by name."""
  return [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                            default=default)
          for name, default in specs]


def _nmf_checked(arguments: Dict[str, Any]) -> Dict[str, Any]:
  nmf = nmf_2d.check(**{k: arguments[k] for k in NMF_ARGUMENTS})
  return {k: nmf[k] for k in NMF_ARGUMENTS}


def _hamburger(**a):
  """Hamburger arguments: NMF2D's rank ... seed (see `nmf_2d`);
  norm_groups (GroupNorm groups, must divide the channels), norm_epsilon
  (GroupNorm epsilon); kernel_initializer (default N(0, sqrt(2 /
  fan_out))), kernel_regularizer, bias_regularizer of the convs."""
  return dict(_nmf_checked(a),
              kernel_initializer=a["kernel_initializer"],
              kernel_regularizer=a["kernel_regularizer"],
              bias_regularizer=a["bias_regularizer"],
              norm_groups=am.check_positive_int("norm_groups",
                                                a["norm_groups"]),
              norm_epsilon=a["norm_epsilon"])


_WEIGHT_PARAMETERS = _parameters(("kernel_initializer", None),
                                 ("kernel_regularizer", None),
                                 ("bias_regularizer", None))
hamburger = LayerSpec(_signature(
    _hamburger, _nmf_parameters(),
    _parameters(("norm_groups", 32), ("norm_epsilon", 1e-5)),
    _WEIGHT_PARAMETERS), _SEGNEXT_WEIGHTS)


def hamburger_nmf(arguments: Mapping[str, Any]) -> Dict[str, Any]:
  """The NMF2D arguments of a Hamburger or LightHamHead."""
  return {k: arguments[k] for k in NMF_ARGUMENTS}


def hamburger_ham(arguments: Mapping[str, Any]) -> Tuple[SubLayer, ...]:
  """The Hamburger's ham, made with the layer: its NMF2D ("nmf")."""
  return (SubLayer("nmf", "nmf", hamburger_nmf(arguments)),)


def hamburger_sublayers(arguments: Mapping[str, Any], channels: int
                        ) -> Tuple[SubLayer, ...]:
  """The Hamburger's breads for `channels` input channels: lower 1x1 conv
  with bias, upper 1x1 conv without, GroupNorm ("conv", "group_norm"; the
  NMF is made with the layer: `hamburger_ham`).

  Raises:
    ValueError: if norm_groups does not divide `channels`.
  """
  groups = arguments["norm_groups"]
  if channels % groups:
    raise ValueError(f"norm_groups ({groups}) must divide the channels "
                     f"({channels}).")
  return (SubLayer("lower_bread", "conv",
                   {"filters": channels, "kernel_size": 1, "use_bias": True}),
          SubLayer("upper_bread", "conv",
                   {"filters": channels, "kernel_size": 1,
                    "use_bias": False}),
          SubLayer("upper_norm", "group_norm",
                   {"groups": groups, "epsilon": arguments["norm_epsilon"]}))


def light_ham_head_sublayers(arguments: Mapping[str, Any]
                             ) -> Tuple[SubLayer, ...]:
  """LightHamHead's layers in order: squeeze (1x1 conv + GroupNorm),
  Hamburger (its NMF and norm arguments; the family adds the weight
  settings), align (1x1 conv + GroupNorm), spatial dropout and the 1x1
  classifier with bias and N(0, 0.01) weights ("classifier")."""
  norm = {"groups": arguments["norm_groups"],
          "epsilon": arguments["norm_epsilon"]}
  return (
      SubLayer("squeeze_conv", "conv", {"filters": arguments["ham_channels"],
                                        "kernel_size": 1, "use_bias": False}),
      SubLayer("squeeze_norm", "group_norm", norm),
      SubLayer("hamburger", "hamburger", dict(
          hamburger_nmf(arguments), norm_groups=arguments["norm_groups"],
          norm_epsilon=arguments["norm_epsilon"])),
      SubLayer("align_conv", "conv", {"filters": arguments["channels"],
                                      "kernel_size": 1, "use_bias": False}),
      SubLayer("align_norm", "group_norm", norm),
      SubLayer("dropout", "spatial_dropout",
               {"rate": arguments["dropout_rate"]}),
      SubLayer("classifier", "classifier",
               {"filters": arguments["num_classes"], "stddev": 0.01}))


def _light_ham_head(**a):
  """LightHamHead arguments: num_classes; channels (width of the align conv,
  the classifier's input); ham_channels (width of the squeeze conv and of
  the Hamburger); NMF2D's rank ... seed (see `nmf_2d`); dropout_rate
  (spatial dropout before the classifier); norm_groups, norm_epsilon
  (GroupNorm); kernel_initializer (of the non-classifier convs; default
  N(0, sqrt(2 / fan_out))), kernel_regularizer, bias_regularizer."""
  checked = dict(
      _nmf_checked(a),
      kernel_initializer=a["kernel_initializer"],
      kernel_regularizer=a["kernel_regularizer"],
      bias_regularizer=a["bias_regularizer"],
      num_classes=am.check_positive_int("num_classes", a["num_classes"]),
      channels=am.check_positive_int("channels", a["channels"]),
      ham_channels=am.check_positive_int("ham_channels", a["ham_channels"]),
      dropout_rate=am.check_rate("dropout_rate", a["dropout_rate"]),
      norm_groups=am.check_positive_int("norm_groups", a["norm_groups"]),
      norm_epsilon=a["norm_epsilon"])
  for name in ("channels", "ham_channels"):
    if checked[name] % checked["norm_groups"]:
      raise ValueError(f"{name} ({checked[name]}) must be divisible by "
                       f"norm_groups ({checked['norm_groups']}).")
  return checked


light_ham_head = LayerSpec(_signature(
    _light_ham_head,
    [inspect.Parameter("num_classes",
                       inspect.Parameter.POSITIONAL_OR_KEYWORD)],
    _parameters(("channels", 256), ("ham_channels", 256)),
    _nmf_parameters(),
    _parameters(("dropout_rate", 0.1), ("norm_groups", 32),
                ("norm_epsilon", 1e-5)),
    _WEIGHT_PARAMETERS), _SEGNEXT_WEIGHTS)


# -------------------------------------------------------------- backbones
AXIAL_RESNET_LAYOUTS = {26: (1, 2, 4, 1), 50: (3, 4, 6, 3),
                        101: (3, 4, 23, 3)}
AXIAL_RESNET_BASE_WIDTHS = (64, 128, 256, 512)
AXIAL_RESNET_STEMS = ("conv", "inception", "axial")


def _ceil_div(a, b):
  return None if a is None else -(-a // b)


def axial_resnet_backbone(
    input_size: Optional[Tuple[Optional[int], Optional[int]]] = (224, 224),
    depth: int = 50, width_multiplier: float = 1.0, stem: str = "conv",
    span: Optional[int] = None, stem_span: int = 15,
    stem_channels: Sequence[int] = (64, 64, 128), output_stride: int = 32,
    attention_type: str = "axial", kernel_size: int = 7,
    block_filters: Optional[Sequence[int]] = None, expansion: int = 4,
    num_heads: int = 8, use_query_positional: bool = True,
    use_key_positional: bool = True, use_value_positional: bool = True,
    drop_path_rate: float = 0.0, norm_momentum: float = 0.99,
    norm_epsilon: float = 1e-3, use_sync_bn: bool = False,
    recompute_grad: bool = False, kernel_regularizer=None,
    name: str = "axial_resnet") -> Dict[str, Any]:
  """Arguments of the Axial-ResNet backbone builders (both families).

  Args:
    input_size: (height, width) the global spans are sized for; entries may
      be None only with a local span.
    depth: 26, 50 or 101 (block layout).
    width_multiplier: S 0.5, M 0.75, L 1.0, XL 2.0.
    stem: "conv", "inception" or "axial" (see module docstring).
    span: None for global attention, else an odd local span for all blocks.
    stem_span: local span of the "axial" stem blocks.
    stem_channels: channels of the three "inception" stem convolutions.
    output_stride: 32, or 16 to remove the stride of the last stage.
    attention_type: "axial", "local" (SASA windows) or "global".
    kernel_size: window of "local" attention.
    block_filters: per-stage block widths f (default base widths times the
      width multiplier).
    expansion: output channels per block = expansion * f.
    num_heads: attention heads.
    use_query_positional, use_key_positional, use_value_positional: the
      positional terms of the attention.
    drop_path_rate: final stochastic-depth rate, linear over blocks.
    norm_momentum, norm_epsilon, use_sync_bn: batch norm settings.
    recompute_grad: recompute attention maps in the backward pass.
    kernel_regularizer: for convolutions.
    name: model name.

  """
  return dict(locals())


def builder(arguments: Callable[..., Dict[str, Any]],
            without: Sequence[str] = ()):
  """Decorator of `build(arguments_dict)`: the decorated function takes the
  parameters of `arguments` (less `without`, which keep their defaults),
  positional or keyword, and has their signature."""
  signature = inspect.signature(arguments)
  signature = signature.replace(
      parameters=[p for name, p in signature.parameters.items()
                  if name not in without],
      return_annotation=inspect.Signature.empty)

  def decorate(build):
    def wrapper(*args, **kwargs):
      bound = signature.bind(*args, **kwargs)
      return build(arguments(**bound.arguments))

    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
      setattr(wrapper, attr, getattr(build, attr))
    wrapper.__signature__ = signature
    return wrapper

  return decorate


def axial_resnet_plan(input_size=(224, 224), depth: int = 50,
                      width_multiplier: float = 1.0, stem: str = "conv",
                      span: Optional[int] = None, stem_span: int = 15,
                      stem_channels: Sequence[int] = (64, 64, 128),
                      output_stride: int = 32, attention_type: str = "axial",
                      block_filters: Optional[Sequence[int]] = None,
                      drop_path_rate: float = 0.0, **block_args):
  """Checks an Axial-ResNet backbone's arguments and lays out its blocks.

  Args (the builders' arguments, see `modeling.backbones.axial_resnet`):
    input_size, depth, width_multiplier, stem, span, stem_span,
    stem_channels, output_stride, attention_type, block_filters,
    drop_path_rate: as the builders.
    **block_args: AxialBlock arguments every block takes (num_heads,
      kernel_size, expansion, the positional terms, the norm settings,
      kernel_regularizer, ...).

  Returns:
    dict: "height", "width" (None where unknown), "stem_width" (the conv
    stem's channels), "stem_blocks" (AxialBlock arguments with names of the
    "axial" stem, else empty), "stages": [(endpoint name, [AxialBlock
    arguments with names])].
  """
  if depth not in AXIAL_RESNET_LAYOUTS:
    raise ValueError(f"depth must be one of {sorted(AXIAL_RESNET_LAYOUTS)}, "
                     f"got {depth!r}.")
  am.check_choice("stem", stem, AXIAL_RESNET_STEMS)
  am.check_choice("output_stride", output_stride, (16, 32))
  if width_multiplier <= 0:
    raise ValueError(f"width_multiplier must be positive, got "
                     f"{width_multiplier!r}.")
  if stem == "inception" and len(stem_channels) != 3:
    raise ValueError(f"stem_channels must have 3 entries, got "
                     f"{stem_channels!r}.")
  height, width = input_size if input_size is not None else (None, None)
  if span is None and attention_type == "axial" and (height is None or
                                                     width is None):
    raise ValueError("Global attention (span=None) needs a known input_size "
                     f"(height, width); got {input_size!r}. Use a local span "
                     "for inputs of any size.")
  layout = AXIAL_RESNET_LAYOUTS[depth]
  if block_filters is None:
    block_filters = [int(round(w * width_multiplier))
                     for w in AXIAL_RESNET_BASE_WIDTHS]
  block_args = dict(block_args, attention_type=attention_type)
  stem_width = int(round(64 * width_multiplier))
  stem_blocks = []
  if stem == "axial":
    # Attention depths split over the heads: round up to a multiple of them
    # (the 0.75-width stem would otherwise have 12 channels for 8 heads).
    heads = block_args.get("num_heads", 8)
    stem_filters = -(-max(stem_width // block_args.get("expansion", 4), 1)
                     // heads) * heads
    stem_blocks = [dict(block_args, attention_type="axial",
                        filters=stem_filters, strides=2 if i == 0 else 1,
                        span=stem_span, name=f"stem_block{i + 1}")
                   for i in range(3)]
  stages = []
  current_h, current_w = _ceil_div(height, 4), _ceil_div(width, 4)
  total_blocks, block_index = sum(layout), 0
  for stage, (num_blocks, filters) in enumerate(zip(layout, block_filters)):
    stage_stride = 1 if stage == 0 or (stage == 3 and
                                       output_stride == 16) else 2
    blocks = []
    for i in range(num_blocks):
      strides = stage_stride if i == 0 else 1
      max_length = None
      if span is None and attention_type == "axial":
        max_length = (current_h, current_w)
      blocks.append(dict(
          block_args, filters=filters, strides=strides, span=span,
          max_length=max_length,
          drop_path_rate=drop_path_rate * block_index / max(total_blocks - 1,
                                                            1),
          name=f"res{stage + 2}_block{i + 1}"))
      current_h = _ceil_div(current_h, strides)
      current_w = _ceil_div(current_w, strides)
      block_index += 1
    stages.append((f"res{stage + 2}", blocks))
  return dict(height=height, width=width, stem_width=stem_width,
              stem_blocks=stem_blocks, stages=stages)
