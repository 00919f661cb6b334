"""The one-to-one heads without torch: our top-k against a literal numpy transcription of Ultralytics' two-stage
selection (``Detect.postprocess`` + the predictor's filter), on random raw outputs; stock end-to-end outputs; and
the spec's end-to-end detection (metadata or shape)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.engines.base import TensorInfo
from runtime.errors import ModelError
from runtime.heads import HeadSettings, head_for
from runtime.heads.one_to_one import OneToOneHead, StockEnd2EndHead
from runtime.records.letterbox import plan_letterbox
from runtime.records.spec import END2END_LAYOUT, read_model_spec

STRIDES = (8, 16, 32)
IMGSZ = 64


def truncated_spec(nc: int, branch: str = "one2one"):
    outputs = []
    for s in STRIDES:
        g = IMGSZ // s
        level = f"p{int(np.log2(s))}"
        outputs += [TensorInfo(f"box_{level}", (1, 4, g, g), "tensor(float)"),
                    TensorInfo(f"cls_{level}", (1, nc, g, g), "tensor(float)")]
    meta = {"layout": "truncated-head", "layout_version": "1", "task": "detect", "reg_max": "1",
            "names": json.dumps({str(i): str(i) for i in range(nc)}), "strides": json.dumps(list(STRIDES)),
            "branch": branch, "imgsz": json.dumps([IMGSZ, IMGSZ])}
    return read_model_spec("m.onnx", meta, [TensorInfo("images", (1, 3, IMGSZ, IMGSZ), "tensor(uint8)")], outputs)


def random_outputs(rng, nc: int, mu: float, sd: float) -> dict[str, np.ndarray]:
    out = {}
    for s in STRIDES:
        g = IMGSZ // s
        level = f"p{int(np.log2(s))}"
        out[f"box_{level}"] = rng.uniform(0.5, 3.0, (1, 4, g, g)).astype(np.float32)
        out[f"cls_{level}"] = rng.normal(mu, sd, (1, nc, g, g)).astype(np.float32)
    return out


def ultralytics_one_to_one(outputs, nc, conf, max_det, agnostic, classes):
    """Dense decode, then Detect.postprocess's two top-k stages and the predictor's filter, literally."""
    boxes, scores = [], []
    for s in STRIDES:
        level = f"p{int(np.log2(s))}"
        d = outputs[f"box_{level}"][0].reshape(4, -1).astype(np.float64)
        g = IMGSZ // s
        yy, xx = np.divmod(np.arange(g * g), g)
        boxes.append(np.stack([(xx + 0.5 - d[0]) * s, (yy + 0.5 - d[1]) * s, (xx + 0.5 + d[2]) * s,
                               (yy + 0.5 + d[3]) * s], 1))
        scores.append(1 / (1 + np.exp(-outputs[f"cls_{level}"][0].reshape(nc, -1).T.astype(np.float64))))
    boxes, scores = np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)
    k = min(max(max_det, 300), len(scores))
    if agnostic:
        best, labels = scores.max(1), scores.argmax(1)
        top = np.argsort(-best, kind="stable")[:k]
        sel_scores, sel_labels, sel_anchor = best[top], labels[top], top
    else:
        first = np.argsort(-scores.max(1), kind="stable")[:k]
        flat = scores[first].reshape(-1)
        top = np.argsort(-flat, kind="stable")[:k]
        sel_scores, sel_labels, sel_anchor = flat[top], top % nc, first[top // nc]
    keep = sel_scores > np.float32(conf)
    if classes is not None:
        keep &= np.isin(sel_labels, classes)
    idx = np.flatnonzero(keep)[:max_det]
    return np.clip(boxes[sel_anchor[idx]], 0, IMGSZ), sel_scores[idx], sel_labels[idx]  # scale_boxes clips


@pytest.mark.parametrize("conf, max_det, agnostic, classes, mu", [
    (0.25, 300, False, None, -2.0),
    (0.001, 300, False, None, -2.0),   # more pairs over conf than k: the top-k cut decides
    (0.001, 20, False, None, 0.0),     # max_det under 300: k stays 300, the first 20 survive
    (0.05, 300, True, None, -1.0),     # agnostic: one class per anchor
    (0.01, 300, False, (1, 3), -1.0),  # classes filter after the top-k
])
def test_truncated_one_to_one_matches_ultralytics_selection(conf, max_det, agnostic, classes, mu):
    nc = 5
    rng = np.random.default_rng(7)
    spec = truncated_spec(nc)
    head = head_for(spec, HeadSettings(conf=conf, max_det=max_det, agnostic=agnostic, classes=classes))
    assert isinstance(head, OneToOneHead)
    outputs = random_outputs(rng, nc, mu, 1.5)
    got = head(outputs, 0, plan_letterbox((IMGSZ, IMGSZ), (IMGSZ, IMGSZ))).fields
    boxes, scores, labels = ultralytics_one_to_one(outputs, nc, conf, max_det, agnostic, classes)
    assert len(scores) > 10
    np.testing.assert_array_equal(got["scores"], scores)
    np.testing.assert_array_equal(got["class_ids"], labels)
    np.testing.assert_allclose(got["xyxy"], boxes, atol=1e-4)


def test_one_to_many_branch_keeps_nms():
    """The same outputs read as the one-to-many branch go through NMS: fewer, non-overlapping same-class boxes."""
    nc = 5
    outputs = random_outputs(np.random.default_rng(3), nc, 0.0, 1.5)
    settings = HeadSettings(conf=0.25, iou=0.5)
    letterbox = plan_letterbox((IMGSZ, IMGSZ), (IMGSZ, IMGSZ))
    one2one = head_for(truncated_spec(nc, "one2one"), settings)(outputs, 0, letterbox).fields
    one2many = head_for(truncated_spec(nc, "one2many"), settings)(outputs, 0, letterbox).fields
    assert not isinstance(head_for(truncated_spec(nc, "one2many"), settings), OneToOneHead)
    assert 0 < len(one2many["scores"]) < len(one2one["scores"])


def stock_spec(shape, task="detect", end2end: str | None = "True", nc=3):
    meta = {"task": task, "names": repr({i: str(i) for i in range(nc)}), "stride": "32", "imgsz": "[64, 64]"}
    if end2end is not None:
        meta["end2end"] = end2end
    return read_model_spec("stock.onnx", meta, [TensorInfo("images", (1, 3, 64, 64), "tensor(float)")],
                           [TensorInfo("output0", shape, "tensor(float)")])


def test_stock_end2end_filters_like_ultralytics():
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, :, 4] = np.linspace(0.9, 0.0, 300, dtype=np.float32)
    rows[0, :, 5] = np.arange(300) % 3
    rows[0, :, :4] = [4, 4, 20, 20]
    spec = stock_spec((1, 300, 6))
    assert spec.layout == END2END_LAYOUT
    head = head_for(spec, HeadSettings(conf=0.5, max_det=50, classes=(0, 2)))
    assert isinstance(head, StockEnd2EndHead)
    got = head({"output0": rows}, 0, plan_letterbox((64, 64), (64, 64))).fields
    want = np.flatnonzero((rows[0, :, 4] > np.float32(0.5)) & np.isin(rows[0, :, 5], (0, 2)))[:50]
    np.testing.assert_array_equal(got["scores"], rows[0, want, 4])
    np.testing.assert_array_equal(got["class_ids"], rows[0, want, 5].astype(int))


def test_end2end_detected_from_shape_without_metadata():
    assert stock_spec((1, 300, 6), end2end=None).layout == END2END_LAYOUT
    assert stock_spec((1, 7, 84), end2end=None).layout != END2END_LAYOUT
    with pytest.raises(ModelError, match="end2end"):  # (1, 7, 6): 4 + nc rows and 6 columns, either reading fits
        stock_spec((1, 7, 6), end2end=None)
    with pytest.raises(ModelError, match="metadata end2end=True"):
        stock_spec((1, 7, 84), end2end="True")
