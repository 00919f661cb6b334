"""Letterbox plans and pixels against Ultralytics' LetterBox and scale_boxes."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.records.letterbox import letterbox_into, plan_letterbox

SHAPES = [(1080, 810), (720, 1280), (480, 640), (640, 640), (333, 517), (17, 1000), (1, 3000), (2000, 3)]


def _image(hw, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("auto", [False, True], ids=["square", "minimal_padding"])
@pytest.mark.parametrize("src_hw", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
@pytest.mark.parametrize("target", [(640, 640), (320, 320), (384, 640)], ids=["640", "320", "384x640"])
def test_pixels_match_ultralytics(src_hw, target, auto, dtype):
    """uint8 planes hold Ultralytics' RGB bytes; float32 planes its ``float() / 255`` of them, bit for bit."""
    torch = pytest.importorskip("torch")
    from ultralytics.data.augment import LetterBox

    image = _image(src_hw)
    ref = LetterBox(target, auto=auto, stride=32)(image=image)
    ref = torch.from_numpy(ref[None]).permute(0, 3, 1, 2).flip(1)
    ref = (ref.float().div_(255) if dtype == "float32" else ref)[0].numpy()
    plan = plan_letterbox(src_hw, target, auto=auto, stride=32)
    assert plan.dst_hw == ref.shape[1:]
    out = np.full((3, *plan.dst_hw), 7, dtype)  # every pixel must be overwritten
    letterbox_into(image, plan, out)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("auto", [False, True], ids=["square", "minimal_padding"])
@pytest.mark.parametrize("src_hw", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_boxes_to_source_matches_scale_boxes(src_hw, auto):
    torch = pytest.importorskip("torch")
    from ultralytics.utils.ops import scale_boxes

    plan = plan_letterbox(src_hw, (640, 640), auto=auto)
    rng = np.random.default_rng(1)
    h, w = plan.dst_hw
    xy = rng.uniform(-20, [w + 20, h + 20], (50, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 200, (50, 2))], 1).astype(np.float32)
    ref = scale_boxes(plan.dst_hw, torch.from_numpy(boxes.copy()), src_hw).numpy()
    np.testing.assert_allclose(plan.boxes_to_source(boxes), ref, rtol=1e-6, atol=1e-4)


def test_boxes_to_source_is_elementwise_float32_and_checks_shape():
    plan = plan_letterbox((375, 500), (640, 640))
    boxes = np.array([[-5.0, 10.5, 700.0, 600.25], [np.nan, 80.0, 90.0, 100.0]], np.float32)
    (gx, gy), (ox, oy), (h, w) = plan.gain_xy, plan.offset_xy, plan.src_hw
    offset, gain = np.float32([ox, oy, ox, oy]), np.float32([gx, gy, gx, gy])
    want = np.minimum(np.maximum((boxes - offset) / gain, np.float32(0)), np.float32([w, h, w, h]))
    got = plan.boxes_to_source(boxes)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # NaN stays NaN, the rest clipped to the image
    assert plan.boxes_to_source(np.zeros((0, 4), np.float32)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        plan.boxes_to_source(np.zeros((3, 5), np.float32))


def test_letterbox_into_rejects_wrong_buffer():
    plan = plan_letterbox((100, 200), (64, 64))
    with pytest.raises(ValueError, match="C-contiguous float32 or uint8"):
        letterbox_into(_image((100, 200)), plan, np.zeros((3, 64, 32), np.float32))
    with pytest.raises(ValueError, match="C-contiguous float32 or uint8"):
        letterbox_into(_image((100, 200)), plan, np.zeros((3, 64, 64), np.float64))
