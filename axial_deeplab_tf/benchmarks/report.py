"""Benchmark reports: plots, BENCHMARKS.md sections, result files.

`write_plots` and `markdown_section` take a result of any suite (those of
`benchmark.py` and of `suites.py`); `update_markdown_section` is the one
writer of BENCHMARKS.md's generated sections, used by the benchmark
command and the scale stress test.
"""

import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from axial_deeplab_tf.benchmarks import benchmark
from axial_deeplab_tf.benchmarks import suites
from axial_deeplab_tf.utils import io as io_lib


def write_plots(result: Dict[str, Any], output_dir: str,
                prefix: Optional[str] = None) -> List[str]:
  """Writes the PNG plots of a suite result; returns their paths.

  Args:
    result: a suite result.
    output_dir: directory of the PNG files.
    prefix: file name prefix (default: the suite name).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(output_dir, exist_ok=True)
  suite = result["suite"]
  prefix = prefix or suite
  paths = []

  def save(fig, name):
    fig.tight_layout()
    path = os.path.join(output_dir, f"{name}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)

  if suite in benchmark.MORE_SUITES:
    return suites.write_plots(result, plt, output_dir, prefix)
  if suite == "layers":
    for quantity, key, unit in (("time", "median_s", "seconds"),
                                ("memory", "peak_bytes", "bytes")):
      fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
      for ax, mode in zip(axes, ("forward", "forward_backward")):
        for kind in dict.fromkeys(c["kind"] for c in result["cases"]):
          pts = [(c["pixels"], c[key]) for c in result["cases"]
                 if c["kind"] == kind and c["mode"] == mode and
                 c[key] is not None and c[key] > 0]
          if not pts:
            continue
          fit = [f for f in result["fits"]
                 if f["kind"] == kind and f["mode"] == mode]
          exponent = fit[0].get(f"{quantity}_exponent") if fit else None
          label = kind if exponent is None else f"{kind} (N^{exponent:.2f})"
          ax.loglog(*zip(*pts), marker="o", label=label)
        ax.set_xlabel("pixels N (square map)")
        ax.set_ylabel(unit)
        ax.set_title(f"{quantity}, {mode.replace('_', '+')}")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
          ax.legend(fontsize=7)
      save(fig, f"{prefix}_{quantity}")
  elif suite == "resnet_ratio":
    fig, ax = plt.subplots(figsize=(6.5, 4))
    labels, values = [], []
    for r in result["results"]:
      labels.append(f"{r['mode'].replace('forward_backward', 'fwd+bwd')}"
                    f"\nxla={'on' if r['xla'] else 'off'}")
      values.append(r["ratio"]["wall_ratio_of_medians"])
    ax.bar(range(len(values)), values, color="tab:blue")
    for name, target in result["targets"].items():
      ax.axhline(target, linestyle="--", alpha=0.6,
                 color="tab:red" if name == "forward" else "tab:orange",
                 label=f"target {name.replace('_', '+')} {target}x")
    ax.axhline(result["madds_ratio"], linestyle=":", color="gray",
               label=f"M-Adds ratio {result['madds_ratio']:.2f}x")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(f"{result['model']} time / ResNet-50 time")
    ax.legend(fontsize=7)
    save(fig, prefix)
  elif suite == "models":
    rows = []
    for m in result["models"]:
      for c in m["cases"]:
        if "error" not in c and not c["xla"] and c["dtype"] == "float32":
          rows.append((m["model"], c["latency_s"] * 1e3))
    if rows:
      fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.5))
      ax.barh([r[0] for r in rows], [r[1] for r in rows])
      ax.set_xscale("log")
      ax.set_xlabel(f"latency, ms (batch 1, {result['input_size']}^2, "
                    "float32, XLA off)")
      save(fig, f"{prefix}_latency")
  return paths


# ----------------------------------------------------------------- markdown
def _fmt(x, digits=2):
  if x is None:
    return "-"
  return f"{x:.{digits}f}"


def _throughput_header(result: Mapping[str, Any]) -> str:
  if result["throughput_batch"] == -1:
    gib = result["throughput_memory_bytes"] / 2**30
    return f"images/s (largest batch within {gib:.1f} GiB)"
  return f"images/s (batch {result['throughput_batch']})"


def _throughput_cell(result: Mapping[str, Any],
                     case: Mapping[str, Any]) -> str:
  value = _fmt(case.get("throughput_images_per_s"))
  if result["throughput_batch"] == -1 and case.get("throughput_batch"):
    return f"{value} (batch {case['throughput_batch']})"
  return value


def _models_notes(result: Mapping[str, Any]) -> str:
  notes = ""
  if result["throughput_batch"] == -1:
    notes += (" Throughput: batches 1, 2, 4, ... timed in turn, stopping "
              "before one whose peak memory (twice the last batch's) would "
              "pass the budget; the largest batch run is reported.")
  return notes + benchmark.attention_note(result)


def _machine_lines(machine: Dict[str, Any], command: str) -> List[str]:
  return [
      f"- Machine: {machine['cpu_model']}, {machine['nproc']} logical CPUs"
      f" (nproc), {machine['memory_gib']} GiB; load average at start "
      f"{machine['load_average_1_5_15min']} (1/5/15 min; the machine is "
      "shared, which is why only same-run ratios are compared).",
      f"- Software: TensorFlow {machine['tensorflow']}, tf-keras "
      f"{machine['tf_keras']}, Python {machine['python']}.",
      f"- Date: {machine['date_utc']}.",
      f"- Command: `{command}`",
  ]


def markdown_section(result: Dict[str, Any], machine: Dict[str, Any],
                     command: str, plot_paths: Sequence[str] = (),
                     relative_to: Optional[str] = None) -> str:
  """Markdown body of a suite's generated section."""
  suite = result["suite"]
  lines = _machine_lines(machine, command)
  lines.append("")
  if suite in benchmark.MORE_SUITES:
    lines += suites.markdown_lines(result)
  elif suite == "resnet_ratio":
    model = result["model"]
    shape = result["input_shape"]
    lines += [
        f"{model} against `{result['baseline']}`, input {shape} "
        f"{result['dtype']}, {result['runs']} interleaved rounds after "
        f"{result['warmup']} warm-up calls; forward = inference mode, "
        "forward+backward = training mode with gradients of all weights. "
        f"M-Adds {result['madds'][model] / 1e9:.2f} G vs "
        f"{result['madds']['resnet50'] / 1e9:.2f} G (ratio "
        f"{result['madds_ratio']:.2f}x); params "
        f"{result['params'][model]:,} vs {result['params']['resnet50']:,}.",
        "",
        "| mode | XLA | model ms | ResNet-50 ms | ratio (of medians) | "
        "ratio (median of paired rounds) | CPU-time ratio | target | "
        "model GFLOP/s (% of matmul) | ResNet-50 GFLOP/s (% of matmul) | "
        f"{result['matmul_size']}^2 matmul GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
      s, g = r["seconds"], r["gflops"]
      target = result["targets"][r["mode"]]
      ratio = r["ratio"]["wall_ratio_of_medians"]
      lines.append(
          f"| {r['mode'].replace('_', '+')} | {'on' if r['xla'] else 'off'} "
          f"| {s[model]['median_s'] * 1e3:.0f} | "
          f"{s['resnet50']['median_s'] * 1e3:.0f} | **{ratio:.2f}x** | "
          f"{r['ratio']['wall_median_paired_ratio']:.2f}x | "
          f"{r['ratio']['cpu_ratio_of_medians']:.2f}x | <= {target}x "
          f"({'met' if ratio <= target else 'not met'}) | "
          f"{g[model]['gflops']:.1f} ({100 * g[model]['fraction_of_matmul']:.0f}%)"
          f" | {g['resnet50']['gflops']:.1f} "
          f"({100 * g['resnet50']['fraction_of_matmul']:.0f}%) | "
          f"{r['matmul_gflops']:.1f} |")
    lines += ["", "GFLOP/s = 2 x M-Adds / median time (forward+backward: "
              "3 x the forward M-Adds); M-Adds by "
              "`axial_deeplab_tf.utils.madds.count_madds`."]
  elif suite == "layers":
    lines += [
        f"Batch 1, {result['channels']} input channels (key depth "
        f"{result['channels'] // 2}, value depth {result['channels']}, 8 "
        f"heads), float32, XLA off, median of {result['runs']} interleaved "
        f"calls; local axial span {result['local_span']}; ISSA partition "
        "round(sqrt(side)). Peak memory: " + result["memory_method"] + ".",
        "",
        "Fitted exponents (time ~ N^e, N = pixels; log-log least squares):",
        "",
        "| layer | expected | fwd time e | fwd+bwd time e | fwd time e, 3 "
        "largest | fwd+bwd time e, 3 largest | fwd memory e | fwd+bwd memory"
        " e |",
        "|---|---|---|---|---|---|---|---|",
    ]
    kinds = list(dict.fromkeys(f["kind"] for f in result["fits"]))
    for kind in kinds:
      fits = {f["mode"]: f for f in result["fits"] if f["kind"] == kind}
      fw, fb = fits.get("forward", {}), fits.get("forward_backward", {})
      lines.append(
          f"| {kind} | {benchmark.EXPECTED_EXPONENTS[kind]} | "
          f"{_fmt(fw.get('time_exponent'))} | "
          f"{_fmt(fb.get('time_exponent'))} | "
          f"{_fmt(fw.get('time_exponent_top3'))} | "
          f"{_fmt(fb.get('time_exponent_top3'))} | "
          f"{_fmt(fw.get('memory_exponent'))} | "
          f"{_fmt(fb.get('memory_exponent'))} |")
    sizes = result["sizes"]
    lines += ["", "Median milliseconds (forward / forward+backward) and "
              "peak MiB (forward / forward+backward):", "",
              "| layer | " + " | ".join(f"{s}x{s}" for s in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    for kind in kinds:
      cells = []
      for size in sizes:
        c = {c["mode"]: c for c in result["cases"]
             if c["kind"] == kind and c["size"] == size}
        if not c:
          cells.append("-")
          continue
        fw, fb = c.get("forward"), c.get("forward_backward")
        mib = lambda e: ("-" if e is None or e["peak_bytes"] is None else
                         f"{e['peak_bytes'] / 2**20:.1f}")
        cells.append(
            f"{fw['median_s'] * 1e3:.1f} / {fb['median_s'] * 1e3:.1f} ms; "
            f"{mib(fw)} / {mib(fb)} MiB")
      lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    if result["skipped"]:
      lines += ["", "Skipped: " + "; ".join(
          f"{s['kind']}" + (f" {s['size']}x{s['size']}" if "size" in s
                            else "") + f" ({s['reason']})"
          for s in result["skipped"]) + "."]
  elif suite == "models":
    lines += [
        f"Input {result['input_size']}x{result['input_size']}, inference "
        f"mode; latency = median of {result['runs']} calls at batch 1 "
        "(interleaved with the throughput batch and the reference matmul); "
        f"M-Adds for one image ({result['madds_method']}); GFLOP/s = 2 x "
        "M-Adds / latency. Models without a zoo default for num_classes use "
        f"{result['default_num_classes']}." + _models_notes(result),
        "",
        "| model | params | M-Adds (G) | dtype | XLA | latency ms | "
        f"{_throughput_header(result)} | GFLOP/s (% of "
        f"{result['matmul_size']}^2 float32 matmul) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in result["models"]:
      for c in m["cases"]:
        params = f"{m['params']:,}" if "params" in m else "-"
        madds = f"{m['madds'] / 1e9:.2f}" if "madds" in m else "-"
        head = f"| {m['model']} | {params} | {madds} | {c['dtype']} |"
        if "error" in c:
          lines.append(head + f" - | error: {c['error'][:120]} | | |")
        else:
          lines.append(
              head + f" {'on' if c['xla'] else 'off'} | "
              f"{c['latency_s'] * 1e3:.1f} | "
              f"{_throughput_cell(result, c)} | {c['gflops']:.1f} "
              f"({100 * c['fraction_of_matmul']:.0f}%) |")
  for p in plot_paths:
    rel = os.path.relpath(p, relative_to) if relative_to else p
    lines.append("")
    lines.append(f"![{os.path.basename(p)}]({rel})")
  return "\n".join(lines) + "\n"


_BEGIN = "<!-- BEGIN GENERATED SECTION: {} (tools/benchmark.py rewrites it) -->"
_END = "<!-- END GENERATED SECTION: {} -->"


def _heading_level(line: str) -> Optional[int]:
  match = re.match(r"(#+)\s", line)
  return len(match.group(1)) if match else None


def _heading_span(text: str, title: str) -> Optional[Tuple[int, int]]:
  """Character span of the hand-made section headed by the line `title`.

  It runs from that line to the next heading of the same or a higher level
  outside code fences (or the end of the file).
  """
  level = _heading_level(title + " ")
  lines = text.splitlines(keepends=True)
  offsets = [0]
  for line in lines:
    offsets.append(offsets[-1] + len(line))
  start = next((i for i, line in enumerate(lines)
                if line.rstrip() == title), None)
  if start is None or level is None:
    return None
  end = len(lines)
  in_code = False
  for i in range(start + 1, len(lines)):
    if lines[i].lstrip().startswith("```"):
      in_code = not in_code
    found = _heading_level(lines[i])
    if not in_code and found is not None and found <= level:
      end = i
      break
  return offsets[start], offsets[end]


def update_markdown_section(path: str, section_id: str, title: str,
                            body: str) -> None:
  """Replaces (or appends) one generated section of a markdown file.

  The one writer of BENCHMARKS.md's generated sections (benchmark suites,
  scale stress test). The section is `title` and `body` between BEGIN/END
  markers named `section_id`. If the markers are in the file, only the
  text between them changes; else a hand-made section headed by the line
  `title` (up to the next heading of its level or higher) is replaced;
  else the section is appended. Other text stays as it is. A missing file
  is created with a "# Benchmarks" title; the file is replaced atomically.

  Args:
    path: markdown file.
    section_id: marker id, e.g. "benchmark:layers".
    title: heading line placed inside the markers (e.g. "### Layers").
    body: section text.

  Raises:
    ValueError: a bad section_id, or duplicated / out-of-order markers.
  """
  if not re.fullmatch(r"[\w:.-]+", section_id):
    raise ValueError(f"section_id must be letters, digits, '_', ':', '.' "
                     f"or '-', got {section_id!r}.")
  begin, end = _BEGIN.format(section_id), _END.format(section_id)
  block = f"{begin}\n{title}\n\n{body.rstrip()}\n{end}"
  text = ""
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  if not text:
    text = "# Benchmarks\n"
  span = _heading_span(text, title) if begin not in text else None
  if begin in text:
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(
        end) < text.index(begin):
      raise ValueError(f"{path}: markers of section {section_id!r} are "
                       f"duplicated or out of order; fix them by hand.")
    start = text.index(begin)
    stop = text.index(end) + len(end)
    text = text[:start] + block + text[stop:]
  elif span is not None:
    start, stop = span
    tail = text[stop:]
    text = text[:start] + block + "\n" + ("\n" if tail else "") + tail
  else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"

  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)

  io_lib.write_atomically(path, write)


def save_json(result: Dict[str, Any], path: str) -> None:
  """Writes a suite result as indented JSON (atomically)."""

  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(result, f, indent=1, sort_keys=True)

  io_lib.write_atomically(path, write)
