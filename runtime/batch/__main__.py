"""``python -m runtime.batch SOURCE --model M.onnx --out DIR``: see :mod:`runtime.batch.cli`."""

import sys

from runtime.batch.cli import main

if __name__ == "__main__":
    sys.exit(main())
