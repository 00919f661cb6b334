"""Random-init Ultralytics classifiers for the classify tests: built from the packaged yaml with a few classes,
made numerically alive (a freshly initialised classifier gives every class the same probability) and saved as
float32 checkpoints that reload to the same weights. No trained classifier can be downloaded here; for figures that
need realistic activations (quantization), :func:`classifier_with_backbone` puts a COCO-trained detector's backbone
(yolov8n's layers 0-8 are yolov8n-cls's) under a random head.

    python tests/classify_models.py OUT.pt [--cfg yolov8n-cls.yaml] [--backbone ../shared/models/yolov8n.pt]
"""

from __future__ import annotations

from pathlib import Path

CLASSIFY_CFGS = ("yolov8n-cls.yaml", "yolo11n-cls.yaml", "yolo26n-cls.yaml")
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
    _enliven(model, model.modules(), seed, spread)
    return model


def classifier_with_backbone(cfg: str, detector_pt: Path, names: tuple[str, ...] = CLASSIFY_NAMES, seed: int = 0,
                             spread: float = 2.0):
    """A fused classifier of ``cfg`` whose backbone is the trained backbone of ``detector_pt`` (every layer before the
    Classify head must match it in name and shape: yolov8n.pt for yolov8n-cls.yaml), and a random head made alive."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import ClassificationModel

    torch.manual_seed(seed)
    model = ClassificationModel(cfg, nc=len(names), verbose=False).eval().fuse(verbose=False)
    model.names = dict(enumerate(names))
    trained = YOLO(str(detector_pt)).model.float().fuse(verbose=False).state_dict()
    head_prefix = f"model.{len(model.model) - 1}."
    body = {k: v for k, v in model.state_dict().items() if not k.startswith(head_prefix)}
    missing = [k for k, v in body.items() if k not in trained or trained[k].shape != v.shape]
    if missing:
        raise ValueError(f"{detector_pt}: its backbone does not fit {cfg} ({missing[:3]} ...)")
    model.load_state_dict({k: trained[k] for k in body}, strict=False)
    _enliven(model, model.model[-1].modules(), seed, spread)
    return model


def _enliven(model, modules, seed: int, spread: float) -> None:
    """Rescale the convs and Linears among ``modules`` to unit output spread on the bundled images (one LSUV-style
    pass), then scale the final Linear by ``spread`` and give it biases that centre each class's mean logit on those
    images, plus a little noise, so no class wins every image."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    inputs = _asset_inputs()

    def rescale(module, _inputs, output):
        spread_now = output.std().clamp_min(1e-12)
        module.weight.div_(spread_now)
        if module.bias is not None:
            module.bias.div_(spread_now)
        return output / spread_now

    with torch.no_grad():
        layers = [m for m in modules if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        hooks = [m.register_forward_hook(rescale) for m in layers]
        try:
            model(inputs)
        finally:
            for hook in hooks:
                hook.remove()
        linear = model.model[-1].linear
        linear.weight.mul_(spread)
        linear.bias.zero_()
        centre = model(inputs)[1].mean(0)  # (probabilities, logits) in eval mode
        linear.bias.copy_(0.5 * torch.randn(linear.bias.shape, generator=generator) - centre)


def _asset_inputs():
    """Ultralytics' two bundled images as a float batch (RGB 0..1) of 224x224 views: each whole (squashed), its
    four corner quarters and their mirror images."""
    import cv2
    import numpy as np
    import torch
    from ultralytics.utils import ASSETS

    images = []
    for name in ("bus.jpg", "zidane.jpg"):
        full = cv2.imread(str(Path(ASSETS) / name))
        h, w = full.shape[:2]
        views = [full] + [full[y:y + h // 2, x:x + w // 2] for y in (0, h // 2) for x in (0, w // 2)]
        images += [cv2.resize(v, (224, 224)) for v in views]
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


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a test classifier checkpoint")
    parser.add_argument("out", type=Path)
    parser.add_argument("--cfg", default="yolov8n-cls.yaml")
    parser.add_argument("--backbone", type=Path, default=None, help="a detector .pt whose backbone to use")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    built = (classifier_with_backbone(args.cfg, args.backbone, seed=args.seed) if args.backbone
             else build_random_classifier(args.cfg, seed=args.seed))
    print(save_classifier(built, args.out))
