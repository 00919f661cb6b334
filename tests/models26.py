"""Random-init YOLO26 / YOLOv10 checkpoints that detect like trained ones (for parity, quantization and bench).

conftest's ``_build_random`` gives every conv unit spread; on a DFL-free YOLO26 head that leaves the box convs (the
distances themselves, in strides) at several cells with little spread, so every box covers the image. Here each
box conv of both branches is set, on the calibration images, to distances of ``box_mean`` +- ``box_std`` cells
(default 2.5 +- 0.5: few negative distances, whose inverted boxes NMS treats unlike torchvision), and
the class convs' bias to conftest's, so a few dozen boxes of realistic size pass a usual ``conf``; and the
one-to-one branch is made to differ from the one-to-many one (Ultralytics starts it as a copy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIBRATION = ("bus.jpg", "zidane.jpg")


def calibration_batch(imgsz: int):
    import cv2
    import torch
    from ultralytics.utils import ASSETS

    images = [cv2.resize(cv2.imread(str(Path(ASSETS) / n)), (imgsz, imgsz)) for n in CALIBRATION]
    return torch.from_numpy(np.stack(images)[..., ::-1].transpose(0, 3, 1, 2).copy()).float() / 255


def realistic_boxes(model, imgsz: int, box_mean: float, box_std: float) -> None:
    """Standardise the last box conv of every level and branch of a DFL-free head to box_mean +- box_std."""
    import torch

    head = model.model[-1]
    if int(head.reg_max) != 1:
        return
    convs = [seq[-1] for name in ("cv2", "one2one_cv2") if getattr(head, name, None) is not None
             for seq in getattr(head, name)]

    def standardise(module, _inputs, output):
        mean, std = output.mean(dim=(0, 2, 3)), output.std(dim=(0, 2, 3)).clamp_min(1e-12)
        scale = box_std / std
        module.weight.mul_(scale[:, None, None, None])
        module.bias.copy_((module.bias - mean) * scale + box_mean)
        return (output - mean[None, :, None, None]) * scale[None, :, None, None] + box_mean

    with torch.no_grad():
        hooks = [c.register_forward_hook(standardise) for c in convs]
        try:
            model.eval()(calibration_batch(imgsz))
        finally:
            for h in hooks:
                h.remove()


def distinct_branches(model, seed: int) -> bool:
    """Ultralytics initialises the one-to-one convs as copies of the one-to-many ones: perturb every one-to-one
    weight by 30% (seeded), so the two branches of a test model compute different things. False without them."""
    import torch

    head = model.model[-1]
    params = [p for name, p in head.named_parameters() if name.startswith("one2one_")]
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in params:
            p.mul_(1 + 0.3 * torch.randn(p.shape, generator=generator))
    return bool(params)


def build(cfg: str, path: Path, imgsz: int, names: list[str] | None = None, seed: int = 0,
          box_cells: tuple[float, float] = (2.5, 0.5)) -> Path:
    """Save a random-init, enlivened, box-standardised checkpoint of ``cfg`` at ``path`` (distances of
    ``box_cells`` = (mean, std) cells)."""
    from conftest import _build_random, _enliven, _save_checkpoint

    model, task = _build_random(cfg, len(names) if names else None, names, seed)
    if distinct_branches(model, seed):
        _enliven(model)
    realistic_boxes(model, imgsz, *box_cells)
    _save_checkpoint(model, task, path)
    return path
