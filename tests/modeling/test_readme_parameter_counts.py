"""The parameter counts the README states are the ones the tests pin.

The model tests assert exact counts (test_axial_resnet, test_axial_deeplab,
test_segnext, test_isanet); this test reads the README's Results rows and
checks that they state those same numbers, so neither can change alone.
"""

import os
import re

from tests.modeling.test_axial_deeplab import EXACT_PARAMS as DEEPLAB
from tests.modeling.test_axial_deeplab import PAPER_PARAMS as DEEPLAB_PAPER
from tests.modeling.test_axial_resnet import REFERENCE_PARAMS as RESNET
from tests.modeling.test_segnext import PARAMS as SEGNEXT

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "README.md")


def _row(starts_with):
  with open(README, encoding="utf-8") as f:
    rows = [line for line in f if line.startswith("| " + starts_with)]
  assert len(rows) == 1, (starts_with, rows)
  return rows[0]


def _counts(row):
  return [int(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+",
                                                      row)]


def test_axial_resnet_row():
  row = _row("Axial-ResNet-26-S / 50-S / 50-M / 50-L params")
  assert _counts(row) == [RESNET[f"axial_resnet_{v}"]
                          for v in ("26s", "50s", "50m", "50l")]
  assert "equal to the reference models" in row


def test_axial_deeplab_row_states_ours_and_the_papers_figures():
  row = _row("Axial-DeepLab-S / M / L params")
  assert _counts(row) == [DEEPLAB[f"axial_deeplab_{v}"] for v in "sml"]
  paper = " / ".join(f"{DEEPLAB_PAPER[f'axial_deeplab_{v}'] / 1e6:.1f}M"
                     for v in "sml")
  assert f"(paper {paper})" in row


def test_segnext_row():
  row = _row("SegNeXt-T / S / B / L params (150 classes)")
  assert _counts(row) == [SEGNEXT[v][1] for v in "tsbl"]


def test_isanet_head_row():
  # 11,815,443 is pinned by tests/modeling/test_isanet.py (worked out from
  # the layer shapes there); the auxiliary head 2,364,691 likewise.
  row = _row("ISANet decode head params (19 classes")
  assert _counts(row) == [2_364_691, 11_815_443]
