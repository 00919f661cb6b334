"""Package-level promises: light imports and the public names."""

import subprocess
import sys


def test_import_runtime_pulls_in_neither_torch_nor_ultralytics():
    code = ("import sys, runtime; heavy = [m for m in ('torch', 'ultralytics', 'torchvision') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import runtime imported: {out.stdout.strip()}"


def test_public_api():
    import runtime

    for name in ("Predictor", "Result", "Letterbox", "ModelSpec", "YoloRuntimeError", "ModelError", "InputError"):
        assert hasattr(runtime, name), name
    assert issubclass(runtime.ModelError, runtime.YoloRuntimeError)
    assert issubclass(runtime.InputError, runtime.YoloRuntimeError)
