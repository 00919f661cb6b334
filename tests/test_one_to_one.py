"""YOLO26 and YOLOv10: both branches against ``YOLO(pt).predict(nms=...)`` with the same branch.

Random-init checkpoints (tests/models26.py) of YOLO26n detect / segment / pose and YOLOv10n detect, exported with
``nms`` None (one-to-many, NMS on the host) and False (one-to-one, top-k on the host), run through onnxruntime and
OpenVINO (f32). Criteria as tests/test_parity.py (>= 99% of Ultralytics' detections matched: same class, IoU >= 0.99,
|score difference| <= 0.002; masks IoU >= 0.97) plus keypoints within 0.05 px of Ultralytics' on matched detections.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import Predictor
from runtime.errors import ModelError

pytest.importorskip("ultralytics", reason="parity with Ultralytics needs ultralytics and torch")

from conftest import RANDOM_IMGSZ  # noqa: E402
from matching import Detections, Tally, assert_parity, compare_one, match  # noqa: E402

MODELS = {
    "yolo26n": ("yolo26n.yaml", None),
    "yolo26n-seg": ("yolo26n-seg.yaml", None),
    "yolo26n-pose": ("yolo26n-pose.yaml", ["person"]),
    "yolov10n": ("yolov10n.yaml", None),
}
BRANCHES = {"one2many": None, "one2one": False}
KEYPOINT_TOLERANCE_PX = 0.05
COCO_IMAGES = ("000000000139.jpg", "000000000802.jpg", "000000005001.jpg")


@pytest.fixture(scope="session")
def model26(tmp_path_factory):
    """Factory: model26(key) -> Path of the random-init checkpoint of MODELS[key] (cached)."""
    pytest.importorskip("torch")
    import models26

    root = tmp_path_factory.mktemp("models26")
    cache: dict[str, Path] = {}

    def make(key: str) -> Path:
        if key not in cache:
            cfg, names = MODELS[key]
            cache[key] = models26.build(cfg, root / f"{key}-random.pt", RANDOM_IMGSZ, names)
        return cache[key]

    return make


def parity_images() -> list[Path]:
    """The two bundled assets, plus a few COCO images when the shared folder is there."""
    import os

    from ultralytics.utils import ASSETS

    images = [Path(ASSETS) / "bus.jpg", Path(ASSETS) / "zidane.jpg"]
    shared = Path(os.environ.get("YOLO_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    images += [p for p in (shared / "coco" / "val2017" / n for n in COCO_IMAGES) if p.is_file()]
    return images


def ultralytics_result(model, image: Path, conf: float, nms: bool | None):
    return model.predict(str(image), conf=conf, imgsz=RANDOM_IMGSZ, rect=False, nms=nms, verbose=False,
                         device="cpu")[0]


def adaptive_conf(model, image: Path, nms: bool | None, rank: int = 30) -> float:
    """Just below the rank-th best Ultralytics score of this branch: random weights score unevenly by image."""
    scores = np.sort(ultralytics_result(model, image, 1e-4, nms).boxes.conf.numpy())[::-1]
    assert len(scores) > rank, f"{image.name}: too few candidates ({len(scores)}) for a parity check"
    return float(scores[rank]) - 1e-6


def check_parity(pt: Path, onnx: Path, nms: bool | None, engine: str) -> Tally:
    from ultralytics import YOLO

    model = YOLO(str(pt))
    total = Tally()
    keypoint_errors = []
    for image in parity_images():
        conf = adaptive_conf(model, image, nms)
        r = ultralytics_result(model, image, conf, nms)
        theirs = Detections(r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy().astype(int),
                            r.masks.data.numpy().astype(bool) if r.masks is not None else None)
        predictor = Predictor(onnx, conf=conf, imgsz=RANDOM_IMGSZ, engine=engine,
                              precision="f32" if engine == "openvino" else None)
        o = predictor.predict(str(image))[0]
        ours = Detections(o.xyxy, o.scores, o.class_ids.astype(int), o.masks)
        compare_one(total, image.name, theirs, ours, conf)
        if r.keypoints is not None:
            pairs = match(theirs, ours, conf)[0]
            for i, j in pairs:
                keypoint_errors.append(np.abs(r.keypoints.data.numpy()[i] - o.keypoints[j]).max())
    assert_parity(total, min_detections=60)
    if keypoint_errors:
        assert max(keypoint_errors) <= KEYPOINT_TOLERANCE_PX, f"keypoints off by up to {max(keypoint_errors):.4f} px"
    return total


@pytest.mark.slow
@pytest.mark.parametrize("branch", list(BRANCHES))
@pytest.mark.parametrize("key", list(MODELS))
def test_export_parity_both_engines(model26, export_onnx, key, branch):
    pt = model26(key)
    nms = BRANCHES[branch]
    onnx = export_onnx(pt, imgsz=RANDOM_IMGSZ, nms=nms)
    import onnx as onnx_lib

    meta = {p.key: p.value for p in onnx_lib.load(str(onnx), load_external_data=False).metadata_props}
    assert meta["branch"] == branch
    for engine in ("onnxruntime", "openvino"):
        check_parity(pt, onnx, nms, engine)


@pytest.fixture(scope="session")
def stock26(tmp_path_factory):
    """Factory: stock26(pt, nms) -> Path of Ultralytics' own ONNX export of that branch (cached)."""
    import shutil

    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("stock26")
    cache: dict[tuple, Path] = {}

    def make(pt: Path, nms: bool | None) -> Path:
        key = (str(pt), nms)
        if key not in cache:
            folder = root / f"e{len(cache)}"
            folder.mkdir()
            local = folder / Path(pt).name  # Ultralytics writes the .onnx beside the .pt
            shutil.copy(pt, local)
            cache[key] = Path(YOLO(str(local)).export(format="onnx", imgsz=RANDOM_IMGSZ, nms=nms, device="cpu",
                                                      verbose=False))
        return cache[key]

    return make


def without_end2end_key(path: Path, out: Path) -> Path:
    """A copy of a stock file without Ultralytics' ``end2end`` metadata, as files of older versions are."""
    import onnx

    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != "end2end"]
    del model.metadata_props[:]
    for k, v in kept:
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(out))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("branch", list(BRANCHES))
@pytest.mark.parametrize("key", list(MODELS))
def test_stock_export_parity_truncated_and_direct(model26, stock26, tmp_path, key, branch):
    """Ultralytics' own export of the branch: truncated (the raw convs of that branch, named in the metadata) and
    run as it is (end-to-end files too, also without their end2end metadata)."""
    import onnx as onnx_lib

    from runtime.records.spec import END2END_LAYOUT
    from tools.truncate import truncate

    pt, nms = model26(key), BRANCHES[branch]
    stock = stock26(pt, nms)
    truncated = truncate(stock, tmp_path / "truncated.onnx")
    meta = {p.key: p.value for p in onnx_lib.load(str(truncated), load_external_data=False).metadata_props}
    assert meta["branch"] == branch
    assert meta.get("kpt_rule") == ("anchor" if key == "yolo26n-pose" else None)
    for engine in ("onnxruntime", "openvino"):
        check_parity(pt, truncated, nms, engine)
    direct = stock if nms is None else without_end2end_key(stock, tmp_path / "no-end2end-key.onnx")
    if nms is False:  # an older file without the key: the TopK in its graph says end-to-end
        again = truncate(direct, tmp_path / "truncated-no-key.onnx")
        assert {p.key: p.value for p in onnx_lib.load(str(again)).metadata_props}["branch"] == "one2one"
    predictor = Predictor(direct)
    assert (predictor.model.spec.layout == END2END_LAYOUT) == (nms is False)
    for engine in ("onnxruntime", "openvino"):
        try:
            check_parity(pt, direct, nms, engine)
        except ModelError as e:  # OpenVINO 2026.4 cannot compile Ultralytics' end-to-end seg / pose graphs
            assert engine == "openvino" and nms is False and key != "yolo26n" and "cannot compile" in str(e), e


def test_v8_has_no_one_to_one_branch(random_detect_pt, tmp_path, capsys):
    from tools.export import main

    assert main([str(random_detect_pt), "--end2end", "-o", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err
    assert "no one-to-one branch" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("branch", list(BRANCHES))
def test_quantize_both_branches(model26, export_onnx, tmp_path, branch):
    """tools/quantize.py's default recipe on a YOLO26 pose file of either branch: the branch survives in the
    metadata, the box outputs leave their convs unrounded (no quantizer on a head output), the keypoint tails stay
    float, and the W8A8 file runs through the one-to-one / NMS head of its branch."""
    import onnx as onnx_lib
    from ultralytics.utils import ASSETS

    from runtime.heads.one_to_one import OneToOneHead
    from tools import quantize as qz

    onnx = export_onnx(model26("yolo26n-pose"), imgsz=RANDOM_IMGSZ, nms=BRANCHES[branch])
    out = tmp_path / "w8a8.onnx"
    assert qz.main([str(onnx), "--calib", str(Path(ASSETS)), "--num", "2", "-o", str(out)]) == 0
    model = onnx_lib.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["branch"] == branch and meta["kpt_rule"] == "anchor" and "quantization" in meta
    producer = {o: n for n in model.graph.node for o in n.output}
    for out_name in (o.name for o in model.graph.output):
        assert producer[out_name].op_type == "Conv", f"{out_name} is rounded by a {producer[out_name].op_type}"
    predictor = Predictor(out, conf=0.001, engine="openvino")
    assert isinstance(predictor.model.head, OneToOneHead) == (branch == "one2one")
    float_result = Predictor(onnx, conf=0.001).predict(str(Path(ASSETS) / "bus.jpg"))[0]
    result = predictor.predict(str(Path(ASSETS) / "bus.jpg"))[0]
    assert result.keypoints.shape[1:] == (17, 3) and len(result) > 0
    assert abs(len(result) - len(float_result)) <= max(3, 0.5 * len(float_result))


@pytest.mark.slow
def test_float_box_tails_touch_dfl_free_files_only(model26, export_onnx, random_pose_onnx):
    """The default recipe keeps the last conv of each DFL-free box branch float; a DFL file's recipe is the same
    with or without the option (so yolo11n-pose's W8A8 file is unchanged)."""
    from dataclasses import replace

    from tools.quant_model import branch_outputs
    from tools.recipe import DEFAULT_RECIPE, excluded_nodes

    no_box_tails = replace(DEFAULT_RECIPE, float_box_tails=0)
    assert excluded_nodes(random_pose_onnx, DEFAULT_RECIPE) == excluded_nodes(random_pose_onnx, no_box_tails)
    yolo26 = export_onnx(model26("yolo26n"), imgsz=RANDOM_IMGSZ)
    extra = set(excluded_nodes(yolo26, DEFAULT_RECIPE)) - set(excluded_nodes(yolo26, no_box_tails))
    owner = branch_outputs(yolo26)
    assert sorted(owner[n] for n in extra) == ["box_p3", "box_p4", "box_p5"]
