"""Tests of runtime.kernels.decode against a dense numpy reference of Ultralytics' candidate stage, against
Ultralytics' own torch modules (DFL, make_anchors, dist2bbox, non_max_suppression), on edge cases and
bad input, and that the compiled kernels check their arguments and release the GIL."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from runtime.kernels.decode import Candidates, decode_standard, decode_truncated, gather_anchor_rows
from runtime.errors import InputError

STRIDES = (8, 16, 32)

# ------------------------------------------------------------------------------------ numpy reference


def sig32(x):
    """float32 score of a logit: the float64 sigmoid rounded once to float32."""
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)


def ref_dense_boxes(box_levels, strides, bins=None):
    """Dense DFL + dist2bbox over all anchors in float64 -> (N, 4) float32 xyxy letterbox pixels."""
    out = []
    for b, s in zip(box_levels, strides):
        c, h, w = b.shape
        r = c // 4
        x = b.reshape(4, r, h * w).astype(np.float64)
        e = np.exp(x - x.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        values = np.arange(r, dtype=np.float64) if bins is None else np.asarray(bins, np.float64)
        d = (p * values[None, :, None]).sum(1)  # (4, HW): l, t, r, b
        yy, xx = np.divmod(np.arange(h * w), w)
        ax, ay = xx + 0.5, yy + 0.5
        out.append(np.stack([(ax - d[0]) * s, (ay - d[1]) * s, (ax + d[2]) * s, (ay + d[3]) * s], 1))
    return np.concatenate(out).astype(np.float32)


def ref_select(scores, conf, multi_label, classes, cap):
    """Ultralytics' candidate rules on dense (N, nc) float32 scores -> (anchor, class, score) arrays in
    anchor order (then class order); cap keeps the top scores, ties at the cut to the earliest row."""
    conf32 = np.float32(conf)
    if multi_label:
        i, j = np.nonzero(scores > conf32)  # row-major: anchor order, then class order
        sc = scores[i, j]
    else:
        j_all = scores.argmax(1)  # first max on ties
        best = scores[np.arange(len(scores)), j_all]
        i = np.flatnonzero(best > conf32)
        j, sc = j_all[i], best[i]
    if classes is not None:
        keep = np.isin(j, np.asarray(list(classes), dtype=np.int64))
        i, j, sc = i[keep], j[keep], sc[keep]
    if len(sc) > cap:
        keep = np.sort(np.argsort(-sc, kind="stable")[:cap])
        i, j, sc = i[keep], j[keep], sc[keep]
    return i.astype(np.int64), j.astype(np.int32), sc.astype(np.float32)


def ref_truncated(box_levels, cls_levels, strides, conf, multi_label=False, classes=None, cap=30000):
    boxes = ref_dense_boxes(box_levels, strides)
    scores = np.concatenate([sig32(c.reshape(c.shape[0], -1)) for c in cls_levels], 1).T  # (N, nc)
    i, j, sc = ref_select(scores, conf, multi_label, classes, cap)
    return boxes[i], sc, j, i


def ref_standard(pred, nc, conf, multi_label=False, classes=None, cap=30000):
    xywh = pred[:4].T
    xy, wh = xywh[:, :2], xywh[:, 2:] / np.float32(2)
    boxes = np.concatenate([xy - wh, xy + wh], 1)
    i, j, sc = ref_select(pred[4 : 4 + nc].T, conf, multi_label, classes, cap)
    return boxes[i], sc, j, i


def check(got: Candidates, ref, box_atol=1e-4, score_atol=1e-6):
    boxes, scores, cls, aid = ref
    assert got.boxes_xyxy.dtype == np.float32 and got.boxes_xyxy.shape == (len(got), 4)
    assert got.scores.dtype == np.float32 and got.class_ids.dtype == np.int32 and got.anchor_ids.dtype == np.int64
    assert len(got) == len(scores), f"{len(got)} candidates, reference has {len(scores)}"
    np.testing.assert_array_equal(got.anchor_ids, aid)
    np.testing.assert_array_equal(got.class_ids, cls)
    np.testing.assert_allclose(got.scores, scores, rtol=0, atol=score_atol)
    np.testing.assert_allclose(got.boxes_xyxy, boxes, rtol=0, atol=box_atol)


# ------------------------------------------------------------------------------------------- inputs


def make_levels(rng, sizes, nc, reg_max, mu=-3.0, sd=3.0, box_sd=2.0):
    box = [rng.normal(0.0, box_sd, (4 * reg_max, h, w)).astype(np.float32) for h, w in sizes]
    cls = [rng.normal(mu, sd, (nc, h, w)).astype(np.float32) for h, w in sizes]
    return box, cls


SIZES_A = [(8, 12), (4, 6), (2, 3)]  # a 64x96 letterbox
SIZES_B = [(5, 7), (3, 4), (1, 1)]  # odd sizes and a 1x1 level


@pytest.mark.parametrize("nc", [1, 3, 80])
@pytest.mark.parametrize("reg_max", [16, 8])
@pytest.mark.parametrize("conf", [0.001, 0.25, 0.9])
@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("classes", [None, "some"])
def test_truncated_matches_reference(nc, reg_max, conf, multi_label, classes):
    rng = np.random.default_rng(1000 * nc + 10 * reg_max + int(conf * 1000) + multi_label)
    sizes = SIZES_A if reg_max == 16 else SIZES_B
    box, cls = make_levels(rng, sizes, nc, reg_max)
    if classes == "some":
        classes = [0] if nc == 1 else [0, nc - 1, 7, 1000, -3]  # ids >= nc / < 0 match nothing
    got = decode_truncated(box, cls, STRIDES, conf, multi_label=multi_label, classes=classes)
    ref = ref_truncated(box, cls, STRIDES, conf, multi_label, classes)
    check(got, ref)
    if conf == 0.25:  # the random logits give candidates (and non-candidates where nc is small)
        assert len(got) > 0


@pytest.mark.parametrize("conf", [0.001, 0.25])
@pytest.mark.parametrize("multi_label", [False, True])
def test_truncated_640_80_classes(conf, multi_label):
    rng = np.random.default_rng(7)
    sizes = [(80, 80), (40, 40), (20, 20)]
    box, cls = make_levels(rng, sizes, 80, 16, mu=-7.0, sd=2.0)
    got = decode_truncated(box, cls, STRIDES, conf, multi_label=multi_label)
    ref = ref_truncated(box, cls, STRIDES, conf, multi_label)
    check(got, ref)
    if multi_label and conf == 0.001:
        assert len(got) == 30000  # the cap triggered


def test_noncontiguous_and_other_dtypes_and_batch_axis():
    rng = np.random.default_rng(3)
    box, cls = make_levels(rng, SIZES_A, 5, 16)
    ref = ref_truncated(box, cls, STRIDES, 0.25)
    box64 = [np.asfortranarray(b.astype(np.float64)) for b in box]
    cls_t = [np.ascontiguousarray(c.transpose(0, 2, 1)).transpose(0, 2, 1) for c in cls]  # strided views
    check(decode_truncated(box64, cls_t, STRIDES, 0.25), ref)
    check(decode_truncated([b[None] for b in box], [c[None] for c in cls], list(STRIDES), 0.25), ref)


# ---------------------------------------------------------------------------------- Ultralytics torch


def _ultralytics_dense(box, cls, strides):
    """The Detect head's inference decode, built from Ultralytics' own modules -> (1, 4 + nc, N)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.nn.modules.block import DFL
    from ultralytics.utils.tal import dist2bbox, make_anchors

    reg_max = box[0].shape[0] // 4
    nc = cls[0].shape[0]
    feats = [torch.from_numpy(np.concatenate([b, c], 0))[None] for b, c in zip(box, cls)]
    strides_t = torch.tensor(strides, dtype=torch.float32)
    anchors, stride_t = (x.transpose(0, 1) for x in make_anchors(feats, strides_t, 0.5))
    x_cat = torch.cat([f.view(1, 4 * reg_max + nc, -1) for f in feats], 2)
    box_t, cls_t = x_cat.split((4 * reg_max, nc), 1)
    with torch.no_grad():
        dbox = dist2bbox(DFL(reg_max)(box_t), anchors.unsqueeze(0), xywh=True, dim=1) * stride_t
        return torch.cat((dbox, cls_t.sigmoid()), 1)


def _ultralytics_candidates(pred, conf, multi_label, classes):
    """Ultralytics' non_max_suppression with an IoU threshold of 1 (suppresses nothing): its
    candidates, as (boxes, scores, class_ids, anchor_ids) sorted to anchor/class order."""
    from ultralytics.utils.nms import non_max_suppression

    out, idx = non_max_suppression(
        pred, conf, 1.0, classes=classes, multi_label=multi_label, max_det=10**9, return_idxs=True
    )
    out, idx = out[0].numpy(), idx[0].numpy().astype(np.int64)
    order = np.lexsort((out[:, 5], idx))
    out, idx = out[order], idx[order]
    return out[:, :4], out[:, 4], out[:, 5].astype(np.int32), idx


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("classes", [None, [1, 2]])
def test_truncated_matches_ultralytics_torch(multi_label, classes):
    rng = np.random.default_rng(11)
    sizes = [(16, 20), (8, 10), (4, 5)]
    box, cls = make_levels(rng, sizes, 4, 16, mu=-4.0, sd=2.5)
    pred = _ultralytics_dense(box, cls, STRIDES)
    ref = _ultralytics_candidates(pred, 0.25, multi_label, classes)
    got = decode_truncated(box, cls, STRIDES, 0.25, multi_label=multi_label, classes=classes)
    assert len(got) > 20
    check(got, ref, box_atol=1e-3, score_atol=1e-6)  # torch goes via centre/size in float32
    # the standard path on the same tensor matches Ultralytics exactly (same float32 xywh2xyxy)
    std = decode_standard(pred[0].numpy(), 4, 0.25, multi_label=multi_label, classes=classes)
    check(std, ref, box_atol=0, score_atol=0)


def test_dfl_matches_ultralytics_module():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.nn.modules.block import DFL

    rng = np.random.default_rng(5)
    for reg_max in (16, 8):
        box, cls = make_levels(rng, [(6, 9)], 1, reg_max, mu=5.0, sd=0.1, box_sd=4.0)  # every anchor a candidate
        got = decode_truncated(box, cls, [8.0], 0.5)
        assert len(got) == 54
        with torch.no_grad():
            d = DFL(reg_max)(torch.from_numpy(box[0].reshape(1, 4 * reg_max, -1)))[0].double().numpy()
        yy, xx = np.divmod(np.arange(54), 9)
        expect = np.stack([xx + 0.5 - d[0], yy + 0.5 - d[1], xx + 0.5 + d[2], yy + 0.5 + d[3]], 1) * 8
        np.testing.assert_allclose(got.boxes_xyxy, expect, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------ edge cases


def test_zero_candidates():
    rng = np.random.default_rng(0)
    box, cls = make_levels(rng, SIZES_A, 3, 16, mu=-30.0, sd=1.0)
    for ml in (False, True):
        got = decode_truncated(box, cls, STRIDES, 0.001, multi_label=ml)
        assert len(got) == 0
        assert got.boxes_xyxy.shape == (0, 4) and got.boxes_xyxy.dtype == np.float32
        assert got.scores.dtype == np.float32 and got.class_ids.dtype == np.int32 and got.anchor_ids.dtype == np.int64
    e = Candidates.empty()
    assert len(e) == 0 and e.boxes_xyxy.shape == (0, 4) and e.anchor_ids.dtype == np.int64
    got = decode_standard(np.zeros((4 + 3, 10), np.float32), 3, 0.0)  # score 0 is not > 0
    assert len(got) == 0


def test_exactly_one_candidate_known_box():
    reg_max = 16
    sizes = [(4, 4), (2, 2), (1, 1)]
    box = [np.zeros((4 * reg_max, h, w), np.float32) for h, w in sizes]  # uniform bins: distance 7.5
    cls = [np.full((3, h, w), -20.0, np.float32) for h, w in sizes]
    cls[1][2, 1, 0] = 2.0  # level 1, y=1, x=0 -> global anchor 16 + 2 = 18, class 2
    got = decode_truncated(box, cls, STRIDES, 0.25)
    assert len(got) == 1
    assert got.anchor_ids.tolist() == [18] and got.class_ids.tolist() == [2]
    np.testing.assert_allclose(got.scores, sig32([2.0]), atol=0)
    ax, ay = 0.5, 1.5
    expect = [(ax - 7.5) * 16, (ay - 7.5) * 16, (ax + 7.5) * 16, (ay + 7.5) * 16]
    np.testing.assert_allclose(got.boxes_xyxy[0], expect, atol=1e-5)
    # a single 1x1 level
    got = decode_truncated([box[2]], [np.full((3, 1, 1), 1.0, np.float32)], [32], 0.5, multi_label=True)
    assert got.anchor_ids.tolist() == [0, 0, 0] and got.class_ids.tolist() == [0, 1, 2]
    np.testing.assert_allclose(got.boxes_xyxy, [[-224, -224, 256, 256]] * 3, atol=1e-4)


def test_custom_dfl_bins_match_reference():
    """Checkpoints whose DFL weights went through int8 carry their own bin values."""
    rng = np.random.default_rng(7)
    box, cls = make_levels(rng, SIZES_A, 5, 16)
    bins = np.round(np.arange(16) * 127 / 15) * 15 / 127  # 0..15 rounded through an int8 grid
    got = decode_truncated(box, cls, STRIDES, 0.001, dfl_bins=bins)
    dense = ref_dense_boxes(box, STRIDES, bins)
    np.testing.assert_allclose(got.boxes_xyxy, dense[got.anchor_ids], atol=1e-4)
    plain = decode_truncated(box, cls, STRIDES, 0.001)
    assert np.abs(plain.boxes_xyxy - got.boxes_xyxy).max() > 1e-2  # the bins really matter
    with pytest.raises(InputError, match="dfl_bins must hold reg_max=16"):
        decode_truncated(box, cls, STRIDES, 0.001, dfl_bins=bins[:8])


def test_one_hot_dfl_gives_exact_distances():
    reg_max = 16
    box = np.full((4 * reg_max, 1, 2), -1000.0, np.float32)
    for side, bin_ in enumerate((3, 5, 0, 15)):
        box[side * reg_max + bin_, 0, 1] = 1000.0  # anchor x=1: l=3, t=5, r=0, b=15 exactly
    cls = np.full((1, 1, 2), 3.0, np.float32)
    got = decode_truncated([box], [cls], [8], 0.5)
    np.testing.assert_allclose(got.boxes_xyxy[1], [(1.5 - 3) * 8, (0.5 - 5) * 8, 1.5 * 8, (0.5 + 15) * 8], atol=1e-5)


def _boundary_logits(conf):
    """(l0, l1): adjacent float32 logits with sig32(l0) <= float32(conf) < sig32(l1)."""
    c32 = np.float32(conf)
    lo = np.float32(np.log(conf / (1 - conf)) - 1e-5)
    while sig32(np.nextafter(lo, np.float32(np.inf))) <= c32:
        lo = np.nextafter(lo, np.float32(np.inf))
    hi = np.nextafter(lo, np.float32(np.inf))
    assert sig32(lo) <= c32 < sig32(hi)
    return lo, hi


@pytest.mark.parametrize("conf", [0.001, 0.1, 0.25, 0.9])
@pytest.mark.parametrize("multi_label", [False, True])
def test_logit_exactly_at_threshold(conf, multi_label):
    lo, hi = _boundary_logits(conf)
    cls = np.full((2, 2, 3), -50.0, np.float32)
    cls[0, 0, 0] = lo  # anchor 0: at the boundary, not a candidate (strict >)
    cls[1, 0, 1] = hi  # anchor 1: the next float32 up, a candidate
    cls[0, 1, 2], cls[1, 1, 2] = lo, hi  # anchor 5: class 1 only
    box = np.zeros((64, 2, 3), np.float32)
    got = decode_truncated([box], [cls], [8], conf, multi_label=multi_label)
    assert got.anchor_ids.tolist() == [1, 5] and got.class_ids.tolist() == [1, 1]
    assert np.all(got.scores > np.float32(conf))
    # the same on already-sigmoided scores of the standard layout
    pred = np.zeros((4 + 2, 6), np.float32)
    pred[4:] = sig32(cls.reshape(2, -1))
    std = decode_standard(pred, 2, conf, multi_label=multi_label)
    assert std.anchor_ids.tolist() == [1, 5] and std.class_ids.tolist() == [1, 1]


def test_score_exactly_conf_float32_semantics():
    """A score equal to float32(conf) is not a candidate even though it exceeds the float64 conf (0.1)."""
    pred = np.zeros((5, 3), np.float32)
    pred[4] = [np.float32(0.1), np.nextafter(np.float32(0.1), np.float32(1)), 0.05]
    assert float(np.float32(0.1)) > 0.1
    assert decode_standard(pred, 1, 0.1).anchor_ids.tolist() == [1]


def test_best_class_ties_first_max_in_score_space():
    # identical logits; saturated logits (both score 1.0f); distinct float32 logits with equal scores
    l1 = np.float32(0.3)
    l2 = np.nextafter(l1, np.float32(1))
    while sig32(l2) != sig32(l1):
        l1 = l2
        l2 = np.nextafter(l1, np.float32(1))
    assert l2 > l1 and sig32(l1) == sig32(l2)
    assert sig32(20.0) == sig32(30.0) == 1.0
    cols = [(0.5, 0.5, -9), (-9, 20.0, 30.0), (-9, l1, l2), (l2, -9, l1), (-9, 1.0, 2.0)]
    cls = np.array(cols, np.float32).T.reshape(3, 1, 5)
    got = decode_truncated([np.zeros((16, 1, 5), np.float32)], [cls], [8], 0.25)
    assert got.anchor_ids.tolist() == [0, 1, 2, 3, 4]
    assert got.class_ids.tolist() == [0, 1, 1, 0, 2]
    pred = np.concatenate([np.ones((4, 5), np.float32), sig32(cls.reshape(3, 5))], 0)
    assert decode_standard(pred, 3, 0.25).class_ids.tolist() == [0, 1, 1, 0, 2]


def test_classes_filter_after_best_class():
    cls = np.full((3, 1, 2), -9.0, np.float32)
    cls[:, 0, 0] = [4.0, 3.0, -9.0]  # best class 0, class 1 also above conf
    cls[:, 0, 1] = [-9.0, 3.0, -9.0]
    box = np.zeros((64, 1, 2), np.float32)
    single = decode_truncated([box], [cls], [8], 0.25, classes=[1])
    assert single.anchor_ids.tolist() == [1] and single.class_ids.tolist() == [1]  # anchor 0 dropped, not relabelled
    multi = decode_truncated([box], [cls], [8], 0.25, classes=[1], multi_label=True)
    assert multi.anchor_ids.tolist() == [0, 1] and multi.class_ids.tolist() == [1, 1]
    for classes in ([], [2], [5, -1], np.array([], np.int64)):  # excludes every candidate
        assert len(decode_truncated([box], [cls], [8], 0.25, classes=classes)) == 0
        assert len(decode_truncated([box], [cls], [8], 0.25, classes=classes, multi_label=True)) == 0
    assert decode_truncated([box], [cls], [8], 0.25, classes=np.int64(1)).anchor_ids.tolist() == [1]


def _assert_top_k(got_scores, all_scores, k):
    """The kept scores are the k largest (as a multiset) of all candidate scores."""
    assert len(got_scores) == k
    np.testing.assert_array_equal(np.sort(got_scores), np.sort(all_scores)[-k:])


@pytest.mark.parametrize("multi_label", [False, True])
def test_cap_with_ties(multi_label):
    rng = np.random.default_rng(21)
    sizes = [(80, 80), (40, 40), (20, 20)]
    box, cls = make_levels(rng, sizes, 10, 16)
    for c in cls:  # coarse logits: large groups of equal scores, so the cut falls inside a tie group
        c[...] = np.round(c * 2) / 2
    cap = 30000 if multi_label else 5000
    got = decode_truncated(box, cls, STRIDES, 0.001, multi_label=multi_label, max_candidates=cap)
    ref = ref_truncated(box, cls, STRIDES, 0.001, multi_label, cap=cap)
    check(got, ref)
    full = ref_truncated(box, cls, STRIDES, 0.001, multi_label, cap=10**9)
    assert len(full[1]) > cap
    _assert_top_k(got.scores, full[1], cap)
    kth = np.sort(full[1])[-cap]
    assert np.count_nonzero(full[1] == kth) > np.count_nonzero(got.scores == kth) > 0  # a tie was cut
    assert np.all(np.diff(got.anchor_ids) >= 0)  # still anchor order


def test_cap_all_equal_scores_and_small_caps():
    cls = np.full((2, 3, 4), 1.5, np.float32)
    box = np.zeros((64, 3, 4), np.float32)
    got = decode_truncated([box], [cls], [8], 0.25, multi_label=True, max_candidates=5)
    assert got.anchor_ids.tolist() == [0, 0, 1, 1, 2] and got.class_ids.tolist() == [0, 1, 0, 1, 0]
    got = decode_truncated([box], [cls], [8], 0.25, max_candidates=1)
    assert got.anchor_ids.tolist() == [0]
    cls[1, 2, 3] = 2.0
    got = decode_truncated([box], [cls], [8], 0.25, multi_label=True, max_candidates=1)
    assert got.anchor_ids.tolist() == [11] and got.class_ids.tolist() == [1]


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("conf", [0.001, 0.25, 0.9])
def test_standard_matches_reference(multi_label, conf):
    rng = np.random.default_rng(int(conf * 1000) + multi_label)
    nc, n, extra = 7, 500, 5
    pred = np.empty((4 + nc + extra, n), np.float32)
    pred[:2] = rng.uniform(0, 640, (2, n))
    pred[2:4] = rng.uniform(1, 300, (2, n))
    pred[4 : 4 + nc] = sig32(rng.normal(-2, 3, (nc, n)))
    pred[4 + nc :] = rng.normal(size=(extra, n))
    for classes in (None, [0, 3]):
        got = decode_standard(pred, nc, conf, multi_label=multi_label, classes=classes)
        check(got, ref_standard(pred, nc, conf, multi_label, classes), box_atol=0, score_atol=0)
    got = decode_standard(pred[None], nc, conf, multi_label=multi_label, max_candidates=50)
    check(got, ref_standard(pred, nc, conf, multi_label, cap=50), box_atol=0, score_atol=0)


def test_gather_anchor_rows_both_forms():
    rng = np.random.default_rng(9)
    levels = [rng.normal(size=(32, h, w)).astype(np.float32) for h, w in SIZES_B]
    flat = np.concatenate([lv.reshape(32, -1) for lv in levels], 1)  # (32, N): the standard layout
    n = flat.shape[1]
    ids = np.array([0, 5, n - 1, 35, 36, 47, 47, 3], np.int64)
    expect = flat[:, ids].T
    got = gather_anchor_rows(levels, ids)
    assert got.shape == (len(ids), 32) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(gather_anchor_rows(flat, ids), expect)
    np.testing.assert_array_equal(gather_anchor_rows(flat.astype(np.float64), ids.astype(np.int32)), expect)
    assert gather_anchor_rows(levels, np.empty(0, np.int64)).shape == (0, 32)
    # rows of decode_truncated candidates line up with the anchor ids it reports
    box, cls = make_levels(rng, SIZES_B, 3, 16)
    cand = decode_truncated(box, cls, STRIDES, 0.25, multi_label=True)
    rows = gather_anchor_rows(cls, cand.anchor_ids)
    np.testing.assert_allclose(sig32(rows[np.arange(len(cand)), cand.class_ids]), cand.scores, rtol=0, atol=1e-7)
    with pytest.raises(InputError, match=r"\[0, 48\).*max 48"):
        gather_anchor_rows(levels, np.array([48]))
    with pytest.raises(InputError, match="expected 32 channels like level 0, got 31"):
        gather_anchor_rows([levels[0], levels[1][:31]], ids)
    with pytest.raises(InputError, match="integer"):
        gather_anchor_rows(levels, np.array([0.5]))
    with pytest.raises(InputError, match=r"\(C, N\)"):
        gather_anchor_rows(levels[0], ids)


def test_take_kept_matches_numpy_indexing():
    from runtime.kernels._anchors import take_kept

    rng = np.random.default_rng(12)
    box, cls = make_levels(rng, SIZES_B, 3, 16)
    cand = decode_truncated(box, cls, STRIDES, 0.25, multi_label=True)
    levels = [rng.normal(size=(32, h, w)).astype(np.float32) for h, w in SIZES_B]
    maps = tuple(lv.reshape(32, -1) for lv in levels)
    level_ends = np.cumsum([m.shape[1] for m in maps]).astype(np.int64)
    keep = np.array([len(cand) - 1, 0, 2, 2], np.int64)
    boxes, scores, class_ids, anchor_ids, rows = take_kept(
        keep, cand.boxes_xyxy, cand.scores, cand.class_ids, cand.anchor_ids, maps, level_ends)
    np.testing.assert_array_equal(boxes, cand.boxes_xyxy[keep])
    np.testing.assert_array_equal(scores, cand.scores[keep])
    np.testing.assert_array_equal(class_ids, cand.class_ids[keep])
    np.testing.assert_array_equal(anchor_ids, cand.anchor_ids[keep])
    np.testing.assert_array_equal(rows, gather_anchor_rows(levels, cand.anchor_ids[keep]))
    assert (boxes.dtype, scores.dtype, class_ids.dtype, anchor_ids.dtype) == (np.float32, np.float32, np.int32, np.int64)
    none = take_kept(keep, cand.boxes_xyxy, cand.scores, cand.class_ids, cand.anchor_ids, (), np.zeros(0, np.int64))
    assert none[4] is None
    args = (cand.boxes_xyxy, cand.scores, cand.class_ids, cand.anchor_ids, maps, level_ends)
    with pytest.raises(IndexError, match="outside"):
        take_kept(np.array([len(cand)], np.int64), *args)
    with pytest.raises(ValueError, match="candidate arrays disagree"):
        take_kept(keep, cand.boxes_xyxy, cand.scores[:-1], *args[2:])
    with pytest.raises(ValueError, match="does not match"):
        take_kept(keep, *args[:4], maps[:2] + (maps[2][:, :-1],), level_ends)


# ------------------------------------------------------------------------------------------ bad input


def test_bad_shapes_raise_input_error():
    rng = np.random.default_rng(2)
    box, cls = make_levels(rng, SIZES_A, 3, 16)
    with pytest.raises(InputError, match=r"expected 3 class levels and 3 strides.*got 2 class levels and 3 strides"):
        decode_truncated(box, cls[:2], STRIDES, 0.25)
    with pytest.raises(InputError, match=r"expected 3 class levels and 3 strides.*got 3 class levels and 2 strides"):
        decode_truncated(box, cls, STRIDES[:2], 0.25)
    with pytest.raises(InputError, match="multiple of 4.*got 63"):
        decode_truncated([box[0][:63]] + box[1:], cls, STRIDES, 0.25)
    with pytest.raises(InputError, match=r"expected 64 box channels like level 0, got 32"):
        decode_truncated([box[0], box[1][:32], box[2]], cls, STRIDES, 0.25)
    with pytest.raises(InputError, match=r"expected 3 class channels like level 0, got 2"):
        decode_truncated(box, [cls[0], cls[1][:2], cls[2]], STRIDES, 0.25)
    with pytest.raises(InputError, match=r"expected \(4, 6\) \(box\), got \(4, 5\) \(class\)"):
        decode_truncated(box, [cls[0], cls[1][:, :, :5], cls[2]], STRIDES, 0.25)
    with pytest.raises(InputError, match=r"expected a 3-D array, got shape \(64, 96\)"):
        decode_truncated([box[0].reshape(64, -1)] + box[1:], cls, STRIDES, 0.25)
    with pytest.raises(InputError, match="at least one level"):
        decode_truncated([], [], [], 0.25)
    with pytest.raises(InputError, match="stride"):
        decode_truncated(box, cls, [8, 0, 32], 0.25)
    with pytest.raises(InputError, match="conf_thr"):
        decode_truncated(box, cls, STRIDES, 1.5)
    with pytest.raises(InputError, match="max_candidates"):
        decode_truncated(box, cls, STRIDES, 0.25, max_candidates=0)
    with pytest.raises(InputError, match="integer class ids"):
        decode_truncated(box, cls, STRIDES, 0.25, classes=[0.5])
    with pytest.raises(InputError, match="float array"):
        decode_truncated(box, [c.astype(object) for c in cls], STRIDES, 0.25)
    pred = np.zeros((4 + 3, 10), np.float32)
    with pytest.raises(InputError, match=r"at least 4 \+ nc = 9 rows, got shape \(7, 10\)"):
        decode_standard(pred, 5, 0.25)
    with pytest.raises(InputError, match=r"expected a 2-D array, got shape \(7,\)"):
        decode_standard(pred[:, 0], 3, 0.25)
    with pytest.raises(InputError, match="nc"):
        decode_standard(pred, 0, 0.25)


def test_conf_edges():
    rng = np.random.default_rng(4)
    box, cls = make_levels(rng, SIZES_B, 2, 16)
    cls[0][0, 0, 0] = -200.0  # score underflows to 0: not > 0
    check(decode_truncated(box, cls, STRIDES, 0.0, multi_label=True), ref_truncated(box, cls, STRIDES, 0.0, True))
    assert len(decode_truncated(box, cls, STRIDES, 1.0)) == 0


# ------------------------------------------------------------------------------------ compiled kernels


def test_dfl_free_boxes_are_the_raw_distances():
    """reg_max 1 (YOLO26): no DFL, the box conv's four channels are the distances l, t, r, b in strides."""
    rng = np.random.default_rng(1)
    box, cls = make_levels(rng, SIZES_B, 3, 1, mu=5.0, sd=0.1, box_sd=4.0)  # every anchor a candidate
    got = decode_truncated(box, cls, STRIDES, 0.25)
    assert len(got) == sum(h * w for h, w in SIZES_B)
    expect = []
    for b, s in zip(box, STRIDES):
        h, w = b.shape[1:]
        d = b.reshape(4, h * w).astype(np.float64)
        yy, xx = np.divmod(np.arange(h * w), w)
        expect.append(np.stack([(xx + 0.5 - d[0]) * s, (yy + 0.5 - d[1]) * s, (xx + 0.5 + d[2]) * s,
                                (yy + 0.5 + d[3]) * s], 1))
    np.testing.assert_array_equal(got.boxes_xyxy, np.concatenate(expect).astype(np.float32)[got.anchor_ids])


@pytest.mark.parametrize("reg_max", [3, 5, 7, 17])
def test_dfl_of_any_reg_max_matches_reference(reg_max):
    """The DFL runs the bins in groups of four lanes; reg_max not a multiple of 4 pads the last group."""
    rng = np.random.default_rng(reg_max)
    box, cls = make_levels(rng, SIZES_B, 3, reg_max, mu=5.0, sd=0.1, box_sd=4.0)  # every anchor a candidate
    for shift in (0.0, -1000.0):  # far below the exp clamp: the padding must still add nothing
        shifted = [b + np.float32(shift) for b in box]
        got = decode_truncated(shifted, cls, STRIDES, 0.25)
        assert len(got) == sum(h * w for h, w in SIZES_B)
        expect = ref_dense_boxes(shifted, STRIDES)[got.anchor_ids]
        np.testing.assert_allclose(got.boxes_xyxy, expect, rtol=0, atol=1e-4)


def test_kernels_reject_inconsistent_arguments():
    """The compiled kernels check what they index with (ValueError), whatever the caller passes."""
    from runtime.kernels._decode import decode_standard_image, decode_truncated_image

    box, cls = np.zeros((64, 12), np.float32), np.zeros((3, 12), np.float32)
    args = (np.array([4], np.int64), np.array([8.0]), np.arange(16, dtype=np.float64), -1.0, np.float32(0.25),
            np.ones(3, np.uint8), False, 100)
    assert len(decode_truncated_image((box,), (cls,), *args)[1]) == 12  # logit 0: score 0.5 > 0.25
    with pytest.raises(ValueError, match="class level 0"):
        decode_truncated_image((box,), (cls.astype(np.float64),), *args)
    with pytest.raises(ValueError, match="box level 0"):
        decode_truncated_image((box[:, ::2],), (cls[:, :6],), *args)
    with pytest.raises(ValueError, match="level 0"):
        decode_truncated_image((box[:, :8],), (cls,), *args)  # 8 box columns, 12 class columns
    with pytest.raises(ValueError, match="widths and strides"):
        decode_truncated_image((box, box), (cls, cls), *args)
    with pytest.raises(ValueError, match="16 DFL bins and 3 class flags"):
        decode_truncated_image((box,), (cls,), *args[:2], np.arange(8.0), *args[3:])
    with pytest.raises(ValueError, match="disagree"):
        decode_standard_image(np.zeros((6, 10), np.float32), 3, np.float32(0.25), np.ones(3, np.uint8), False, 10)


def _progress_while(call) -> int:
    """Loop iterations another Python thread completes while call() runs.

    The switch interval is set far beyond the call, so the calling thread never hands the GIL over on
    its own: the other thread can only run during the call if the call releases the GIL. Outside the
    call the counting thread sleeps between iterations, so the caller always gets the GIL back."""
    import threading
    import time

    count = [0]
    stop = threading.Event()

    def count_iterations():
        while not stop.is_set():
            count[0] += 1
            time.sleep(1e-4)

    old_interval = sys.getswitchinterval()
    counter = threading.Thread(target=count_iterations, daemon=True)
    sys.setswitchinterval(1000.0)
    try:
        counter.start()
        while count[0] < 3:  # the counting thread is running
            time.sleep(1e-3)
        before = count[0]
        call()
        progress = count[0] - before
    finally:
        stop.set()
        sys.setswitchinterval(old_interval)
    counter.join()
    return progress


def test_progress_probe_sees_a_call_that_holds_the_gil():
    """The probe reads 0 for a call that keeps the GIL (pure Python runs as long as a decode)."""
    assert _progress_while(lambda: sum(range(3_000_000))) == 0


@pytest.mark.parametrize("layout", ["truncated", "standard"])
def test_kernels_release_the_gil(layout):
    """Another Python thread keeps counting while one long decode runs (tens of ms: 4M prefiltered
    (anchor, class) pairs, each confirmed, then a radix select and the DFL of the kept ones)."""
    from runtime.kernels._decode import decode_standard_image, decode_truncated_image

    nc, n = 200, 20000
    allowed = np.ones(nc, np.uint8)
    if layout == "truncated":
        box = np.random.default_rng(0).normal(0, 2, (64, n)).astype(np.float32)
        cls = np.full((nc, n), 3.0, np.float32)
        args = ((box,), (cls,), np.array([100], np.int64), np.array([8.0]), np.arange(16, dtype=np.float64),
                float(np.log(0.25 / 0.75)) - 1e-6, np.float32(0.25), allowed, True, 30000)
        kernel = decode_truncated_image
    else:
        pred = np.full((4 + nc, n), 0.9, np.float32)
        args = (pred, nc, np.float32(0.25), allowed, True, 30000)
        kernel = decode_standard_image
    out = []
    progress = _progress_while(lambda: out.append(kernel(*args)))
    assert len(out[0][1]) == 30000  # the decode ran in full
    assert progress >= 5, f"the other thread advanced {progress} times during the decode"


def test_decoders_in_parallel_threads_match_serial():
    """The kernels drop the GIL while they run: concurrent decodes must not interfere."""
    from concurrent.futures import ThreadPoolExecutor

    from runtime.kernels.decode import TruncatedDecoder

    rng = np.random.default_rng(11)
    sizes = [(80, 80), (40, 40), (20, 20)]
    images = [make_levels(rng, sizes, 80, 16, mu=-7.0, sd=2.0) for _ in range(6)]
    decoder = TruncatedDecoder([b.shape for b in images[0][0]], [c.shape for c in images[0][1]], STRIDES, 0.1)
    want = [decoder(box, cls) for box, cls in images]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda bc: decoder(*bc), images * 4))
    assert all(len(w) > 0 for w in want)
    for g, w in zip(got, want * 4):
        for field in ("boxes_xyxy", "scores", "class_ids", "anchor_ids"):
            np.testing.assert_array_equal(getattr(g, field), getattr(w, field))


def test_decode_row_of_a_batch_matches_the_per_image_call():
    """The Postprocessor's path (batched (B, C, H, W) outputs and a row index) decodes each row as
    the checked per-image call does."""
    from runtime.kernels.decode import TruncatedDecoder

    rng = np.random.default_rng(12)
    sizes = [(80, 80), (40, 40), (20, 20)]
    images = [make_levels(rng, sizes, 80, 16, mu=-7.0, sd=2.0) for _ in range(3)]
    decoder = TruncatedDecoder([b.shape for b in images[0][0]], [c.shape for c in images[0][1]], STRIDES, 0.1)
    box_batches = [np.stack([img[0][lv] for img in images]) for lv in range(3)]
    cls_batches = [np.stack([img[1][lv] for img in images]) for lv in range(3)]
    for row, (box, cls) in enumerate(images):
        want, got = decoder(box, cls), decoder.decode_row(box_batches, cls_batches, row)
        assert len(want) > 0
        for field in ("boxes_xyxy", "scores", "class_ids", "anchor_ids"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
