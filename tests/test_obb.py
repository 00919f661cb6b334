"""Oriented boxes without torch: the kernels (rotated decode, probiou, the matrix NMS rule), the head on a tiny
model, Result fields, drawing and the CLI's JSON; plus, where torch and ultralytics are installed, probiou and
the NMS against Ultralytics' own functions on the same boxes."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from runtime import Predictor
from runtime.cli.draw import annotate
from runtime.cli.infer import main
from runtime.errors import InputError
from runtime.kernels.obb import probiou, rotated_boxes, rotated_corners, rotated_nms, rotated_to_source


def random_rboxes(rng: np.random.Generator, n: int, span: float = 200.0) -> np.ndarray:
    xy = rng.uniform(0, span, (n, 2))
    wh = rng.uniform(4, span / 3, (n, 2))
    angle = rng.uniform(-np.pi / 4, 3 * np.pi / 4, (n, 1))
    return np.concatenate([xy, wh, angle], 1).astype(np.float32)


# ------------------------------------------------------------------------------------------------------- probiou
def test_probiou_properties():
    box = np.array([[50, 50, 40, 10, 0.3]], np.float32)
    same = probiou(box, box)[0, 0]
    assert 0.999 < same <= 1.0
    turned = box.copy()
    turned[0, 4] += np.pi  # the same rectangle
    assert abs(probiou(box, turned)[0, 0] - same) < 1e-9
    swapped = np.array([[50, 50, 10, 40, 0.3 + np.pi / 2]], np.float32)  # the same rectangle, sides swapped
    assert abs(probiou(box, swapped)[0, 0] - same) < 1e-6
    rotations = [probiou(box, np.array([[50, 50, 40, 10, 0.3 + d]], np.float32))[0, 0] for d in (0.1, 0.4, 0.8)]
    assert same > rotations[0] > rotations[1] > rotations[2]
    far = np.array([[5000, 50, 40, 10, 0.3]], np.float32)
    assert probiou(box, far)[0, 0] < 1e-6
    boxes = random_rboxes(np.random.default_rng(0), 20)
    matrix = probiou(boxes, boxes)
    assert np.allclose(matrix, matrix.T, atol=1e-9)
    with pytest.raises(InputError, match=r"\(n, 5\)"):
        probiou(boxes[:, :4], boxes)


# --------------------------------------------------------------------------------------------------------- NMS
def test_nms_is_the_matrix_rule_not_greedy():
    """A > B > C in score, A overlaps B, B overlaps C, A and C apart: greedy NMS keeps C (its only suppressor B
    is gone), Ultralytics' matrix rule drops it (B, suppressed or not, still overlaps it)."""
    boxes = np.array([[100, 100, 40, 20, 0.0], [112, 100, 40, 20, 0.0], [124, 100, 40, 20, 0.0]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    iou = probiou(boxes, boxes)
    thr = 0.5
    assert iou[0, 1] > thr and iou[1, 2] > thr and iou[0, 2] <= thr
    assert rotated_nms(boxes, scores, np.zeros(3, np.int32), thr).tolist() == [0]


def test_nms_classes_agnostic_max_det_and_order():
    boxes = np.array([[100, 100, 40, 20, 0.1], [101, 100, 40, 20, 0.1], [300, 300, 30, 30, 0.0]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    classes = np.array([0, 1, 0])
    assert rotated_nms(boxes, scores, classes, 0.7).tolist() == [1, 2, 0]  # other classes never suppress
    assert rotated_nms(boxes, scores, classes, 0.7, agnostic=True).tolist() == [1, 2]
    assert rotated_nms(boxes, scores, classes, 0.7, max_det=2).tolist() == [1, 2]
    assert rotated_nms(np.zeros((0, 5)), np.zeros(0), np.zeros(0), 0.7).tolist() == []
    with pytest.raises(InputError, match="iou_thr"):
        rotated_nms(boxes, scores, classes, 1.5)


@pytest.mark.parametrize("thr", [0.0, 0.1, 0.45, 0.7, 0.95])
def test_nms_matches_the_rule_on_dense_scenes(thr):
    """The neighbour-cell search and the every-pair loop (tiny boxes) keep exactly what the rule says."""
    rng = np.random.default_rng(int(thr * 100))
    for trial in range(6):
        n = 600
        boxes = random_rboxes(rng, n, span=150.0 if trial % 2 else 600.0)
        if trial == 5:
            boxes[::7, 2:4] = rng.uniform(0.1, 0.9, (len(boxes[::7]), 2))  # under a pixel: the every-pair path
        scores = rng.uniform(0, 1, n).astype(np.float32)
        classes = rng.integers(0, 2, n)
        order = np.argsort(-scores, kind="stable")
        shifted = boxes[order].copy()
        shifted[:, :2] += (classes[order].astype(np.float32) * np.float32(7680))[:, None]
        iou = np.triu(probiou(shifted, shifted), 1)
        want = order[~(iou > np.float32(thr)).any(0)][:300]
        assert rotated_nms(boxes, scores, classes, thr).tolist() == want.tolist(), trial


def test_probiou_and_nms_match_ultralytics():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.utils.metrics import batch_probiou
    from ultralytics.utils.nms import TorchNMS

    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(1, 400))
        boxes = random_rboxes(rng, n)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        classes = rng.integers(0, 3, n)
        theirs = batch_probiou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy()
        assert np.abs(theirs - probiou(boxes, boxes)).max() < 5e-5  # float32 against float64
        offset = torch.from_numpy(classes.astype(np.float32))[:, None] * 7680
        t = torch.from_numpy(boxes)
        shifted = torch.cat([t[:, :2] + offset, t[:, 2:]], 1)
        for thr in (0.3, 0.7):
            want = TorchNMS.fast_nms(shifted, torch.from_numpy(scores), thr, iou_func=batch_probiou).numpy()[:300]
            assert rotated_nms(boxes, scores, classes, thr).tolist() == want.tolist(), (trial, thr)


# ------------------------------------------------------------------------------------------- decode and geometry
def reference_rotated(box_maps, angle_maps, widths, strides, anchor_ids):
    """Float64 reference of the OBB head's decode (DFL expectation, angle, rotated centre offset)."""
    out = []
    ends = np.cumsum([m.shape[1] for m in box_maps])
    for a in anchor_ids:
        lv = int(np.searchsorted(ends, a, side="right"))
        local = a - (ends[lv - 1] if lv else 0)
        logits = box_maps[lv][:, local].astype(np.float64).reshape(4, -1)
        p = np.exp(logits - logits.max(1, keepdims=True))
        l, t, r, b = (p / p.sum(1, keepdims=True)) @ np.arange(logits.shape[1])
        theta = (1 / (1 + math.exp(-angle_maps[lv][local])) - 0.25) * math.pi
        xf, yf = (r - l) / 2, (b - t) / 2
        ax, ay = local % widths[lv] + 0.5, local // widths[lv] + 0.5
        s = strides[lv]
        out.append([(xf * math.cos(theta) - yf * math.sin(theta) + ax) * s,
                    (xf * math.sin(theta) + yf * math.cos(theta) + ay) * s, (l + r) * s, (t + b) * s, theta])
    return np.array(out)


def test_rotated_boxes_match_the_reference():
    rng = np.random.default_rng(1)
    grids = [(8, 6), (4, 3), (2, 2)]
    box_maps = tuple(rng.normal(0, 2, (64, h * w)).astype(np.float32) for h, w in grids)
    angle_maps = tuple(rng.normal(0, 2, h * w).astype(np.float32) for h, w in grids)
    ends = np.cumsum([h * w for h, w in grids]).astype(np.int64)
    widths = np.array([w for _, w in grids], np.int64)
    strides = np.array([8, 16, 32], np.float32)
    ids = rng.permutation(int(ends[-1]))[:30].astype(np.int64)
    got = rotated_boxes(box_maps, angle_maps, ends, widths, strides, np.arange(16, dtype=np.float64), ids)
    want = reference_rotated(box_maps, angle_maps, widths, strides, ids)
    assert np.abs(got - want).max() < 1e-3
    assert (got[:, 4] >= -np.pi / 4).all() and (got[:, 4] < 3 * np.pi / 4).all()
    with pytest.raises(InputError, match="outside"):
        rotated_boxes(box_maps, angle_maps, ends, widths, strides, np.arange(16, dtype=np.float64),
                      np.array([ends[-1]], np.int64))


def test_corners_and_source_mapping():
    box = np.array([[10, 20, 4, 2, np.pi / 2]], np.float32)
    quad = rotated_corners(box)[0]
    # +w/2 along the rotated x axis (now +y), +h/2 along the rotated y axis (now -x)
    assert np.allclose(quad, [[9, 22], [11, 22], [11, 18], [9, 18]], atol=1e-5)
    src = rotated_to_source(box, (0.5, 0.5), (3, 7))
    assert np.allclose(src, [[14, 26, 8, 4, np.pi / 2]])


# ------------------------------------------------------------------------------------------ head, Result, outputs
@pytest.fixture(scope="module")
def tiny_obb_onnx(tiny_onnx):
    return tiny_onnx("obb")


def test_results_carry_rotated_boxes(tiny_obb_onnx, pictures):
    result = Predictor(tiny_obb_onnx).predict(str(pictures[0]))[0]
    assert len(result) > 0
    assert result.xywhr.shape == (len(result), 5) and result.corners.shape == (len(result), 4, 2)
    assert np.allclose(result.corners, rotated_corners(result.xywhr))
    assert np.allclose(result.xyxy[:, :2], result.corners.min(1)) and np.allclose(result.xyxy[:, 2:], result.corners.max(1))
    assert (np.diff(result.scores) <= 0).all()
    picked = result[np.array([0, len(result) - 1])]
    assert np.array_equal(picked.xywhr, result.xywhr[[0, -1]]) and picked.corners.shape == (2, 4, 2)
    blank = Predictor(tiny_obb_onnx, conf=1.0).predict(str(pictures[0]))[0]  # nothing passes
    assert len(blank) == 0 and blank.xywhr.shape == (0, 5) and blank.corners.shape == (0, 4, 2)
    drawn = annotate(cv2.imread(str(pictures[0])), result)
    assert drawn.shape == cv2.imread(str(pictures[0])).shape


def test_cli_json_writes_rotated_boxes_and_polygons(tiny_obb_onnx, pictures, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main([str(pictures[0]), "--model", str(tiny_obb_onnx), "--save-dir", str(out_dir), "--json",
                 "--jsonl", str(tmp_path / "frames.jsonl")]) == 0
    records = json.loads((out_dir / "predictions.json").read_text())
    assert records
    for record in records:
        poly = np.array(record["poly"]).reshape(4, 2)
        x, y, w, h = record["bbox"]
        assert len(record["rbox"]) == 5
        assert np.allclose(poly.min(0), [x, y], atol=2e-3) and np.allclose(poly.max(0), [x + w, y + h], atol=2e-3)
    frame = json.loads((tmp_path / "frames.jsonl").read_text().splitlines()[0])
    assert all({"rbox", "poly"} <= set(d) for d in frame["detections"])
    assert cv2.imread(str(out_dir / pictures[0].name)) is not None


def test_quantization_keeps_the_angle_tail_float(tiny_obb_onnx):
    """The angle branch regresses a fine value, like keypoints: its last convs stay float under W8A8."""
    from tools.quant_model import branch_tail_convs

    tails = branch_tail_convs(tiny_obb_onnx, 2)
    assert sorted(tails) == ["ang_p3", "ang_p4", "ang_p5"]  # the tiny model's branches are one conv each


@pytest.mark.parametrize("task", ["depth", "semantic"])
def test_heads_we_do_not_have_are_refused(tiny_obb_onnx, pictures, tmp_path, capsys, task):
    import onnx

    from runtime.errors import ModelError

    model = onnx.load(str(tiny_obb_onnx))
    for prop in model.metadata_props:
        if prop.key == "task":
            prop.value = task
    path = tmp_path / f"{task}.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=f"task '{task}' is not supported"):
        Predictor(path)
    assert main([str(pictures[0]), "--model", str(path), "--no-save"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and task in err
