"""The largest-batch throughput search of the models benchmark suite."""

import pytest
import tensorflow as tf
import tf_keras

from axial_deeplab_tf.benchmarks import benchmark
from axial_deeplab_tf.benchmarks import report


def _tiny_model():
  inputs = tf_keras.Input([None, None, 3])
  x = tf_keras.layers.Conv2D(64, 3, padding="same")(inputs)
  return tf_keras.Model(inputs, tf_keras.layers.Conv2D(8, 1)(x))


def test_search_stops_before_the_budget():
  model = _tiny_model()
  one = benchmark.largest_batch_throughput(model, 48, memory_budget=1,
                                           runs=1, warmup=1)
  assert [t["batch"] for t in one["tried"]] == [1]
  peak = one["tried"][0]["peak_bytes"]
  assert peak >= 48 * 48 * 64 * 4  # The conv's output at least.
  # A budget that admits batch 2 (twice batch 1's peak) but not batch 4.
  found = benchmark.largest_batch_throughput(model, 48,
                                             memory_budget=int(2.5 * peak),
                                             runs=1, warmup=1)
  batches = [t["batch"] for t in found["tried"]]
  assert batches[:2] == [1, 2] and found["batch"] == batches[-1]
  for t in found["tried"][:-1]:
    assert 2 * t["peak_bytes"] <= found["memory_budget"]
  assert found["images_per_s"] == pytest.approx(
      found["batch"] / found["tried"][-1]["seconds"])
  capped = benchmark.largest_batch_throughput(model, 16, memory_budget=2**40,
                                              runs=1, warmup=1, max_batch=4)
  assert [t["batch"] for t in capped["tried"]] == [1, 2, 4]


@pytest.mark.slow
def test_models_suite_reports_the_searched_batch():
  result = benchmark.run_models(names=["resnet_50"], input_size=32, runs=1,
                                warmup=1, xla=[False], dtypes=["float32"],
                                throughput_batch=-1, matmul_size=64,
                                throughput_memory_gib=0.5, log=lambda _: None)
  (case,) = result["models"][0]["cases"]
  assert "error" not in case, case
  assert case["throughput_batch"] == case["throughput_search"][-1]["batch"]
  text = report.markdown_section(result, benchmark.machine_info(), "cmd")
  assert "largest batch within 0.5 GiB" in text
  assert f"(batch {case['throughput_batch']})" in text
  with pytest.raises(ValueError, match="throughput_batch"):
    benchmark.run_models(names=["resnet_50"], throughput_batch=-2)
  with pytest.raises(ValueError, match="throughput_memory_gib"):
    benchmark.run_models(names=["resnet_50"], throughput_batch=-1,
                         throughput_memory_gib=0)
