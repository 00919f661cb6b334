"""Random-init Ultralytics classifiers for the classify tests: built from the packaged yaml with a few classes,
made numerically alive (a freshly initialised classifier gives every class the same probability) and saved as
float32 checkpoints that reload to the same weights."""

from __future__ import annotations

from pathlib import Path

CLASSIFY_CFGS = ("yolov8n-cls.yaml", "yolo11n-cls.yaml")
CLASSIFY_NAMES = ("cat", "dog", "bus", "tree", "boat", "kite")


def build_random_classifier(cfg: str, names: tuple[str, ...] = CLASSIFY_NAMES, seed: int = 0, spread: float = 2.0):
    """A random-init ClassificationModel of ``cfg`` with ``names``: every conv and the final Linear rescaled to unit
    output spread on a few real-looking inputs (one LSUV-style pass), then the Linear scaled by ``spread`` and given
    random biases, so the class probabilities differ from image to image and between classes."""
    import torch
    from ultralytics.nn.tasks import ClassificationModel

    torch.manual_seed(seed)
    model = ClassificationModel(cfg, nc=len(names), verbose=False).eval()
    model.names = dict(enumerate(names))
    generator = torch.Generator().manual_seed(seed)
    inputs = _asset_inputs()

    def rescale(module, _inputs, output):
        spread_now = output.std().clamp_min(1e-12)
        module.weight.div_(spread_now)
        if module.bias is not None:
            module.bias.div_(spread_now)
        return output / spread_now

    with torch.no_grad():
        layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        hooks = [m.register_forward_hook(rescale) for m in layers]
        try:
            model(inputs)
        finally:
            for hook in hooks:
                hook.remove()
        linear = model.model[-1].linear
        linear.weight.mul_(spread)
        linear.bias.copy_(torch.randn(linear.bias.shape, generator=generator))
    return model


def _asset_inputs():
    """Ultralytics' two bundled images, squashed to 224x224, as a float batch (RGB 0..1) and flipped copies."""
    import cv2
    import numpy as np
    import torch
    from ultralytics.utils import ASSETS

    images = [cv2.resize(cv2.imread(str(Path(ASSETS) / n)), (224, 224)) for n in ("bus.jpg", "zidane.jpg")]
    images += [img[:, ::-1] for img in images]
    return torch.from_numpy(np.stack(images)[..., ::-1].transpose(0, 3, 1, 2).copy()).float() / 255


def save_classifier(model, path: Path) -> Path:
    """Save like Ultralytics' Model.save() but in float32, so the reloaded weights equal these exactly."""
    from copy import deepcopy
    from datetime import datetime

    import torch
    import ultralytics

    torch.save({"date": datetime.now().astimezone().isoformat(), "version": ultralytics.__version__,
                "model": deepcopy(model).float(), "ema": None, "train_args": {"task": "classify"},
                "note": "random-init test classifier (tests/classify_models.py)"}, path)
    return path


def random_classifier_pt(folder: Path, cfg: str, seed: int = 0) -> Path:
    """Build and save a random classifier of ``cfg`` into ``folder`` (cached by file name)."""
    path = Path(folder) / f"{Path(cfg).stem}-random-s{seed}.pt"
    if not path.exists():
        save_classifier(build_random_classifier(cfg, seed=seed), path)
    return path
