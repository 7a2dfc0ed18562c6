"""Checks that the virtualenv the README's scripts made can import its stack.

An install interrupted by a full disk can leave a virtualenv in which pip
reported success but `import tensorflow` fails ("No module named
'tensorflow.python'"); every later step would then fail far from the cause.
Run with the virtualenv's python: exits 1 with one message naming the
package that does not import, the error and the free disk space.
"""

import importlib
import shutil
import sys

MODULES = ("tensorflow", "tf_keras", "official.core.base_task",
           "axial_deeplab_tf")


def main():
  for name in MODULES:
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except
      free_gib = shutil.disk_usage(sys.prefix).free / 2**30
      sys.exit(
          f"error: the virtualenv {sys.prefix} is incomplete: importing "
          f"{name} failed ({type(e).__name__}: {e}). {free_gib:.1f} GiB are "
          "free on its disk and the install needs about 5 GiB; free space, "
          f"remove {sys.prefix} and run the command again.")


if __name__ == "__main__":
  main()
