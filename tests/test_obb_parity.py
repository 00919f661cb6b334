"""Oriented boxes (YOLOv8-obb, YOLO11-obb) against ``YOLO(pt).predict`` on random-init models, in the same test:
our export at two input sizes and two batch sizes, a truncated stock export, the stock export itself, and both
engines. Criteria (tests/obb_matching.py): of Ultralytics' detections above conf + 0.002, >= 99% have one of ours
with the same class, rotated IoU >= 0.99, |score difference| <= 0.002 and |angle difference| <= 1e-3 rad (mod pi).

Random weights score unevenly: each image gets the threshold just below its 30th best score (ours, at a low
threshold), and images whose 30 best scores are all saturated at 1.0 (where score ties make the NMS order a coin
toss) are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ultralytics", reason="parity with Ultralytics needs ultralytics and torch")
pytest.importorskip("onnx")

from conftest import RANDOM_IMGSZ  # noqa: E402
from obb_matching import Rotated, RotatedTally  # noqa: E402
from test_parity import asset_images  # noqa: E402

from runtime import Predictor  # noqa: E402

CFGS = ("yolov8n-obb.yaml", "yolo11n-obb.yaml")
RANK = 30
SATURATED = 0.99
COCO_IMAGES = 6


@pytest.fixture(scope="module")
def obb_images(request) -> list[Path]:
    images = asset_images()
    try:
        shared = request.getfixturevalue("shared_dir")
    except pytest.skip.Exception:
        return images
    return images + sorted((shared / "coco" / "val2017").glob("*.jpg"))[:COCO_IMAGES]


def image_conf(onnx: Path, image: Path, imgsz: int, rect: bool) -> float | None:
    """Just below the RANK-th best score, or None when the image's best scores are saturated."""
    scores = np.sort(Predictor(onnx, conf=1e-3, imgsz=imgsz, rect=rect).predict(str(image))[0].scores)[::-1]
    if len(scores) <= RANK or scores[RANK] > SATURATED:
        return None
    return float(scores[RANK]) - 1e-6


def theirs(model, image: Path, conf: float, imgsz: int, rect: bool) -> Rotated:
    r = model.predict(str(image), conf=conf, iou=0.7, imgsz=imgsz, rect=rect, verbose=False, device="cpu")[0]
    return Rotated(r.obb.xywhr.numpy(), r.obb.conf.numpy(), r.obb.cls.numpy().astype(int))


def ours(result) -> Rotated:
    return Rotated(result.xywhr, result.scores, result.class_ids.astype(int))


def run_obb_parity(pt: Path, onnx: Path, images: list[Path], imgsz: int, rect: bool = False, batch: int = 1,
                   engine: str = "onnxruntime") -> RotatedTally:
    from ultralytics import YOLO

    model = YOLO(str(pt))
    tally = RotatedTally()
    confs = {image: image_conf(onnx, image, imgsz, rect) for image in images}
    kept = [image for image in images if confs[image] is not None]
    assert len(kept) >= 3, f"too few unsaturated images: {[i.name for i in images]}"
    for image in kept:
        precision = "f32" if engine == "openvino" else None
        predictor = Predictor(onnx, conf=confs[image], imgsz=imgsz, rect=rect, batch=batch, engine=engine,
                              precision=precision)
        results = predictor.predict([str(image)] * batch)
        want = theirs(model, image, confs[image], imgsz, rect)
        for result in results:
            tally.add(image.name, want, ours(result), confs[image])
    return tally


@pytest.fixture(scope="module")
def obb_pt(random_pt):
    return lambda cfg: random_pt(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CFGS)
@pytest.mark.parametrize("imgsz,batch,rect", [(RANDOM_IMGSZ, 1, False), (RANDOM_IMGSZ, 3, False), (256, 2, True)],
                         ids=["320", "320-batch3", "256-rect-batch2"])
def test_obb_export_parity(obb_pt, export_onnx, obb_images, cfg, imgsz, batch, rect):
    pt = obb_pt(cfg)
    onnx = export_onnx(pt, imgsz=imgsz, dynamic_hw=rect)
    tally = run_obb_parity(pt, onnx, obb_images, imgsz, rect=rect, batch=batch)
    tally.assert_parity(min_detections=60 * batch)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CFGS)
def test_obb_stock_and_truncated_stock_parity(obb_pt, obb_images, tmp_path, cfg):
    """Ultralytics' own ONNX export, as it is (output0 with the angle) and truncated by tools/truncate.py."""
    from ultralytics import YOLO

    from tools.truncate import truncate

    pt = obb_pt(cfg)
    stock = Path(YOLO(str(pt)).export(format="onnx", imgsz=RANDOM_IMGSZ, verbose=False))
    cut = truncate(stock, tmp_path / "cut.onnx")
    for onnx in (stock, cut):
        tally = run_obb_parity(pt, onnx, obb_images, RANDOM_IMGSZ)
        tally.assert_parity(min_detections=60)


@pytest.mark.slow
def test_obb_engines_agree(obb_pt, export_onnx, obb_images):
    """OpenVINO (f32) gives the Results onnxruntime gives, by the same criteria, and both match Ultralytics."""
    pytest.importorskip("openvino")
    pt = obb_pt(CFGS[0])
    onnx = export_onnx(pt, imgsz=RANDOM_IMGSZ)
    run_obb_parity(pt, onnx, obb_images, RANDOM_IMGSZ, engine="openvino").assert_parity(min_detections=60)
    tally = RotatedTally()
    for image in obb_images:
        a = Predictor(onnx, conf=0.05, imgsz=RANDOM_IMGSZ).predict(str(image))[0]
        b = Predictor(onnx, conf=0.05, imgsz=RANDOM_IMGSZ, engine="openvino", precision="f32").predict(str(image))[0]
        tally.add(image.name, ours(a), ours(b), 0.05)
    tally.assert_parity(min_detections=60)


@pytest.mark.slow
def test_bench_latency_runs_obb_beside_ultralytics(obb_pt, export_onnx, tmp_path):
    """bench/latency.py times an OBB model beside Ultralytics' predict and counts both sides' oriented boxes."""
    import json
    import shutil

    from bench import latency

    pt = obb_pt(CFGS[1])
    onnx = export_onnx(pt, imgsz=RANDOM_IMGSZ)
    images = tmp_path / "images"
    images.mkdir()
    for image in asset_images():
        shutil.copy(image, images / image.name)
    out = tmp_path / "bench.json"
    assert latency.main(["--model", str(onnx), "--images", str(images), "--warmup", "1", "--threads", "1",
                         "--compare-ultralytics", str(pt), "--json", str(out)]) == 0
    cmp = json.loads(out.read_text())["compare_ultralytics"]
    dets = cmp["detections_per_image"]
    assert dets["theirs"] > 0 and abs(dets["ours"] - dets["theirs"]) <= 0.02 * dets["theirs"] + 1
    assert cmp["host_share"]["ours"] > 0
