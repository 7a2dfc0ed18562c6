"""utils/progress.ProgressBar: the modes of the converters and of predict."""

import io

import pytest

from axial_deeplab_tf.utils import progress


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def test_log_lines_per_step_with_description():
  now = [0.0]
  stream = io.StringIO()
  bar = progress.ProgressBar(40, "coco [val]", stream=stream, width=4,
                             clock=lambda: now[0], steps=10)
  for _ in range(40):
    now[0] += 0.5
    bar.update()
  bar.close()
  lines = stream.getvalue().splitlines()
  # A line at the first item and at each tenth: 1, 4, 8, ..., 40.
  assert [l.split()[3] for l in lines] == (
      ["1/40"] + [f"{4 * k}/40" for k in range(1, 11)])
  # 4 items in 2 s: 2/s, 36 left -> 18 s.
  assert lines[1] == "coco [val] [....] 4/40 2.00/s 18s left"
  assert lines[-1] == "coco [val] [####] 40/40 2.00/s"


def test_terminal_redraws_in_place_at_most_per_interval():
  now = [0.0]
  stream = _Terminal()
  bar = progress.ProgressBar(10, stream=stream, width=2,
                             clock=lambda: now[0], min_interval=1.0)
  for _ in range(9):
    now[0] += 0.25
    bar.update()
  bar.close()
  text = stream.getvalue()
  # Drawn at 0.25 s (first), 1.25 s and 2.25 s; close ends the line.
  assert text.count("\r\033[K") == 4 and text.endswith("9/10 4.00/s 0s left\n")
  bar.update(10, message="last.png: FAILED")
  assert stream.getvalue()[len(text):] == (
      "\r\033[Klast.png: FAILED\n\r\033[K[##] 10/10 4.44/s\n")


def test_rejects_negative_total():
  with pytest.raises(ValueError, match="total"):
    progress.ProgressBar(-1)
