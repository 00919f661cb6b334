"""runtime.kernels.nms.nms against a plain numpy greedy NMS and torchvision.ops.nms on offset boxes."""

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.kernels.nms import nms, nms_candidates

W, H = 640, 640


# ----------------------------------------------------------------------------------------------
# References


def reference_nms(boxes, scores, class_ids, iou_thr, max_det=300, agnostic=False, class_offset=7680.0):
    """Plain greedy NMS with Ultralytics' float32 class offset and torchvision's float32 IoU."""
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    n = len(boxes)
    if not agnostic:
        offsets = np.asarray(class_ids).astype(np.float32) * np.float32(class_offset)
        boxes = boxes + offsets[:, None]
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in order:
        if len(keep) >= max_det:
            break
        if suppressed[i]:
            continue
        keep.append(i)
        zero = np.float32(0)
        w = np.maximum(zero, np.minimum(x2[i], x2) - np.maximum(x1[i], x1))
        h = np.maximum(zero, np.minimum(y2[i], y2) - np.maximum(y1[i], y1))
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (areas[i] + areas - inter)
        suppressed |= (rank > rank[i]) & (iou.astype(np.float64) > iou_thr)
    return np.asarray(keep, dtype=np.int64)


def torchvision_nms(boxes, scores, class_ids, iou_thr, max_det=300, agnostic=False, class_offset=7680.0):
    """What Ultralytics' non_max_suppression does with the candidates (torch float32)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    b = torch.from_numpy(np.asarray(boxes, dtype=np.float32))
    c = torch.from_numpy(np.asarray(class_ids, dtype=np.float32))[:, None] * (0 if agnostic else class_offset)
    s = torch.from_numpy(np.asarray(scores, dtype=np.float32))
    return torchvision.ops.nms(b + c, s, iou_thr)[:max_det].numpy()


def random_candidates(seed, n, num_classes, clustered=True, quantized=False):
    """Boxes around a few cluster centres (plenty of overlap) plus some spread ones."""
    rng = np.random.default_rng(seed)
    if clustered:
        centres = rng.uniform(0, [W, H], size=(max(1, n // 20), 2))
        c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 12, (n, 2))
    else:
        c = rng.uniform(0, [W, H], size=(n, 2))
    wh = rng.uniform(4, 160, (n, 2)) * rng.uniform(0.8, 1.2, (n, 1))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).clip(0, [W, H, W, H]).astype(np.float32)
    scores = rng.uniform(0.25, 1.0, n).astype(np.float32)
    if quantized:  # many exact ties: the stable order must decide
        scores = (np.round(scores * 20) / 20).astype(np.float32)
    class_ids = rng.integers(0, num_classes, n)
    return boxes, scores, class_ids


def check(boxes, scores, class_ids, iou_thr, max_det=300, agnostic=False, class_offset=7680.0, torch_too=True):
    got = nms(boxes, scores, class_ids, iou_thr, max_det=max_det, agnostic=agnostic, class_offset=class_offset)
    assert got.dtype == np.int64 and got.ndim == 1
    assert len(got) <= max_det
    want = reference_nms(boxes, scores, class_ids, iou_thr, max_det, agnostic, class_offset)
    np.testing.assert_array_equal(got, want)
    if torch_too:
        np.testing.assert_array_equal(got, torchvision_nms(boxes, scores, class_ids, iou_thr, max_det, agnostic,
                                                           class_offset))
    return got


# ----------------------------------------------------------------------------------------------
# Seeded random inputs


@pytest.mark.parametrize("n", [2, 50, 700, 3000], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("num_classes", [1, 3, 80], ids=lambda c: f"nc{c}")
@pytest.mark.parametrize("agnostic", [False, True], ids=["aware", "agnostic"])
@pytest.mark.parametrize("iou_thr", [0.45, 0.7], ids=lambda t: f"iou{t}")
def test_random_matches_references(n, num_classes, agnostic, iou_thr):
    boxes, scores, class_ids = random_candidates(n * 100 + num_classes, n, num_classes)
    check(boxes, scores, class_ids, iou_thr, agnostic=agnostic)


@pytest.mark.parametrize("n", [0, 1, 50, 256, 257, 3000], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("agnostic", [False, True], ids=["aware", "agnostic"])
def test_candidates_entry_matches_nms(n, agnostic):
    """nms_candidates (decoder arrays: int32 classes, no checks) keeps exactly what nms keeps."""
    boxes, scores, class_ids = random_candidates(n + 5, n, 7, quantized=True)
    want = nms(boxes, scores, class_ids, 0.6, max_det=100, agnostic=agnostic)
    got = nms_candidates(boxes, scores, class_ids.astype(np.int32), 0.6, 100, agnostic)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("max_det", [1, 7, 100, 300], ids=lambda m: f"max_det{m}")
@pytest.mark.parametrize("agnostic", [False, True], ids=["aware", "agnostic"])
def test_max_det_cut(max_det, agnostic):
    boxes, scores, class_ids = random_candidates(11, 2500, 5, clustered=False)
    got = check(boxes, scores, class_ids, 0.5, max_det=max_det, agnostic=agnostic)
    assert len(got) == max_det
    # the cut is a prefix of the uncut result
    full = nms(boxes, scores, class_ids, 0.5, max_det=len(boxes), agnostic=agnostic)
    np.testing.assert_array_equal(got, full[:max_det])


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"seed{s}")
def test_tied_scores_keep_input_order(seed):
    boxes, scores, class_ids = random_candidates(seed, 1500, 4, quantized=True)
    check(boxes, scores, class_ids, 0.6)


def test_float64_and_float_class_ids_are_coerced():
    boxes, scores, class_ids = random_candidates(5, 400, 6)
    want = nms(boxes, scores, class_ids, 0.5)
    got = nms(boxes.astype(np.float64), scores.astype(np.float64), class_ids.astype(np.float32), 0.5)
    np.testing.assert_array_equal(got, want)


def test_boxes_larger_than_class_offset_overlap_across_classes():
    # Coordinates beyond class_offset make offset boxes of different classes overlap, and
    # Ultralytics then suppresses across classes: the kernel must not skip those pairs.
    boxes = np.array([[7690, 7690, 7790, 7790], [10, 10, 110, 110], [7700, 7690, 7800, 7790]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    class_ids = np.array([0, 1, 0])
    got = check(boxes, scores, class_ids, 0.5)
    np.testing.assert_array_equal(got, [0])


def test_small_class_offset_random():
    boxes, scores, class_ids = random_candidates(3, 800, 10)
    check(boxes, scores, class_ids, 0.5, class_offset=50.0)


# ----------------------------------------------------------------------------------------------
# Edge cases


def test_zero_candidates():
    got = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.7)
    assert got.dtype == np.int64 and got.shape == (0,)


def test_one_candidate():
    got = check(np.array([[1, 2, 30, 40]], np.float32), np.array([0.3], np.float32), np.array([2]), 0.7)
    np.testing.assert_array_equal(got, [0])


@pytest.mark.parametrize(
    "scores, want",
    [([0.5, 0.9, 0.7], [1]), ([0.8, 0.8, 0.8], [0]), ([0.1, 0.8, 0.8], [1])],
    ids=["highest-wins", "all-tied-first-wins", "tie-first-of-best"],
)
def test_identical_boxes(scores, want):
    boxes = np.tile(np.array([[10, 20, 110, 220]], np.float32), (3, 1))
    got = check(boxes, np.array(scores, np.float32), np.zeros(3, np.int64), 0.7)
    np.testing.assert_array_equal(got, want)


def test_identical_boxes_of_different_classes_all_survive():
    boxes = np.tile(np.array([[10, 20, 110, 220]], np.float32), (3, 1))
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    np.testing.assert_array_equal(check(boxes, scores, np.array([0, 1, 2]), 0.7), [1, 2, 0])
    np.testing.assert_array_equal(check(boxes, scores, np.array([0, 1, 2]), 0.7, agnostic=True), [1])


@pytest.mark.parametrize("iou_thr, want", [(0.45, [0]), (0.5, [0, 1])], ids=["iou0.45", "iou0.5-strict"])
def test_border_boxes_and_strict_threshold(iou_thr, want):
    # IoU is exactly 0.5: suppressed only when 0.5 > iou_thr.
    boxes = np.array([[0, 0, W, H], [0, 0, W, H / 2]], np.float32)
    got = check(boxes, np.array([0.9, 0.8], np.float32), np.zeros(2, np.int64), iou_thr)
    np.testing.assert_array_equal(got, want)


def test_threshold_compared_in_double_like_torchvision():
    # float32 IoU 3/10 rounds up to 0.30000001 > 0.3 (double): suppressed, although float32(0.3) is not > itself.
    boxes = np.array([[0, 0, 10, 1], [0, 0, 3, 1]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    np.testing.assert_array_equal(check(boxes, scores, np.zeros(2, np.int64), 0.3), [0])
    np.testing.assert_array_equal(check(boxes, scores, np.zeros(2, np.int64), float(np.float32(0.3))), [0, 1])


def test_zero_area_boxes_never_suppress_nor_get_suppressed():
    boxes = np.array(
        [[10, 10, 10, 50], [10, 10, 10, 50], [0, 0, 100, 100], [30, 30, 30, 30], [30, 30, 30, 30]], np.float32
    )
    scores = np.array([0.9, 0.85, 0.8, 0.7, 0.6], np.float32)
    got = check(boxes, scores, np.zeros(5, np.int64), 0.1)
    np.testing.assert_array_equal(got, [0, 1, 2, 3, 4])


def test_more_than_max_det_candidates():
    # 40 x 25 grid of disjoint boxes: nothing is suppressed, the 300 best are returned.
    gx, gy = np.meshgrid(np.arange(40) * 16.0, np.arange(25) * 16.0)
    boxes = np.stack([gx.ravel(), gy.ravel(), gx.ravel() + 15, gy.ravel() + 15], 1).astype(np.float32)
    scores = np.random.default_rng(4).uniform(0.3, 1, len(boxes)).astype(np.float32)
    got = check(boxes, scores, np.zeros(len(boxes), np.int64), 0.7, max_det=300)
    assert len(got) == 300
    np.testing.assert_array_equal(got, np.argsort(-scores, kind="stable")[:300])


def test_iou_thr_zero_suppresses_any_overlap_but_not_touching():
    boxes = np.array([[0, 0, 10, 10], [9, 9, 20, 20], [10, 0, 20, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    got = check(boxes, scores, np.zeros(4, np.int64), 0.0)
    np.testing.assert_array_equal(got, [0, 2, 3])


def test_iou_thr_one_keeps_everything():
    boxes, scores, class_ids = random_candidates(8, 500, 1)
    boxes[1] = boxes[0]  # IoU exactly 1 is not > 1
    got = check(boxes, scores, class_ids, 1.0, max_det=1000)
    assert len(got) == 500


@pytest.mark.parametrize("n", [100, 300], ids=["ranked", "grouped"])  # either side of GROUPING_MIN_BOXES
@pytest.mark.parametrize("agnostic", [False, True], ids=["aware", "agnostic"])
def test_nan_scores_come_first_like_torch(n, agnostic):
    boxes, scores, class_ids = random_candidates(9, n, 2)
    scores[[5, 77]] = np.nan
    got = nms(boxes, scores, class_ids, 0.5, agnostic=agnostic)
    np.testing.assert_array_equal(got, torchvision_nms(boxes, scores, class_ids, 0.5, 300, agnostic, 7680.0))
    assert list(got[:2]) == [5, 77]
    np.testing.assert_array_equal(nms_candidates(boxes, scores, class_ids.astype(np.int32), 0.5, 300, agnostic), got)


def test_max_det_zero():
    boxes, scores, class_ids = random_candidates(1, 20, 2)
    assert nms(boxes, scores, class_ids, 0.5, max_det=0).shape == (0,)


@pytest.mark.parametrize(
    "boxes, scores, class_ids, kwargs, match",
    [
        (np.zeros((3, 5)), np.zeros(3), np.zeros(3), {}, r"\(n, 4\), got \(3, 5\)"),
        (np.zeros(4), np.zeros(1), np.zeros(1), {}, r"\(n, 4\), got \(4,\)"),
        (np.zeros((3, 4)), np.zeros(2), np.zeros(3), {}, r"\(3,\), got \(2,\)"),
        (np.zeros((3, 4)), np.zeros((3, 1)), np.zeros(3), {}, r"\(3,\), got \(3, 1\)"),
        (np.zeros((3, 4)), np.zeros(3), np.zeros(4), {}, r"\(3,\), got \(4,\)"),
        (np.zeros((3, 4)), np.zeros(3), np.array([0, 1.5, 2]), {}, "integer"),
        (np.zeros((3, 4)), np.zeros(3), np.zeros(3), {"max_det": -1}, "max_det"),
        (np.zeros((3, 4)), np.zeros(3), np.zeros(3), {"iou_thr": 1.5}, "iou_thr"),
        (np.zeros((3, 4)), np.zeros(3), np.zeros(3), {"iou_thr": float("nan")}, "iou_thr"),
    ],
    ids=["boxes-5-cols", "boxes-1d", "scores-len", "scores-2d", "classes-len", "classes-frac", "max_det-neg",
         "iou-above-1", "iou-nan"],
)
def test_bad_input_raises(boxes, scores, class_ids, kwargs, match):
    args = {"iou_thr": 0.5, **kwargs}
    with pytest.raises(InputError, match=match):
        nms(boxes, scores, class_ids, args.pop("iou_thr"), **args)
