r"""Scale stress test: PQ of trained panoptic models at other input sizes.

Evaluates a model trained with `axial-deeplab train` (its gin files and model_dir)
on whole validation images resized to each --resolutions entry (longer side
S, or HxW), optionally against a second model (the relative change of the
Axial-DeepLab paper, figure 4), and writes a JSON report, a PNG plot and,
if asked, a "## Scale stress test" section of a Markdown file.

  axial-deeplab scale-stress \
      --gin_file=stress/axial_deeplab --model_dir=/tmp/stress/axial \
      --baseline_gin_file=stress/panoptic_deeplab_conv \
      --baseline_model_dir=/tmp/stress/conv \
      --gin_param="eval/data.input_path='/tmp/stress/tfrecord/val-*'" \
      --resolutions=64,96,128,192,256 --output_json=/tmp/stress/report.json \
      --output_png=/tmp/stress/report.png

--gin_param applies to both models; --baseline_gin_param to the baseline
only (after --gin_param). The evaluation data default to the model's
eval/data.input_path.
"""

import json
import os
import sys

from absl import app
from absl import flags

flags.DEFINE_multi_string("gin_file", [], "Gin file(s) of the model under "
                          "test (model A).")
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings for both "
                          "models.")
flags.DEFINE_string("model_dir", None, "Training model_dir of model A (its "
                    "latest checkpoint is used).")
flags.DEFINE_string("checkpoint", None, "Checkpoint of model A instead of "
                    "--model_dir.")
flags.DEFINE_string("name", None, "Name of model A in the report (default: "
                    "its zoo name).")
flags.DEFINE_multi_string("baseline_gin_file", [], "Gin file(s) of the "
                          "baseline (model B); none: no comparison.")
flags.DEFINE_multi_string("baseline_gin_param", [], "Extra gin bindings for "
                          "model B only.")
flags.DEFINE_string("baseline_model_dir", None, "Training model_dir of B.")
flags.DEFINE_string("baseline_checkpoint", None, "Checkpoint of B instead "
                    "of --baseline_model_dir.")
flags.DEFINE_string("baseline_name", None, "Name of model B in the report.")
flags.DEFINE_string("data_pattern", None, "Evaluation TFRecords (default: "
                    "model A's eval/data.input_path).")
flags.DEFINE_string("resolutions", "64,96,128,192,256", "Comma-separated "
                    "test resolutions: S (longer side) or HxW.")
flags.DEFINE_integer("train_resolution", None, "Training input size for the "
                     "report (default: model A's training crop).")
flags.DEFINE_integer("max_images", None, "Evaluate at most this many images.")
flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
flags.DEFINE_bool("antialias", True, "Low-pass filter images when shrinking.")
flags.DEFINE_string("output_json", None, "Report JSON path.")
flags.DEFINE_string("output_png", None, "Plot PNG path.")
flags.DEFINE_string("markdown_file", None, "Markdown file whose section "
                    "--markdown_heading is replaced (created if missing).")
flags.DEFINE_string("markdown_heading", "## Scale stress test",
                    "Heading of the section to write.")
flags.DEFINE_string("notes_file", None, "Markdown text put at the top of the "
                    "section (setup description).")
flags.DEFINE_string("command", "", "Command line quoted in the section.")
FLAGS = flags.FLAGS


def _run():
  """Runs the test from the flags; returns the report."""
  # Imported after flag parsing: TensorFlow start-up is slow.
  from axial_deeplab_tf.benchmarks import report as report_lib
  from axial_deeplab_tf.benchmarks import scale_stress
  if not FLAGS.gin_file:
    raise ValueError("--gin_file is required.")
  if not (FLAGS.output_json or FLAGS.output_png or FLAGS.markdown_file):
    raise ValueError("Nothing to write: give --output_json, --output_png "
                     "and/or --markdown_file.")
  if FLAGS.markdown_file and not FLAGS.output_png:
    raise ValueError("--markdown_file needs --output_png (the section "
                     "links the plot).")
  if FLAGS.baseline_gin_file and not (FLAGS.baseline_model_dir or
                                      FLAGS.baseline_checkpoint):
    raise ValueError("--baseline_gin_file needs --baseline_model_dir or "
                     "--baseline_checkpoint.")
  if not FLAGS.baseline_gin_file and (FLAGS.baseline_model_dir or
                                      FLAGS.baseline_checkpoint):
    raise ValueError("--baseline_model_dir/--baseline_checkpoint need "
                     "--baseline_gin_file.")
  notes = ""
  if FLAGS.notes_file:
    with open(FLAGS.notes_file) as f:
      notes = f.read()
  resolutions = scale_stress.parse_resolutions(FLAGS.resolutions)
  model = scale_stress.load_trained_model(
      FLAGS.gin_file, FLAGS.gin_param, model_dir=FLAGS.model_dir,
      checkpoint=FLAGS.checkpoint, name=FLAGS.name)
  baseline = None
  if FLAGS.baseline_gin_file:
    baseline = scale_stress.load_trained_model(
        FLAGS.baseline_gin_file,
        list(FLAGS.gin_param) + list(FLAGS.baseline_gin_param),
        model_dir=FLAGS.baseline_model_dir,
        checkpoint=FLAGS.baseline_checkpoint, name=FLAGS.baseline_name)
    if baseline.name == model.name:
      raise ValueError(f"Both models are named {model.name!r}; set --name "
                       f"or --baseline_name.")
  data_pattern = (FLAGS.data_pattern or
                  model.experiment.task.validation_data.input_path)
  report = scale_stress.run_scale_stress_test(
      model, data_pattern, resolutions, baseline=baseline,
      max_images=FLAGS.max_images, batch_size=FLAGS.batch_size,
      antialias=FLAGS.antialias, train_resolution=FLAGS.train_resolution)
  if FLAGS.output_json:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_json)),
                exist_ok=True)
    with open(FLAGS.output_json, "w") as f:
      json.dump(scale_stress.to_json_compatible(report), f, indent=1)
  if FLAGS.output_png:
    scale_stress.plot_report(report, FLAGS.output_png)
  if FLAGS.markdown_file:
    plot = os.path.relpath(os.path.abspath(FLAGS.output_png), os.path.dirname(
        os.path.abspath(FLAGS.markdown_file)))
    section = scale_stress.markdown_section(
        report, FLAGS.markdown_heading, plot_path=plot, notes=notes,
        command=FLAGS.command)
    heading, _, body = section.partition("\n")
    report_lib.update_markdown_section(
        FLAGS.markdown_file, scale_stress.section_id(heading), heading, body)
  print(scale_stress.markdown_table(report))
  summary = scale_stress.summarize(report)
  if summary:
    print(summary)
  return report


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  try:
    _run()
  except (ValueError, TypeError, FileNotFoundError) as e:
    message = " ".join(str(e).split())
    print(f"error: {type(e).__name__}: {message}", file=sys.stderr)
    return 2
  return 0
