"""Shared fixtures: tiny ONNX models and pictures (numpy, onnx and OpenCV only), the shared-data folder, random-init
YOLOv8 checkpoints and their truncated-head ONNX exports (torch and ultralytics).

Nothing here downloads anything: tiny models are written with ``onnx.helper`` (tests/tiny_models.py), pictures are
drawn (tests/scenes.py), random models are built from the yaml files packaged with Ultralytics, and the real COCO
checkpoints are read from the shared folder (``$YOLO_SHARED_DIR``, default ``<repo>/../shared``).

Tests of the runtime's behaviour use the tiny models, so they run where the runtime is deployed (no torch); only
export, truncation, quantization and parity-with-Ultralytics tests use the random-init or shared checkpoints, and
those skip, saying so, without torch and ultralytics.

Fixtures (all session-scoped except where noted):

* ``tiny_onnx(task, **kwargs)`` -> Path of ``tiny_models.tiny_truncated_model`` (cached per arguments).
* ``tiny_detect_onnx`` (80 classes), ``tiny_seg_onnx`` (80 classes, 32 masks), ``tiny_pose_onnx`` ("person",
  17 keypoints) -> truncated-head models at ``TINY_IMGSZ`` (64x64, dynamic batch, uint8 input).
* ``tiny_stock_onnx`` -> a stock-layout detect model (``output0``), float input.
* ``pictures`` -> paths of the synthetic photos ``scenes.PICTURES`` (portrait.jpg 810x1080, wide.jpg 1280x720).

* ``shared_dir`` -> Path of the shared folder; skips when it does not exist.
* ``shared_file(rel)`` -> Path of ``shared_dir / rel``; skips when that file does not exist.
* ``shared_detect_pt`` / ``shared_seg_pt`` -> shared ``models/yolov8n.pt`` / ``models/yolov8n-seg.pt`` (skip if absent).
* ``shared_detect_onnx`` / ``shared_seg_onnx`` -> those exported at imgsz 640 (dynamic batch) into a temp folder.
* ``random_pt(cfg, nc=None, names=None, seed=0)`` -> Path of a random-init checkpoint (float32, cached per arguments).
* ``random_detect_pt`` (yolov8n, nc=80), ``random_seg_pt`` (yolov8n-seg, nc=80, nm=32),
  ``random_pose_pt`` (yolov8n-pose, nc=1 "person", kpt_shape [17, 3]),
  ``random_detect_nc7_pt`` (yolov8s, nc=7, names ``RANDOM_NC7_NAMES``) -> Path.
* ``export_onnx(pt, **kwargs)`` -> Path of ``tools.export.export_truncated(pt, <tmp>, **kwargs)``, cached per arguments.
* ``random_detect_onnx``, ``random_seg_onnx``, ``random_pose_onnx``, ``random_detect_nc7_onnx`` -> the random models
  exported at imgsz 320 with the defaults (dynamic batch, fixed H/W, opset 17, onnxslim if installed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_models import tiny_stock_model, tiny_truncated_model

REPO_ROOT = Path(__file__).resolve().parents[1]
RANDOM_IMGSZ = 320  # random models are exported at this size: keep the suite light on small machines
OUTPUT_ATOL, OUTPUT_RTOL = 1e-4, 1e-5  # head outputs agree when |got - want| <= 1e-4 + 1e-5 * |want|


def assert_outputs_close(got: dict, want: dict, atol: float = OUTPUT_ATOL, rtol: float = OUTPUT_RTOL) -> float:
    """Every output of ``want`` within ``atol + rtol * |want|`` in ``got`` (same shapes); returns the largest
    absolute difference. The failure names the output, the difference and the value it sits at."""
    import numpy as np

    worst = 0.0
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        diff = np.abs(got[name] - ref)
        excess = diff - (atol + rtol * np.abs(ref))
        k = np.unravel_index(int(excess.argmax()), excess.shape)
        assert excess[k] <= 0, (f"{name}: difference {diff[k]:.2e} at a value of {ref[k]:.3g} exceeds "
                                f"{atol:.0e} + {rtol:.0e} * |value|")
        worst = max(worst, float(diff.max()))
    return worst


NEEDS_TORCH = "needs torch and ultralytics (random-init Ultralytics models, export), not installed"
RANDOM_NC7_NAMES = ["person", "bicycle", "car", "traffic light", "dog", "cat", "stop sign"]


def shared_dir_path() -> Path:
    """The shared-data folder: $YOLO_SHARED_DIR, or <repo root>/../shared. May not exist."""
    env = os.environ.get("YOLO_SHARED_DIR")
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared"


# ------------------------------------------------------------------------------------------- tiny models, pictures
@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """Factory: tiny_onnx(task, **tiny_truncated_model_kwargs) -> Path of a tiny truncated-head model (cached)."""
    root = tmp_path_factory.mktemp("tiny_models")
    cache: dict[tuple, Path] = {}

    def make(task: str = "detect", **kwargs) -> Path:
        key = (task, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in cache:
            cache[key] = tiny_truncated_model(root / f"tiny-{task}-{len(cache)}.onnx", task, **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_detect_onnx(tiny_onnx) -> Path:
    return tiny_onnx("detect")


@pytest.fixture(scope="session")
def tiny_seg_onnx(tiny_onnx) -> Path:
    return tiny_onnx("segment")


@pytest.fixture(scope="session")
def tiny_pose_onnx(tiny_onnx) -> Path:
    return tiny_onnx("pose")


@pytest.fixture(scope="session")
def tiny_stock_onnx(tmp_path_factory) -> Path:
    return tiny_stock_model(tmp_path_factory.mktemp("tiny_models") / "tiny-stock-detect.onnx")


@pytest.fixture(scope="session")
def pictures(tmp_path_factory) -> list[Path]:
    from scenes import write_pictures

    return write_pictures(tmp_path_factory.mktemp("pictures"))


# ------------------------------------------------------------------------------------------------------ shared data
@pytest.fixture(scope="session")
def shared_dir() -> Path:
    d = shared_dir_path()
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d} (set YOLO_SHARED_DIR)")
    return d


@pytest.fixture(scope="session")
def shared_file(shared_dir):
    def get(rel: str) -> Path:
        p = shared_dir / rel
        if not p.is_file():
            pytest.skip(f"shared data not found at {p} (set YOLO_SHARED_DIR)")
        return p

    return get


@pytest.fixture(scope="session")
def shared_detect_pt(shared_file) -> Path:
    return shared_file("models/yolov8n.pt")


@pytest.fixture(scope="session")
def shared_seg_pt(shared_file) -> Path:
    return shared_file("models/yolov8n-seg.pt")


# ---------------------------------------------------------------------------------------------- random checkpoints
def _build_random(cfg: str, nc: int | None, names: list[str] | None, seed: int):
    """Build a random-init Ultralytics model from a packaged yaml (no download). Returns (model, task)."""
    import torch
    from ultralytics import YOLO

    torch.manual_seed(seed)
    yolo = YOLO(cfg)  # e.g. "yolov8n.yaml": resolved inside the installed package
    model, task = yolo.model, yolo.task
    if nc is not None and nc != model.yaml.get("nc"):
        torch.manual_seed(seed)
        model = type(model)(cfg, nc=nc, verbose=False)  # e.g. DetectionModel("yolov8s.yaml", nc=7)
        model.args, model.task = dict(yolo.model.args), task
    _enliven(model.eval())
    if names is not None:
        n = len(model.names)
        if len(names) != n:
            raise ValueError(f"{len(names)} names for a model with nc={n}")
        model.names = dict(enumerate(names))
    return model.eval(), task


def _enliven(model, cls_bias: float = -4.0) -> None:
    """Rescale every conv so its output has unit spread on the two bundled images (one LSUV-style pass).

    A freshly initialised YOLOv8 is numerically dead: activations shrink to ~1e-10 by the head, so every
    anchor gets the same score and boxes, which would make parity tests vacuous. After this pass the
    class, box and mask logits vary like a trained model's, and ``cls_bias`` sets how many score high.
    """
    import cv2
    import numpy as np
    import torch
    from ultralytics.utils import ASSETS

    head = model.model[-1]
    if not hasattr(head, "cv3"):
        return  # not a detection-style head (e.g. Classify): nothing scores anchors
    images = [cv2.resize(cv2.imread(str(Path(ASSETS) / n)), (RANDOM_IMGSZ, RANDOM_IMGSZ)) for n in ("bus.jpg", "zidane.jpg")]
    batch = torch.from_numpy(np.stack(images)[..., ::-1].transpose(0, 3, 1, 2).copy()).float() / 255

    def rescale(module, _inputs, output):
        spread = output.std().clamp_min(1e-12)
        module.weight.div_(spread)
        if module.bias is not None:
            module.bias.div_(spread)
        return output / spread

    class_branches = [head.cv3] + ([head.one2one_cv3] if getattr(head, "one2one_cv3", None) is not None else [])
    with torch.no_grad():
        for seq in (s for branch in class_branches for s in branch):
            seq[-1].bias.zero_()
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m is not getattr(getattr(head, "dfl", None), "conv", None)]
        hooks = [m.register_forward_hook(rescale) for m in convs]  # the DFL's fixed 0..reg_max-1 conv stays
        try:
            model(batch)
        finally:
            for hook in hooks:
                hook.remove()
        for seq in (s for branch in class_branches for s in branch):
            seq[-1].bias.fill_(cls_bias)


def _save_checkpoint(model, task: str, path: Path) -> None:
    """Save like ultralytics' Model.save() but in float32, so reloaded weights equal the in-memory ones exactly."""
    from copy import deepcopy
    from datetime import datetime

    import torch
    import ultralytics

    ckpt = {
        "date": datetime.now().astimezone().isoformat(),
        "version": ultralytics.__version__,
        "model": deepcopy(model).float(),
        "ema": None,
        "train_args": {"task": task},
        "note": "random-init test model (tests/conftest.py)",
    }
    torch.save(ckpt, path)


@pytest.fixture(scope="session")
def random_pt(tmp_path_factory):
    """Factory: random_pt(cfg, nc=None, names=None, seed=0) -> Path of a saved random-init checkpoint."""
    pytest.importorskip("torch", reason=NEEDS_TORCH)
    pytest.importorskip("ultralytics", reason=NEEDS_TORCH)
    import torch
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("random_models")
    cache: dict[tuple, Path] = {}

    def make(cfg: str, nc: int | None = None, names: list[str] | None = None, seed: int = 0) -> Path:
        key = (cfg, nc, tuple(names) if names is not None else None, seed)
        if key not in cache:
            model, task = _build_random(cfg, nc, names, seed)
            stem = Path(cfg).stem + (f"-nc{nc}" if nc is not None else "") + (f"-s{seed}" if seed else "")
            path = root / f"{stem}-random.pt"
            _save_checkpoint(model, task, path)
            # the reloaded checkpoint must hold exactly the same weights, names and task
            reloaded = YOLO(str(path))
            want, got = model.state_dict(), reloaded.model.state_dict()
            assert want.keys() == got.keys(), f"{path}: state_dict keys changed on reload"
            bad = [k for k in want if not torch.equal(want[k], got[k])]
            assert not bad, f"{path}: reloaded weights differ: {bad[:5]}"
            assert reloaded.task == task and reloaded.model.names == model.names
            cache[key] = path
        return cache[key]

    return make


@pytest.fixture(scope="session")
def random_detect_pt(random_pt) -> Path:
    return random_pt("yolov8n.yaml")


@pytest.fixture(scope="session")
def random_seg_pt(random_pt) -> Path:
    return random_pt("yolov8n-seg.yaml")


@pytest.fixture(scope="session")
def random_pose_pt(random_pt) -> Path:
    return random_pt("yolov8n-pose.yaml", names=["person"])


@pytest.fixture(scope="session")
def random_detect_nc7_pt(random_pt) -> Path:
    return random_pt("yolov8s.yaml", nc=7, names=RANDOM_NC7_NAMES)


# ------------------------------------------------------------------------------------------------------ ONNX exports
@pytest.fixture(scope="session")
def export_onnx(tmp_path_factory):
    """Factory: export_onnx(pt, **export_truncated_kwargs) -> Path of the exported .onnx (cached per arguments)."""
    pytest.importorskip("torch", reason=NEEDS_TORCH)
    pytest.importorskip("ultralytics", reason=NEEDS_TORCH)
    pytest.importorskip("onnx")
    from tools.export import export_truncated

    root = tmp_path_factory.mktemp("onnx_exports")
    cache: dict[tuple, Path] = {}

    def make(pt: Path, **kwargs) -> Path:
        key = (str(pt), tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in cache:
            out = root / f"{Path(pt).stem}-{len(cache)}.onnx"
            cache[key] = export_truncated(pt, out, **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def random_detect_onnx(export_onnx, random_detect_pt) -> Path:
    return export_onnx(random_detect_pt, imgsz=RANDOM_IMGSZ)


@pytest.fixture(scope="session")
def random_seg_onnx(export_onnx, random_seg_pt) -> Path:
    return export_onnx(random_seg_pt, imgsz=RANDOM_IMGSZ)


@pytest.fixture(scope="session")
def random_pose_onnx(export_onnx, random_pose_pt) -> Path:
    return export_onnx(random_pose_pt, imgsz=RANDOM_IMGSZ)


@pytest.fixture(scope="session")
def random_detect_nc7_onnx(export_onnx, random_detect_nc7_pt) -> Path:
    return export_onnx(random_detect_nc7_pt, imgsz=RANDOM_IMGSZ)


@pytest.fixture(scope="session")
def shared_detect_onnx(export_onnx, shared_detect_pt) -> Path:
    return export_onnx(shared_detect_pt, imgsz=640)


@pytest.fixture(scope="session")
def shared_seg_onnx(export_onnx, shared_seg_pt) -> Path:
    return export_onnx(shared_seg_pt, imgsz=640)


# ------------------------------------------------------------------------------------------- optional dependencies
def needs_packages(*modules: str) -> pytest.MarkDecorator:
    """Skip marker for a test that imports optional packages in its own body, before any fixture could skip it:
    skipped, naming the missing ones, when a package cannot be found (looked up, not imported)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {' and '.join(missing)}, not installed")


needs_export = needs_packages("torch", "ultralytics")  # exporting and reloading checkpoints
