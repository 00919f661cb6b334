"""Predictor behaviour: sources, batching, threads, options, standard exports and errors.

Behaviour runs on the tiny models (tests/tiny_models.py: no torch needed); the two comparisons with
Ultralytics run on random-init Ultralytics models and skip without torch and ultralytics.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import RANDOM_IMGSZ, needs_export
from runtime import InputError, ModelError, Predictor
from tiny_models import TINY_IMGSZ


@pytest.fixture(scope="module")
def images(pictures) -> list[np.ndarray]:
    portrait, wide = (cv2.imread(str(p)) for p in pictures)
    return [portrait, wide, cv2.resize(portrait, (333, 517))]


def _same(a, b, atol=1e-3) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=atol)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    if a.masks is not None and len(a):
        assert (a.masks != b.masks).mean() < 1e-4


def test_sources_path_folder_array_and_list_agree(tiny_seg_onnx, pictures, tmp_path):
    predictor = Predictor(tiny_seg_onnx)
    paths = pictures
    for p in paths:
        shutil.copy(p, tmp_path / p.name)
    by_path = [predictor.predict(str(p))[0] for p in paths]
    by_folder = predictor.predict(tmp_path)
    by_array = predictor.predict([cv2.imread(str(p)) for p in paths])
    by_list = predictor.predict([str(paths[0]), Path(paths[1])])
    assert [Path(r.path).name for r in by_folder] == sorted(p.name for p in paths)
    for group in (by_folder, by_array, by_list):
        for ours, ref in zip(group, by_path):
            _same(ours, ref, atol=0)
    assert len(by_path[0]) > 0


@pytest.mark.parametrize("model", ["tiny_seg_onnx", "tiny_detect_onnx", "tiny_pose_onnx"])
def test_batch_of_different_sizes_equals_single_images(model, images, request):
    # a batch's images are postprocessed on two threads: the results must be those of one at a time
    path = request.getfixturevalue(model)
    single = Predictor(path, threads=1)
    batched = Predictor(path, batch=3)
    together = batched.predict(images + images[::-1])
    for image, result in zip(images + images[::-1], together):
        ref = single.predict(image)[0]
        _same(result, ref)
        if ref.keypoints is not None:
            np.testing.assert_allclose(result.keypoints, ref.keypoints, atol=1e-3)
    assert [r.orig_hw for r in together] == [im.shape[:2] for im in images + images[::-1]]
    assert sum(len(r) for r in together) > 0
    assert single.pipeline._host_pool is None


def test_a_failing_head_raises_on_the_calling_thread(tiny_seg_onnx, images, monkeypatch):
    predictor = Predictor(tiny_seg_onnx)

    def fail(*args):
        raise RuntimeError("decode failed")

    monkeypatch.setattr(predictor.model.head, "candidates", fail)
    with pytest.raises(RuntimeError, match="decode failed"):
        predictor.predict(images[0])
    with pytest.raises(RuntimeError, match="decode failed"):
        predictor.predict(images[:2])


def test_fixed_batch_model_pads_last_chunk(tiny_onnx, tiny_seg_onnx, images):
    predictor = Predictor(tiny_onnx("segment", batch=2))  # the same weights as tiny_seg_onnx, batch fixed at 2
    assert predictor.spec.batch == 2 and predictor.batch == 2
    reference = Predictor(tiny_seg_onnx).predict(images)
    results = predictor.predict(images)  # 3 images: one full chunk and one padded chunk
    assert len(results) == 3 and sum(len(r) for r in results) > 0
    for ours, ref in zip(results, reference):
        _same(ours, ref)


def test_float_input_model_gives_the_same_results(tiny_onnx, tiny_seg_onnx, images):
    """uint8 input (the default export, normalised in the graph) and float32 input (host-normalised) agree exactly."""
    floating = Predictor(tiny_onnx("segment", input_dtype="float32"))
    byte = Predictor(tiny_seg_onnx)
    assert (floating.spec.input_dtype, byte.spec.input_dtype) == ("float32", "uint8")
    results = byte.predict(images)
    assert sum(len(r) for r in results) > 0
    for ours, ref in zip(results, floating.predict(images)):
        _same(ours, ref, atol=0)


def test_predict_is_thread_safe(tiny_seg_onnx, images):
    predictor = Predictor(tiny_seg_onnx, threads=1)
    reference = predictor.predict(images)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: predictor.predict(images), range(8)))
    for run in runs:
        for ours, ref in zip(run, reference):
            _same(ours, ref, atol=0)


def test_options_classes_max_det_agnostic(tiny_detect_onnx, images):
    base = Predictor(tiny_detect_onnx).predict(images[0])[0]
    assert len(base) > 5
    cls = int(base.class_ids[0])
    only = Predictor(tiny_detect_onnx, classes=[cls]).predict(images[0])[0]
    assert len(only) and set(only.class_ids.tolist()) == {cls}
    assert len(Predictor(tiny_detect_onnx, max_det=3).predict(images[0])[0]) == 3
    per_class = Predictor(tiny_detect_onnx, iou=0.5).predict(images[0])[0]
    agnostic = Predictor(tiny_detect_onnx, iou=0.5, agnostic=True).predict(images[0])[0]
    assert 0 < len(agnostic) < len(per_class)  # boxes of different classes overlap: class-blind NMS drops some
    multi = Predictor(tiny_detect_onnx, multi_label=True).predict(images[0])[0]
    assert len(multi) > len(base)  # anchors over conf in two classes give two detections


def test_result_indexing(tiny_seg_onnx, images):
    result = Predictor(tiny_seg_onnx).predict(images[0])[0]
    assert len(result[0]) == 1 and len(result[1:3]) == 2
    keep = result.scores > np.median(result.scores)
    sub = result[keep]
    assert len(sub) == keep.sum() and sub.masks.shape[0] == keep.sum()
    assert result.class_names[0] == result.names[result.class_ids[0]]


def test_stock_layout_model_runs(tiny_stock_onnx, images):
    """A stock export's output0 (decoded boxes, sigmoid scores) runs through the same Predictor."""
    predictor = Predictor(tiny_stock_onnx)
    assert predictor.spec.layout == "standard" and predictor.spec.input_dtype == "float32"
    results = predictor.predict(images)
    assert sum(len(r) for r in results) > 0
    for image, result in zip(images, results):
        h, w = image.shape[:2]
        assert result.orig_hw == (h, w)
        assert (result.xyxy >= 0).all() and (result.xyxy[:, [0, 2]] <= w).all() and (result.xyxy[:, [1, 3]] <= h).all()
        assert (result.scores > 0.25).all()


@needs_export
def test_standard_ultralytics_export_gives_same_results(random_seg_pt, random_seg_onnx, tmp_path):
    """Users' existing Ultralytics ONNX files (output0 + output1) run through the same Predictor."""
    from matching import Detections, match
    from test_parity import adaptive_conf, asset_images
    from ultralytics import YOLO

    pt = tmp_path / "model.pt"
    shutil.copy(random_seg_pt, pt)
    standard = YOLO(str(pt)).export(format="onnx", imgsz=RANDOM_IMGSZ, dynamic=False, verbose=False)
    for image in asset_images():
        conf = adaptive_conf(random_seg_pt, image, RANDOM_IMGSZ, rect=False)
        ours = Predictor(random_seg_onnx, conf=conf).predict(str(image))[0]
        theirs = Predictor(standard, conf=conf).predict(str(image))[0]
        assert Predictor(standard).spec.layout == "standard"
        a = Detections(ours.xyxy, ours.scores, ours.class_ids, ours.masks)
        b = Detections(theirs.xyxy, theirs.scores, theirs.class_ids, theirs.masks)
        pairs, n_b, _, unmatched = match(b, a, conf)
        assert len(pairs) >= n_b > 10 and unmatched == 0


@needs_export
def test_pose_keypoints_match_ultralytics(random_pose_pt, random_pose_onnx):
    from matching import Detections, match
    from test_parity import adaptive_conf, asset_images
    from ultralytics import YOLO

    image = asset_images()[0]
    conf = adaptive_conf(random_pose_pt, image, RANDOM_IMGSZ, rect=False, rank=10)
    theirs = YOLO(str(random_pose_pt)).predict(str(image), conf=conf, imgsz=RANDOM_IMGSZ, rect=False,
                                                verbose=False)[0]
    ours = Predictor(random_pose_onnx, conf=conf).predict(str(image))[0]
    a = Detections(theirs.boxes.xyxy.numpy(), theirs.boxes.conf.numpy(), theirs.boxes.cls.numpy().astype(int))
    b = Detections(ours.xyxy, ours.scores, ours.class_ids)
    pairs, n_theirs, _, _ = match(a, b, conf)
    assert len(pairs) >= n_theirs >= 5
    kpts = theirs.keypoints.data.numpy()
    for i, j in pairs:
        np.testing.assert_allclose(ours.keypoints[j, :, :2], kpts[i, :, :2], atol=0.05)
        np.testing.assert_allclose(ours.keypoints[j, :, 2], kpts[i, :, 2], atol=1e-4)


# ---------------------------------------------------------------------------------------------------- errors
def test_missing_model_says_how_to_export(tmp_path):
    with pytest.raises(ModelError, match=r"missing\.onnx.*tools/export\.py"):
        Predictor(tmp_path / "missing.onnx")


def test_garbage_model_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not a protobuf")
    with pytest.raises(ModelError, match=r"bad\.onnx: not a loadable ONNX model"):
        Predictor(bad)


@pytest.mark.parametrize("dtype,pattern", [
    ("FLOAT", r"plain\.onnx: ONNX metadata lacks 'task'/'names'"),
    ("INT32", r"plain\.onnx: input 'images' is tensor\(int32\), expected tensor\(uint8\) or tensor\(float\)"),
], ids=["no_metadata", "int32_input"])
def test_onnx_that_is_not_a_yolo_model(tmp_path, dtype, pattern):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    elem = getattr(TensorProto, dtype)
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g",
                              [helper.make_tensor_value_info("images", elem, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("out", elem, [1, 3, 32, 32])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelError, match=pattern):
        Predictor(path)


def test_non_float32_output_is_refused_at_load(tmp_path):
    """The host kernels read float32 maps: a float16 output is named when the model loads."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Cast", ["images"], ["output0"], to=TensorProto.FLOAT16)], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT16, [1, 3, 32, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"task": "detect", "names": "{0: 'a'}"})
    path = tmp_path / "half.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"half\.onnx: output 'output0' is tensor\(float16\), expected tensor\(float\)"):
        Predictor(path)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"conf": 1.5}, "conf must be within"),
    ({"iou": -0.1}, "iou must be within"),
    ({"max_det": 0}, "max_det must be"),
    ({"classes": [99]}, "out of range"),
    ({"imgsz": 640}, f"fixed at {TINY_IMGSZ}x{TINY_IMGSZ}"),
    ({"batch": 0}, "batch must be"),
    ({"threads": 0}, "threads must be"),
], ids=["conf", "iou", "max_det", "classes", "imgsz", "batch", "threads"])
def test_bad_arguments(tiny_detect_onnx, kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        Predictor(tiny_detect_onnx, **kwargs)


def test_bad_sources(tiny_detect_onnx, tmp_path):
    predictor = Predictor(tiny_detect_onnx)
    with pytest.raises(InputError, match=r"nope\.jpg: no such file"):
        predictor.predict(tmp_path / "nope.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InputError, match=r"corrupt\.jpg: cannot be read as an image"):
        predictor.predict(corrupt, strict=True)
    assert predictor.predict(corrupt) == []  # by default skipped, and listed
    assert [s.source for s in predictor.skipped] == [str(corrupt)]
    assert "corrupt.jpg: cannot be read as an image" in predictor.skipped[0].message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"empty: folder holds no images"):
        predictor.predict(empty)
    with pytest.raises(InputError, match="must be uint8"):
        predictor.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InputError, match="unsupported source float"):
        predictor.predict([4.2])  # (an int is a camera index)
