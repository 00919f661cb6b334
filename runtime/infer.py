"""``python -m runtime.infer SOURCE... --model M.onnx``: the command line (see :mod:`runtime.cli.infer`)."""

import sys

from runtime.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
