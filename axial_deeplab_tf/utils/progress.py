"""A text progress bar on stderr: done/total, rate and time left.

Used by the dataset converters and the prediction tool. On a terminal the
bar is redrawn in place; elsewhere (a log file, a pipe) each drawn bar is a
line of its own, so that per-item messages stay readable.
"""

import sys
import time
from typing import Callable, Optional, TextIO


class ProgressBar:
  """`[#####.....] 3/6 0.50/s 6s left`, optionally after a description.

  Args:
    total: how many items there are (>= 0).
    description: text before the bar (e.g. "coco [val]"), or "".
    stream: where to draw (default stderr).
    width: characters of the bar.
    clock: seconds (for the rate); time.monotonic by default.
    min_interval: on a terminal, redraw at most once per this many seconds
      (the last item always draws).
    steps: elsewhere, draw only when `done` enters another of `steps` equal
      parts of total (about steps + 1 lines in all); None draws every
      update.
  """

  def __init__(self, total: int, description: str = "",
               stream: Optional[TextIO] = None, width: int = 30,
               clock: Callable[[], float] = time.monotonic,
               min_interval: float = 0.0, steps: Optional[int] = None):
    if total < 0:
      raise ValueError(f"total must be >= 0, got {total}.")
    self.total = total
    self.description = description
    self.stream = stream or sys.stderr
    self.width = width
    self._clock = clock
    self._start = clock()
    self._in_place = bool(getattr(self.stream, "isatty", lambda: False)())
    self._min_interval = min_interval
    self._steps = steps
    self._done = 0
    self._last_draw = None
    self._last_step = None
    self._finished = False

  def line(self, done: int, text: str = "") -> str:
    """The bar after `done` items, e.g. `[#####.....] 3/6 0.5/s 6s left`."""
    filled = self.width * min(done, self.total) // max(self.total, 1)
    bar = "#" * filled + "." * (self.width - filled)
    elapsed = max(self._clock() - self._start, 1e-9)
    rate = done / elapsed
    left = ""
    if 0 < done < self.total:
      left = f" {(self.total - done) / rate:.0f}s left"
    return ((f"{self.description} " if self.description else "")
            + f"[{bar}] {done}/{self.total} {rate:.2f}/s{left}"
            + (f" {text}" if text else ""))

  def update(self, done: Optional[int] = None, text: str = "",
             message: str = "") -> None:
    """Draws the bar at `done` items (default one more than before).

    `message` (e.g. a failure) goes on its own line, always.
    """
    self._done = self._done + 1 if done is None else done
    if message:
      if self._in_place:
        self.stream.write("\r\033[K")
      self.stream.write(message + "\n")
    final = self._done >= self.total
    if self._in_place:
      now = self._clock()
      if (not final and not message and self._last_draw is not None and
          now - self._last_draw < self._min_interval):
        return
      self._last_draw = now
    elif self._steps is not None:
      step = self._steps * self._done // max(self.total, 1)
      if step == self._last_step:
        self.stream.flush()
        return
      self._last_step = step
    self._draw(text, final)

  def _draw(self, text: str, final: bool) -> None:
    line = self.line(self._done, text)
    if self._in_place:
      self._finished = final
      self.stream.write("\r\033[K" + line + ("\n" if final else ""))
    else:
      self.stream.write(line + "\n")
    self.stream.flush()

  def close(self) -> None:
    """Ends a bar drawn in place with its last state and a newline."""
    if self._in_place and not self._finished:
      self._draw("", True)
