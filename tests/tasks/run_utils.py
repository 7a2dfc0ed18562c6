"""Helpers of the task tests: the tiny experiment and background tool runs.

The dataset is the project's synthetic shapes data (12 train / 4 val images,
64x64, real COCO panoptic format) converted by the real converter into one
TFRecord shard per split (conftest.py writes it once per session). One
training shard makes multi-worker input sharding record-level (worker i
reads records i, i+2, ...), so two workers together read exactly the
examples one worker reads.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
QUICKSTART_GIN = os.path.join(REPO, "gin", "quickstart", "axial_deeplab.gin")
TRAIN_TOOL = os.path.join(REPO, "tools", "train.py")

# A tiny Axial-DeepLab (0.38 M parameters): the quickstart model with small
# widths and the 26-layer block layout, so that building it stays cheap.
TINY_MODEL = ("{'width_multiplier': 0.125, 'semantic_channels': 16, "
              "'instance_channels': 16, 'context_channels': 16, "
              "'stem_channels': (8, 8, 16), 'depth': 26%s}")


@dataclasses.dataclass
class TinyExperiment:
  """Paths of the tiny dataset and the gin bindings of a tiny run."""
  tfrecord_dir: str
  train_pattern: str
  val_pattern: str

  def bindings(self, train_steps: int = 4, checkpoint_interval: int = 2,
               model_extra: str = "",
               extra: Optional[Dict[str, str]] = None) -> List[str]:
    """gin bindings: the quickstart shrunk to a few steps of a tiny model.

    Args:
      train_steps: trainer.train_steps.
      checkpoint_interval: trainer.checkpoint_interval (loops and summaries
        are one step long, so every step's loss is logged).
      model_extra: extra model.overrides entries, e.g. ", 'use_sync_bn': True".
      extra: more bindings, {"runtime.seed": "3", ...}; they win.

    Returns:
      ["binding = value", ...].
    """
    params = {
        "train/data.input_path": repr(self.train_pattern),
        "eval/data.input_path": repr(self.val_pattern),
        "model.overrides": TINY_MODEL % model_extra,
        "train/data.crop_size": "(64, 64)",
        "eval/data.crop_size": "(64, 64)",
        "train/data.global_batch_size": "4",
        "eval/data.global_batch_size": "4",
        "train/data.shuffle_buffer_size": "1",
        "losses.small_instance_area": "64",
        "optimization.warmup_steps": "0",
        "trainer.train_steps": str(train_steps),
        "trainer.steps_per_loop": "1",
        "trainer.checkpoint_interval": str(checkpoint_interval),
        "trainer.summary_interval": "1",
        "trainer.max_to_keep": "10",
        # A few steps run faster eagerly than tracing the step graph.
        "trainer.use_tf_function": "False",
    }
    params.update(extra or {})
    return [f"{k} = {v}" for k, v in params.items()]


def train_command(model_dir: str, bindings: Sequence[str],
                  mode: str = "train",
                  gin_files: Sequence[str] = (QUICKSTART_GIN,)) -> List[str]:
  """The tools/train.py command line of a run."""
  command = [sys.executable, TRAIN_TOOL, f"--model_dir={model_dir}",
             f"--mode={mode}"]
  command += [f"--gin_file={f}" for f in gin_files]
  command += [f"--gin_param={b}" for b in bindings]
  return command


def tool_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """Environment of a tool subprocess (quiet TF, Keras 2, no GPU probing)."""
  env = dict(os.environ)
  env.update(TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1",
             CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  env.update(extra or {})
  return env


def start_tool(command: Sequence[str], log_path: str,
               env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
  """Starts a tool with stdout and stderr into one log file."""
  log = open(log_path, "w")  # pylint: disable=consider-using-with
  return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                          env=tool_env(env), cwd=REPO)


class ToolRun:
  """One tools/train.py process managed by a RunPool.

  Attributes:
    name: key in the pool.
    command, env: what to start.
    log_path: stdout + stderr.
    kill_when: polled while running; True sends SIGKILL (fault injection).
    group: runs of one group start together (multi-worker jobs).
    returncode: exit status once done (negative: killed by that signal).
    killed: whether kill_when fired.
    seconds: wall time from start to exit.
  """

  def __init__(self, name, command, log_path, env=None, kill_when=None,
               group=None):
    self.name = name
    self.command = list(command)
    self.env = env
    self.log_path = log_path
    self.kill_when = kill_when
    self.group = group or name
    self.process = None
    self.returncode = None
    self.killed = False
    self.seconds = None
    self.started = None
    self.done = threading.Event()

  @property
  def log(self) -> str:
    with open(self.log_path) as f:
      return f.read()


class RunPool:
  """Runs tool processes in the background, a few at a time.

  Training runs of the tiny model spend most of their time building the
  model; running several at once uses both cores while each is single-
  threaded for a while. Groups start in submission order when enough slots
  are free; `then` callbacks submit follow-up runs (a resume after a kill).
  """

  def __init__(self, max_running: int = 4):
    self._max_running = max_running
    self._lock = threading.Lock()
    self._queue: List[List[ToolRun]] = []
    self._runs: Dict[str, ToolRun] = {}
    self._running: List[ToolRun] = []
    self._then: Dict[str, Callable[[ToolRun], None]] = {}
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True)
    self._thread.start()

  def submit(self, *runs: ToolRun, then: Optional[Callable] = None,
             first: bool = False) -> None:
    """Queues runs that start together.

    Args:
      *runs: the group.
      then: called with the last run of the group when it has ended.
      first: put the group at the head of the queue.
    """
    with self._lock:
      for run in runs:
        self._runs[run.name] = run
      if then is not None:
        self._then[runs[-1].name] = then
      self._queue.insert(0 if first else len(self._queue), list(runs))

  def wait(self, name: str, timeout: float = 1200.0) -> ToolRun:
    """Blocks until run `name` (submitted or to be submitted) ends."""
    deadline = time.time() + timeout
    while name not in self._runs:
      if time.time() > deadline:
        raise TimeoutError(f"run {name!r} was never submitted")
      time.sleep(0.05)
    run = self._runs[name]
    if not run.done.wait(max(deadline - time.time(), 0)):
      raise TimeoutError(f"run {name!r} did not finish in {timeout} s; "
                         f"log {run.log_path}")
    return run

  def _start(self, run: ToolRun) -> None:
    run.started = time.time()
    run.process = start_tool(run.command, run.log_path, run.env)
    self._running.append(run)

  def _loop(self) -> None:
    while not self._stop.is_set():
      finished = []
      with self._lock:
        for run in list(self._running):
          if run.kill_when is not None and not run.killed and (
              run.process.poll() is None and run.kill_when()):
            run.process.send_signal(signal.SIGKILL)
            run.killed = True
          code = run.process.poll()
          if code is not None:
            run.returncode = code
            run.seconds = time.time() - run.started
            self._running.remove(run)
            finished.append(run)
        while self._queue and (
            len(self._running) + len(self._queue[0]) <= self._max_running
            or not self._running):
          for run in self._queue.pop(0):
            self._start(run)
      for run in finished:
        callback = self._then.pop(run.name, None)
        if callback is not None:
          callback(run)
        run.done.set()
      time.sleep(0.05)

  def close(self) -> None:
    """Stops the loop and kills the runs this pool started that still run."""
    self._stop.set()
    self._thread.join()
    for run in self._running:
      if run.process.poll() is None:
        run.process.kill()
        run.process.wait()
