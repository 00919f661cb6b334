"""Parity with Ultralytics: our Predictor on our exported ONNX against YOLO(pt).predict, both run here.

Criteria (per model, over its image set):
* of Ultralytics' detections scoring above conf + 0.002, at least 99% (all on bus.jpg and
  zidane.jpg) have a match of ours: same class, box IoU >= 0.99, |score difference| <= 0.002;
* at most 1% of our detections above conf + 0.002 lack such a match;
* matched detections' masks reach IoU >= 0.97, in letterbox and native (retina) form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import Predictor

ultralytics = pytest.importorskip("ultralytics", reason="parity with Ultralytics needs ultralytics and torch")

from matching import Detections, Tally, assert_parity, compare_one  # noqa: E402

ASSET_NAMES = ("bus.jpg", "zidane.jpg")


def asset_images() -> list[Path]:
    from ultralytics.utils import ASSETS

    return [Path(ASSETS) / name for name in ASSET_NAMES]


def ultralytics_detections(model, image: Path, conf: float, iou: float, imgsz: int, rect: bool,
                           retina: bool) -> Detections:
    r = model.predict(str(image), conf=conf, iou=iou, imgsz=imgsz, rect=rect, retina_masks=retina,
                      verbose=False, device="cpu")[0]
    masks = r.masks.data.numpy().astype(bool) if r.masks is not None else None
    return Detections(r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy().astype(int), masks)


def our_detections(predictor: Predictor, image: Path) -> Detections:
    r = predictor.predict(str(image))[0]
    return Detections(r.xyxy, r.scores, r.class_ids.astype(int), r.masks)


def run_parity(pt: Path, onnx: Path, images: list[Path], conf: float, iou: float, imgsz: int, rect: bool,
               retina: bool, strict_names: tuple[str, ...] = ASSET_NAMES) -> Tally:
    from ultralytics import YOLO

    model = YOLO(str(pt))
    predictor = Predictor(onnx, conf=conf, iou=iou, imgsz=imgsz, rect=rect, retina_masks=retina)
    tally = Tally()
    for image in images:
        theirs = ultralytics_detections(model, image, conf, iou, imgsz, rect, retina)
        ours = our_detections(predictor, image)
        before = tally.theirs - tally.theirs_matched
        compare_one(tally, image.name, theirs, ours, conf)
        if image.name in strict_names:
            assert tally.theirs - tally.theirs_matched == before, f"{image.name}: every detection must match"
    return tally


def val_images(shared_dir: Path) -> list[Path]:
    folder = shared_dir / "coco" / "val2017"
    if not folder.is_dir():
        pytest.skip(f"no COCO val images at {folder} (set YOLO_SHARED_DIR)")
    return sorted(folder.glob("*.jpg"))


def adaptive_conf(pt: Path, image: Path, imgsz: int, rect: bool, rank: int = 30) -> float:
    """A threshold just below the rank-th best Ultralytics score: random weights score low and unevenly."""
    from ultralytics import YOLO

    scores = np.sort(YOLO(str(pt)).predict(str(image), conf=1e-4, imgsz=imgsz, rect=rect, verbose=False,
                                           device="cpu")[0].boxes.conf.numpy())[::-1]
    assert len(scores) > rank, f"{image.name}: too few candidates ({len(scores)}) for a parity check"
    return float(scores[rank]) - 1e-6


# ------------------------------------------------------------------------------------ shared COCO checkpoints
@pytest.mark.shared
@pytest.mark.slow
def test_shared_detect_parity(shared_dir, shared_detect_pt, shared_detect_onnx):
    images = asset_images() + val_images(shared_dir)
    tally = run_parity(shared_detect_pt, shared_detect_onnx, images, conf=0.25, iou=0.7, imgsz=640, rect=False,
                       retina=False)
    assert_parity(tally, min_detections=500)


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("retina", [False, True], ids=["letterbox_masks", "native_masks"])
def test_shared_segment_parity(shared_dir, shared_seg_pt, shared_seg_onnx, retina):
    images = asset_images() + val_images(shared_dir)
    tally = run_parity(shared_seg_pt, shared_seg_onnx, images, conf=0.25, iou=0.7, imgsz=640, rect=False,
                       retina=retina)
    assert_parity(tally, min_detections=500)
    assert len(tally.mask_ious) >= 500


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("retina", [False, True], ids=["letterbox_masks", "native_masks"])
def test_shared_segment_parity_minimal_padding(shared_dir, shared_seg_pt, export_onnx, retina):
    """A dynamic-H/W export takes Ultralytics' default minimal-padding (rect) letterbox."""
    onnx = export_onnx(shared_seg_pt, imgsz=640, dynamic_hw=True)
    images = asset_images() + val_images(shared_dir)[:40]
    tally = run_parity(shared_seg_pt, onnx, images, conf=0.25, iou=0.7, imgsz=640, rect=True, retina=retina)
    assert_parity(tally, min_detections=100)


# ------------------------------------------------------------------------------------ random-init models
RANDOM_CASES = [
    ("random_detect_pt", False, {}),
    ("random_detect_nc7_pt", False, {}),
    ("random_seg_pt", False, {}),
    ("random_seg_pt", True, {}),
    ("random_seg_pt", False, {"dynamic_hw": True}),
]


@pytest.mark.slow
@pytest.mark.parametrize("pt_fixture,retina,export_kwargs", RANDOM_CASES,
                         ids=["detect", "detect_nc7_s", "segment", "segment_native_masks", "segment_rect"])
def test_random_model_parity(request, export_onnx, pt_fixture, retina, export_kwargs):
    from conftest import RANDOM_IMGSZ

    pt = request.getfixturevalue(pt_fixture)
    onnx = export_onnx(pt, imgsz=RANDOM_IMGSZ, **export_kwargs)
    rect = bool(export_kwargs.get("dynamic_hw"))
    total = Tally()
    for image in asset_images():
        conf = adaptive_conf(pt, image, RANDOM_IMGSZ, rect)
        tally = run_parity(pt, onnx, [image], conf=conf, iou=0.7, imgsz=RANDOM_IMGSZ, rect=rect, retina=retina)
        assert tally.theirs_matched == tally.theirs, f"{image.name}: {tally.failures}"
        for name in ("theirs", "theirs_matched", "ours", "ours_unmatched"):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
        total.mask_ious += tally.mask_ious
        total.failures += tally.failures
    assert_parity(total, min_detections=20)
