"""Every code block of README.md runs as written.

Python blocks run here, each in a fresh interpreter from an empty folder.
The command-line quickstart chain runs from an installed wheel in
tests/test_packaging.py (`cli_chain_block`); the other command lines are
checked here: each `axial-deeplab` subcommand exists and takes the flags
the README gives it, and the README's two scripts parse and create their
own venv.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")


def code_blocks():
  """[(language, text)] of the fenced blocks of README.md, in order."""
  with open(README, encoding="utf-8") as f:
    text = f.read()
  return [(m.group(1), m.group(2))
          for m in re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text,
                               re.MULTILINE | re.DOTALL)]


def cli_chain_block() -> str:
  """The README's bash block that runs the quickstart chain."""
  (block,) = [text for language, text in code_blocks()
              if language == "bash" and "axial-deeplab make-synthetic" in text]
  return block


def _commands(block):
  """The `axial-deeplab ...` commands of a block (continuations joined)."""
  joined = re.sub(r"\\\n\s*", " ", block)
  commands = []
  for line in joined.splitlines():
    line = line.split("#")[0].strip()
    if line.startswith("axial-deeplab"):
      commands.append(shlex.split(re.sub(r'"\$\{\w+\[@\]\}"', "", line)))
  return commands


def _env():
  return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
          "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": REPO,
          "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def test_readme_has_the_blocks_the_tests_run():
  languages = [language for language, _ in code_blocks()]
  assert languages.count("python") >= 1
  assert "axial-deeplab predict" in cli_chain_block()
  for script in ("scripts/quickstart.sh", "scripts/test.sh"):
    assert any(text.strip() == f"bash {script}" for _, text in code_blocks())


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", [i for i, (language, _) in enumerate(code_blocks())
              if language == "python"])
def test_python_block_runs(index, tmp_path):
  _, code = code_blocks()[index]
  result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  if "print(" in code:
    assert result.stdout.strip()


def test_command_lines_name_real_subcommands_and_flags():
  from axial_deeplab_tf.cli import main  # pylint: disable=g-import-not-at-top
  seen = {}
  for language, block in code_blocks():
    for command in _commands(block):
      words = [w for w in command[1:] if not w.startswith("-")]
      table, path = main.SUBCOMMANDS, []
      for word in words:
        if not isinstance(table, dict):
          break
        assert word in table, (word, command)
        path.append(word)
        table = table[word]
      flags = {w.split("=")[0] for w in command[1:] if w.startswith("--")}
      flags -= {"--help"}
      seen.setdefault(tuple(path), set()).update(flags)
  assert ("train",) in seen and ("build-data", "panoptic") in seen
  for path, flags in seen.items():
    if not flags:
      continue
    result = subprocess.run(
        [sys.executable, "-m", "axial_deeplab_tf", *path, "--help"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in flags:
      assert re.search(rf"^\s+{flag}([:=]|\s|$)|\[no\]{flag[2:]}:", result.stdout,
                       re.MULTILINE), (path, flag)


def test_the_two_readme_scripts_parse_and_make_their_venv():
  for script in ("scripts/quickstart.sh", "scripts/test.sh"):
    path = os.path.join(REPO, script)
    subprocess.run(["bash", "-n", path], check=True)
    with open(path, encoding="utf-8") as f:
      text = f.read()
    assert '-m venv .venv' in text and "pip install" in text, script
