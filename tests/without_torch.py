"""Run pytest as on an edge box, where the runtime is deployed without torch: ``python tests/without_torch.py -q tests``.

torch, torchvision and ultralytics are made unimportable before pytest starts (as if not installed), so the run
shows which tests need them: those skip, saying so, and every other test runs.
"""

from __future__ import annotations

import sys

HIDDEN = ("torch", "torchvision", "ultralytics")

if __name__ == "__main__":
    for name in HIDDEN:
        sys.modules[name] = None  # `import name` now raises ImportError
    import pytest

    sys.exit(pytest.main(sys.argv[1:]))
