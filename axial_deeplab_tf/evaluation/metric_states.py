"""The states that `merge_state` of the streaming metrics accepts."""

from typing import Any, Callable, List, Mapping, Optional


def states_to_merge(others: Any, metric_class: type,
                    mismatch: Optional[Callable[[Any], Optional[str]]] = None,
                    required_key: Optional[str] = None
                   ) -> List[Mapping[str, Any]]:
  """The state dicts of `others`: a metric, a state dict or a sequence.

  Args:
    others: a `metric_class` instance, a `get_state()` dict, or a sequence
      of these.
    metric_class: the metric's class.
    mismatch: for a `metric_class` instance, how its configuration differs
      from the merging metric's ("has num_classes=3; expected 5"), or None
      when it fits.
    required_key: a key every state dict must hold.

  Returns:
    One state dict per item, in order.

  Raises:
    ValueError: an instance configured otherwise (`mismatch`).
    TypeError: an item that is neither an instance nor a state dict.
  """
  if isinstance(others, (metric_class, Mapping)):
    others = [others]
  states = []
  for i, other in enumerate(others):
    if isinstance(other, metric_class):
      problem = mismatch(other) if mismatch is not None else None
      if problem:
        raise ValueError(f"others[{i}] {problem}.")
      other = other.get_state()
    if not isinstance(other, Mapping) or (required_key is not None and
                                          required_key not in other):
      what = (f"a dict with {required_key!r}" if required_key is not None
              else "a state dict")
      name = metric_class.__name__
      article = "an" if name[0] in "AEIOU" else "a"
      raise TypeError(f"others[{i}] must be {article} {name} or {what}; got "
                      f"{type(other).__name__}.")
    states.append(other)
  return states
