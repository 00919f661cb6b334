"""runtime.kernels.masks against plain numpy versions of Ultralytics' process_mask / process_mask_native,
against Ultralytics itself (through torch, when installed), and against pycocotools for RLE."""

import math

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.kernels.masks import (
    MaskAssembler,
    MaskGeometry,
    assemble_masks,
    encode_masks_rle,
    letterbox_mask_geometry,
    native_mask_geometry,
)

NM = 32


# ----------------------------------------------------------------------------------------------
# numpy references, written plainly: full-frame resize with PyTorch's formula, threshold, crop.


def torch_linear_axis(n_in, n_out, scale_factor=None):
    """Indices and float32 weights of F.interpolate(mode="bilinear", align_corners=False) on one axis."""
    dst = np.arange(n_out)
    if n_in == n_out:
        return dst, dst, np.ones(n_out, np.float32), np.zeros(n_out, np.float32)
    scale = np.float32(1.0 / scale_factor) if scale_factor else np.float32(n_in) / np.float32(n_out)
    src = scale * (dst.astype(np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, (np.float32(1) - lam1).astype(np.float32), lam1


def resize_bilinear(x, out_hw, scale_factor=None):
    """(n, h, w) float32 -> (n, H, W) float32, horizontal taps first, as ATen's CPU kernel."""
    (oh, ow), (h, w) = out_hw, x.shape[1:]
    yi0, yi1, yl0, yl1 = torch_linear_axis(h, oh, scale_factor)
    xi0, xi1, xl0, xl1 = torch_linear_axis(w, ow, scale_factor)
    t = x[:, :, xi0] * xl0 + x[:, :, xi1] * xl1
    return t[:, yi0, :] * yl0[:, None] + t[:, yi1, :] * yl1[:, None]


def crop(masks, boxes):
    """Ultralytics' crop_mask: keep column c iff x1 <= c < x2 and row r iff y1 <= r < y2."""
    _, h, w = masks.shape
    cols = np.arange(w, dtype=np.float32)[None, None, :]
    rows = np.arange(h, dtype=np.float32)[None, :, None]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    return masks & (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)


def proto_logits(protos, coeffs):
    nm, mh, mw = protos.shape
    return (coeffs @ protos.reshape(nm, -1)).reshape(-1, mh, mw)


def reference_letterbox(protos, coeffs, boxes, shape):
    """process_mask(protos, coeffs, boxes, shape, upsample=True) -> (bool masks, float logits)."""
    logits = resize_bilinear(proto_logits(protos, coeffs), shape)
    return crop(logits > 0, boxes), logits


def native_upsample_factor(mh, mw, h, w):
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    return 4 // math.gcd(4, pad | pad // 2)


def reference_native(protos, coeffs, boxes, shape):
    """process_mask_native(protos, coeffs, boxes, shape) -> (bool masks, float logits)."""
    _, mh, mw = protos.shape
    h0, w0 = shape
    f = native_upsample_factor(mh, mw, h0, w0)
    x = proto_logits(protos, coeffs)
    if f > 1:
        x = resize_bilinear(x, (mh * f, mw * f), scale_factor=f)
    # scale_masks(x, shape)
    im1_h, im1_w = x.shape[1:]
    if (im1_h, im1_w) != (h0, w0):
        gain = min(im1_h / h0, im1_w / w0)
        pad_w, pad_h = (im1_w - max(round(w0 * gain), 1)) / 2, (im1_h - max(round(h0 * gain), 1)) / 2
        top, left = round(pad_h - 0.1), round(pad_w - 0.1)
        bottom, right = top + max(round(h0 * gain), 1), left + max(round(w0 * gain), 1)
        x = resize_bilinear(np.ascontiguousarray(x[:, top:bottom, left:right]), (h0, w0))
    return crop(x > 0, boxes), x


def ultralytics_masks(form, protos, coeffs, boxes, shape):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("ultralytics.utils.ops")
    p, c, b = (torch.from_numpy(np.ascontiguousarray(a)) for a in (protos, coeffs, boxes))
    if form == "letterbox":
        out = ops.process_mask(p, c, b, shape, upsample=True)
    else:
        out = ops.process_mask_native(p, c, b, shape)
    return out.numpy().astype(bool)


def assert_masks_match(got, want, logits):
    """Identical except pixels whose logit is within float-summation noise of 0."""
    assert got.shape == want.shape and got.dtype == np.bool_
    diff = got != want
    if diff.any():
        assert np.all(np.abs(logits[diff]) < 1e-3), np.abs(logits[diff]).max()
        assert diff.sum() <= max(10, 1e-5 * diff.size)
    union = np.logical_or(got, want).sum()
    if union:
        assert np.logical_and(got, want).sum() / union >= 0.999


# ----------------------------------------------------------------------------------------------
# Inputs


def random_inputs(seed, n, proto_hw, out_hw, special_boxes=True):
    rng = np.random.default_rng(seed)
    mh, mw = proto_hw
    h, w = out_hw
    protos = rng.standard_normal((NM, mh, mw)).astype(np.float32)
    coeffs = (rng.standard_normal((n, NM)) * 0.35).astype(np.float32)
    x1, y1 = rng.uniform(-0.1 * w, w, n), rng.uniform(-0.1 * h, h, n)
    bw, bh = rng.uniform(0, 0.6 * w, n), rng.uniform(0, 0.6 * h, n)
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
    if special_boxes and n >= 6:
        boxes[0] = [0, 0, w, h]  # whole image, on the border
        boxes[1] = [-40.5, -30.25, w / 3, h / 4]  # partly outside, top-left
        boxes[2] = [w - 10.5, h - 20.7, w + 100, h + 100]  # partly outside, bottom-right
        boxes[3] = [w / 2, h / 3, w / 2, h / 2]  # zero width
        boxes[4] = [w + 5, h + 5, w + 50, h + 50]  # fully outside
        boxes[5] = [0.5, 0.5, w - 0.5, h - 0.5]  # fractional border
    return protos, coeffs, boxes.astype(np.float32)


LETTERBOX_CASES = [
    ((160, 160), (640, 640)),
    ((120, 160), (480, 640)),
    ((160, 120), (640, 480)),
    ((96, 160), (384, 640)),
]

# (proto_hw, image_hw, f): f is process_mask_native's integer upsample for these shapes
NATIVE_CASES = [
    ((160, 160), (480, 640), 1),
    ((160, 160), (1080, 810), 1),
    ((160, 160), (640, 640), 1),  # image size == proto grid * 4
    ((160, 160), (160, 160), 1),  # image size == proto grid: scale_masks returns it unchanged
    ((160, 160), (100, 80), 1),  # smaller than the input: the crop is downsampled
    ((160, 160), (484, 640), 2),
    ((160, 160), (123, 457), 2),
    ((160, 160), (427, 640), 4),
    ((160, 160), (333, 500), 4),
    ((160, 160), (1000, 999), 4),
    ((96, 160), (720, 1280), 1),  # rect input (384 x 640)
]


def native_id(case):
    (mh, mw), (h, w), f = case
    return f"proto{mh}x{mw}-img{h}x{w}-f{f}"


def geometry_for(form, proto_hw, out_hw):
    return letterbox_mask_geometry(proto_hw, out_hw) if form == "letterbox" else native_mask_geometry(proto_hw, out_hw)


def reference_for(form, protos, coeffs, boxes, out_hw):
    ref = reference_letterbox if form == "letterbox" else reference_native
    return ref(protos, coeffs, boxes, out_hw)


# ----------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize("case", NATIVE_CASES, ids=native_id)
def test_native_cases_have_expected_upsample_factor(case):
    (mh, mw), (h, w), f = case
    assert native_upsample_factor(mh, mw, h, w) == f


@pytest.mark.parametrize(
    "form, proto_hw, out_hw",
    [("letterbox", p, s) for p, s in LETTERBOX_CASES] + [("native", p, s) for p, s, _ in NATIVE_CASES],
    ids=[f"letterbox-{s[0]}x{s[1]}" for _, s in LETTERBOX_CASES] + [native_id(c) for c in NATIVE_CASES],
)
def test_geometry_tables_reproduce_full_frame_logits(form, proto_hw, out_hw):
    protos, coeffs, _ = random_inputs(7, 3, proto_hw, out_hw)
    g = geometry_for(form, proto_hw, out_hw)
    assert g.out_hw == tuple(out_hw) and g.proto_hw == tuple(proto_hw)
    h, w = out_hw
    assert g.y_start.shape == (h,) and g.y_start.dtype == np.int64
    assert g.x_start.shape == (w,) and g.x_start.dtype == np.int64
    ky, kx = g.y_weights.shape[1], g.x_weights.shape[1]
    assert g.y_weights.shape == (h, ky) and g.y_weights.dtype == np.float32 and 1 <= ky <= 4
    assert g.x_weights.shape == (w, kx) and g.x_weights.dtype == np.float32 and 1 <= kx <= 4
    if form == "letterbox" and out_hw[0] > proto_hw[0]:
        assert ky == 2  # plain bilinear upsampling: only the two taps in use are stored
    assert np.all(g.y_start + ky <= proto_hw[0]) and np.all(g.x_start + kx <= proto_hw[1])
    assert np.all(np.diff(g.y_start) >= 0) and np.all(np.diff(g.x_start) >= 0)
    # Apply the tables densely in numpy and compare with the full-frame reference logits.
    x = proto_logits(protos, coeffs).astype(np.float64)
    my = np.zeros((h, proto_hw[0]))
    mx = np.zeros((w, proto_hw[1]))
    for k in range(ky):
        my[np.arange(h), g.y_start + k] += g.y_weights[:, k]
    for k in range(kx):
        mx[np.arange(w), g.x_start + k] += g.x_weights[:, k]
    got = my @ x @ mx.T
    _, want = reference_for(form, protos, coeffs, np.zeros((3, 4), np.float32), out_hw)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_geometry_is_cached_and_read_only():
    a = native_mask_geometry((160, 160), (480, 640))
    assert native_mask_geometry(np.array([160, 160]), [480, 640]) is a
    assert letterbox_mask_geometry((160, 160), (640, 640)) is letterbox_mask_geometry((160, 160), (640, 640))
    assert isinstance(a, MaskGeometry)
    with pytest.raises(ValueError):
        a.y_weights[0, 0] = 1


@pytest.mark.parametrize("bad", [(0, 640), (640,), "640x640", (640, -1)], ids=["zero", "one-value", "str", "neg"])
def test_geometry_bad_shapes(bad):
    with pytest.raises(InputError):
        native_mask_geometry((160, 160), bad)
    with pytest.raises(InputError):
        letterbox_mask_geometry(bad, (640, 640))


# ----------------------------------------------------------------------------------------------
# Masks against the numpy references and Ultralytics


@pytest.mark.parametrize("proto_hw, out_hw", LETTERBOX_CASES, ids=[f"{s[0]}x{s[1]}" for _, s in LETTERBOX_CASES])
@pytest.mark.parametrize("seed", [0, 1], ids=lambda s: f"seed{s}")
def test_letterbox_form(proto_hw, out_hw, seed):
    protos, coeffs, boxes = random_inputs(seed, 12, proto_hw, out_hw)
    masks, areas = assemble_masks(protos, coeffs, boxes, letterbox_mask_geometry(proto_hw, out_hw))
    want, logits = reference_letterbox(protos, coeffs, boxes, out_hw)
    assert_masks_match(masks, want, logits)
    np.testing.assert_array_equal(areas, masks.sum(axis=(1, 2)))
    assert areas[3] == 0 and areas[4] == 0  # zero-width and fully-outside boxes
    assert_masks_match(masks, ultralytics_masks("letterbox", protos, coeffs, boxes, out_hw), logits)


@pytest.mark.parametrize("case", NATIVE_CASES, ids=native_id)
def test_native_form(case):
    proto_hw, out_hw, _ = case
    protos, coeffs, boxes = random_inputs(out_hw[0] * 7 + out_hw[1], 8, proto_hw, out_hw)
    masks, areas = assemble_masks(protos, coeffs, boxes, native_mask_geometry(proto_hw, out_hw))
    want, logits = reference_native(protos, coeffs, boxes, out_hw)
    assert_masks_match(masks, want, logits)
    np.testing.assert_array_equal(areas, masks.sum(axis=(1, 2)))
    assert_masks_match(masks, ultralytics_masks("native", protos, coeffs, boxes, out_hw), logits)


@pytest.mark.parametrize("form", ["letterbox", "native"])
def test_many_detections(form):
    proto_hw, out_hw = (40, 48), (150, 190)
    protos, coeffs, boxes = random_inputs(3, 300, proto_hw, out_hw)
    masks, areas = assemble_masks(protos, coeffs, boxes, geometry_for(form, proto_hw, out_hw))
    assert masks.shape == (300, *out_hw)
    want, logits = reference_for(form, protos, coeffs, boxes, out_hw)
    assert_masks_match(masks, want, logits)
    np.testing.assert_array_equal(areas, masks.sum(axis=(1, 2)))
    assert_masks_match(masks, ultralytics_masks(form, protos, coeffs, boxes, out_hw), logits)


@pytest.mark.parametrize("form", ["letterbox", "native"])
def test_one_detection(form):
    protos, coeffs, _ = random_inputs(5, 1, (160, 160), (480, 640))
    boxes = np.array([[100.2, 50.7, 400.5, 300.1]], np.float32)
    masks, areas = assemble_masks(protos, coeffs, boxes, geometry_for(form, (160, 160), (480, 640)))
    want, logits = reference_for(form, protos, coeffs, boxes, (480, 640))
    assert_masks_match(masks, want, logits)
    assert areas[0] == masks.sum() > 0
    # crop bounds: first kept column is ceil(x1), last kept is ceil(x2) - 1
    assert not masks[0, :, :101].any() and not masks[0, :, 401:].any()
    assert not masks[0, :51].any() and not masks[0, 301:].any()


@pytest.mark.parametrize("form", ["letterbox", "native"])
def test_zero_detections(form):
    g = geometry_for(form, (160, 160), (480, 640))
    protos = np.zeros((NM, 160, 160), np.float32)
    masks, areas = assemble_masks(protos, np.zeros((0, NM), np.float32), np.zeros((0, 4), np.float32), g)
    assert masks.shape == (0, 480, 640) and masks.dtype == np.bool_
    assert areas.shape == (0,) and areas.dtype == np.int64
    rles, areas = encode_masks_rle(protos, np.zeros((0, NM), np.float32), np.zeros((0, 4), np.float32), g)
    assert rles == [] and areas.shape == (0,)


def test_nan_box_gives_empty_mask():
    protos, coeffs, _ = random_inputs(2, 2, (160, 160), (640, 640))
    boxes = np.array([[np.nan, 0, 640, 640], [0, 0, 640, 640]], np.float32)
    masks, areas = assemble_masks(protos, coeffs, boxes, letterbox_mask_geometry((160, 160), (640, 640)))
    assert areas[0] == 0 and not masks[0].any() and areas[1] > 0


def test_inputs_are_coerced():
    protos, coeffs, boxes = random_inputs(4, 6, (160, 160), (640, 640))
    g = letterbox_mask_geometry((160, 160), (640, 640))
    want, _ = assemble_masks(protos, coeffs, boxes, g)
    got, _ = assemble_masks(protos.astype(np.float64), np.asfortranarray(coeffs), boxes.astype(np.float64), g)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "protos_shape, coeffs_shape, boxes_shape, match",
    [
        ((NM, 160), (2, NM), (2, 4), r"\(nm, mh, mw\)"),
        ((NM, 80, 80), (2, NM), (2, 4), r"\(32, 160, 160\) for this geometry, got \(32, 80, 80\)"),
        ((NM, 160, 160), (2, 16), (2, 4), r"\(n, 32\), got \(2, 16\)"),
        ((NM, 160, 160), (2,), (2, 4), r"\(n, 32\), got \(2,\)"),
        ((NM, 160, 160), (2, NM), (3, 4), r"\(2, 4\), got \(3, 4\)"),
        ((NM, 160, 160), (2, NM), (2, 5), r"\(2, 4\), got \(2, 5\)"),
    ],
    ids=["protos-2d", "protos-grid", "coeffs-nm", "coeffs-1d", "boxes-n", "boxes-cols"],
)
def test_bad_input_raises(protos_shape, coeffs_shape, boxes_shape, match):
    g = letterbox_mask_geometry((160, 160), (640, 640))
    args = (np.zeros(protos_shape, np.float32), np.zeros(coeffs_shape, np.float32), np.zeros(boxes_shape, np.float32))
    with pytest.raises(InputError, match=match):
        assemble_masks(*args, g)
    with pytest.raises(InputError, match=match):
        encode_masks_rle(*args, g)


@pytest.mark.parametrize("form", ["letterbox", "native"])
def test_assembler_matches_one_call_forms_and_counts_empty_masks(form):
    proto_hw, out_hw = (160, 160), (480, 640)
    protos, coeffs, boxes = random_inputs(5, 12, proto_hw, out_hw)
    boxes[3] = [100, 100, 100, 300]  # zero width: an empty mask
    coeffs[7] = -1  # all-negative logits over positive protos below: an empty mask
    protos = np.abs(protos)
    g = geometry_for(form, proto_hw, out_hw)
    assembler = MaskAssembler(g, protos.shape)
    masks, areas, empty = assembler.masks(protos, coeffs, boxes)
    want, want_areas = assemble_masks(protos, coeffs, boxes, g)
    np.testing.assert_array_equal(masks, want)
    np.testing.assert_array_equal(areas, want_areas)
    assert areas[3] == 0 and areas[7] == 0
    assert empty == int((areas == 0).sum()) >= 2
    rles, rle_areas = assembler.rle(protos, coeffs, boxes)
    assert rles == encode_masks_rle(protos, coeffs, boxes, g)[0]
    np.testing.assert_array_equal(rle_areas, areas)


@pytest.mark.parametrize(
    "which, bad",
    [("protos", lambda a: a.astype(np.float64)), ("protos", lambda a: a[:, :, :80]),
     ("coeffs", lambda a: np.asfortranarray(a)), ("coeffs", lambda a: a[:, :16]), ("boxes_xyxy", lambda a: a[:1])],
    ids=["protos-float64", "protos-grid", "coeffs-fortran", "coeffs-nm", "boxes-n"],
)
def test_assembler_rejects_unprepared_arrays(which, bad):
    protos, coeffs, boxes = random_inputs(6, 3, (160, 160), (640, 640))
    assembler = MaskAssembler(letterbox_mask_geometry((160, 160), (640, 640)), protos.shape)
    args = {"protos": protos, "coeffs": coeffs, "boxes_xyxy": boxes}
    args[which] = bad(args[which])
    with pytest.raises(InputError, match=f"{which}: expected a C-contiguous float32 array of shape"):
        assembler.masks(**args)
    with pytest.raises(InputError, match=which):
        assembler.rle(**args)


def test_assembler_rejects_bad_proto_shape():
    g = letterbox_mask_geometry((160, 160), (640, 640))
    with pytest.raises(InputError, match=r"proto_shape must be \(nm, mh, mw\)"):
        MaskAssembler(g, (NM, 160))
    with pytest.raises(InputError, match=r"\(32, 160, 160\) for this geometry, got \(32, 80, 80\)"):
        MaskAssembler(g, (NM, 80, 80))


def test_bad_geometry_raises():
    args = (np.zeros((NM, 20, 20), np.float32), np.zeros((1, NM), np.float32), np.zeros((1, 4), np.float32))
    with pytest.raises(InputError, match="MaskGeometry"):
        assemble_masks(*args, None)
    g = letterbox_mask_geometry((20, 20), (80, 80))
    short = MaskGeometry((80, 80), g.y_start[:-1], g.y_weights[:-1], g.x_start, g.x_weights)
    with pytest.raises(InputError, match=r"y tables must have shapes \(80,\) and \(80, K\), got \(79,\)"):
        assemble_masks(*args, short)
    outside = MaskGeometry((80, 80), g.y_start, g.y_weights, g.x_start + 1, g.x_weights)
    with pytest.raises(InputError, match="outside the proto grid"):
        encode_masks_rle(*args, outside)


# ----------------------------------------------------------------------------------------------
# RLE


def coco_mask():
    return pytest.importorskip("pycocotools.mask")


@pytest.mark.parametrize(
    "form, proto_hw, out_hw",
    [("letterbox", (160, 160), (640, 640)), ("letterbox", (96, 160), (384, 640)),
     ("native", (160, 160), (427, 640)), ("native", (160, 160), (1080, 810)), ("native", (40, 48), (150, 190))],
    ids=["letterbox-640", "letterbox-384x640", "native-427x640", "native-1080x810", "native-small"],
)
def test_rle_matches_pycocotools(form, proto_hw, out_hw):
    mask_utils = coco_mask()
    protos, coeffs, boxes = random_inputs(12, 40, proto_hw, out_hw)
    g = geometry_for(form, proto_hw, out_hw)
    masks, areas = assemble_masks(protos, coeffs, boxes, g)
    rles, rle_areas = encode_masks_rle(protos, coeffs, boxes, g)
    np.testing.assert_array_equal(rle_areas, areas)
    assert len(rles) == len(masks)
    want = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle, ref, mask in zip(rles, want, masks):
        assert rle["size"] == [out_hw[0], out_hw[1]]
        assert rle == ref
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
    np.testing.assert_array_equal(mask_utils.area(rles), areas)


@pytest.mark.parametrize(
    "box",
    [[0, 0, 50, 40], [0, 0, 1, 1], [49, 39, 50, 40], [10, 0, 11, 40], [0, 10, 50, 11], [20, 20, 20, 30], [3, 4, 47, 36]],
    ids=["full", "first-pixel", "last-pixel", "one-column", "one-row", "empty", "inner"],
)
def test_rle_all_positive_logits(box):
    # protos and coeffs positive: the mask is exactly the box, so runs start/end on every edge case.
    mask_utils = coco_mask()
    protos = np.ones((NM, 20, 20), np.float32)
    coeffs = np.full((1, NM), 0.1, np.float32)
    boxes = np.array([box], np.float32)
    g = native_mask_geometry((20, 20), (40, 50))
    masks, areas = assemble_masks(protos, coeffs, boxes, g)
    x1, y1, x2, y2 = box
    want = np.zeros((40, 50), bool)
    want[y1:y2, x1:x2] = True
    np.testing.assert_array_equal(masks[0], want)
    rles, rle_areas = encode_masks_rle(protos, coeffs, boxes, g)
    assert rles[0] == mask_utils.encode(np.asfortranarray(want.astype(np.uint8)))
    assert rle_areas[0] == areas[0] == want.sum() == mask_utils.area(rles[0])


def test_rle_large_counts_round_trip():
    # long zero runs (large deltas in the LEB128-like string) on a big native image
    mask_utils = coco_mask()
    protos, coeffs, _ = random_inputs(21, 3, (160, 160), (2000, 3000), special_boxes=False)
    boxes = np.array([[2900, 1900, 3000, 2000], [0, 0, 3000, 2000], [1500.5, 10, 1600, 1990]], np.float32)
    g = native_mask_geometry((160, 160), (2000, 3000))
    masks, areas = assemble_masks(protos, coeffs, boxes, g)
    rles, rle_areas = encode_masks_rle(protos, coeffs, boxes, g)
    for rle, mask in zip(rles, masks):
        assert rle == mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    np.testing.assert_array_equal(rle_areas, areas)


# ----------------------------------------------------------------------------------------------
# Threads and the RLE run finder


@pytest.mark.parametrize("form", ["letterbox", "native"])
def test_thread_count_does_not_change_results(form):
    proto_hw, out_hw = (160, 160), (480, 640)
    protos, coeffs, boxes = random_inputs(9, 40, proto_hw, out_hw)
    g = geometry_for(form, proto_hw, out_hw)
    masks, areas = assemble_masks(protos, coeffs, boxes, g, threads=1)
    rles, rle_areas = encode_masks_rle(protos, coeffs, boxes, g, threads=1)
    for threads in (2, 3, None):
        m, a = assemble_masks(protos, coeffs, boxes, g, threads=threads)
        np.testing.assert_array_equal(m, masks)
        np.testing.assert_array_equal(a, areas)
        r, ra = encode_masks_rle(protos, coeffs, boxes, g, threads=threads)
        assert r == rles
        np.testing.assert_array_equal(ra, rle_areas)
    np.testing.assert_array_equal(rle_areas, areas)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bad_threads_raise(threads):
    protos, coeffs, boxes = random_inputs(4, 2, (20, 20), (80, 80), special_boxes=False)
    g = letterbox_mask_geometry((20, 20), (80, 80))
    with pytest.raises(InputError, match="threads"):
        assemble_masks(protos, coeffs, boxes, g, threads=threads)
    with pytest.raises(InputError, match="threads"):
        encode_masks_rle(protos, coeffs, boxes, g, threads=threads)


@pytest.mark.parametrize(
    "box",
    [[0, 0, 190, 150], [0, 0, 37, 150], [50, 0, 190, 150], [13, 0, 101, 150], [0, 0, 190, 1], [0, 149, 190, 150],
     [7, 3, 190, 150], [0, 3, 9, 147], [181, 0, 190, 150], [0, 0, 1, 150], [189, 0, 190, 150]],
    ids=["all", "left-full-height", "right-full-height", "mid-full-height", "top-row", "bottom-row",
         "to-bottom-right", "left-inner", "right-edge", "first-column", "last-column"],
)
def test_rle_box_edges_with_noisy_masks(box):
    # noisy masks (many runs per column) whose boxes touch the image edges: runs that wrap from one
    # column's last row into the next column's first, and boxes narrower than the 8-pixel words
    mask_utils = coco_mask()
    proto_hw, out_hw = (40, 48), (150, 190)
    protos, coeffs, _ = random_inputs(31, 5, proto_hw, out_hw, special_boxes=False)
    boxes = np.array([box] * 5, np.float32)
    coeffs[0] = 0  # all-zero mask
    coeffs[1] = 0
    coeffs[1, 0] = 1  # protos[0] > 0 pattern
    for form in ("letterbox", "native"):
        g = geometry_for(form, proto_hw, out_hw)
        masks, areas = assemble_masks(protos, coeffs, boxes, g)
        rles, rle_areas = encode_masks_rle(protos, coeffs, boxes, g)
        want = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        assert rles == want
        np.testing.assert_array_equal(rle_areas, areas)
    ones = np.ones((NM, 20, 20), np.float32)  # all-positive logits: the mask is the box
    g = native_mask_geometry((20, 20), (40, 50))
    b = np.array([[min(box[0], 50), min(box[1], 40), min(box[2], 50), min(box[3], 40)]], np.float32)
    rles, _ = encode_masks_rle(ones, np.full((1, NM), 0.1, np.float32), b, g)
    masks, _ = assemble_masks(ones, np.full((1, NM), 0.1, np.float32), b, g)
    assert rles[0] == mask_utils.encode(np.asfortranarray(masks[0].astype(np.uint8)))
