"""Classifiers (YOLOv8-cls, YOLO11-cls): Ultralytics' classify preprocessing, the softmax head, Results, the CLI,
export, truncation of stock exports, and parity with ``YOLO(pt).predict``.

Parity criteria: |Δprob| <= 1e-4 for every class of every image, and the same top-5 order wherever the
neighbouring probabilities differ by more than that tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import needs_export, needs_packages
from runtime import Model, Predictor
from runtime.errors import InputError, ModelError
from runtime.records.crop import CenterCrop, center_crop_into, plan_center_crop

PROB_TOL = 1e-4
TINY_NAMES = ("cat", "dog", "bus", "tree", "boat", "kite", "cup")


# ------------------------------------------------------------------------------------------------ tiny classifier
def tiny_classifier(path: Path, imgsz: tuple[int, int] | None = (64, 64), names=TINY_NAMES, seed: int = 0,
                    input_dtype_float: bool = False) -> Path:
    """A classifier in our layout, written by the exporter's own finishing step: uint8 input (float 0..1 with
    ``input_dtype_float``), a seeded 3x3 conv + ReLU, global average pool, a Gemm to the class logits (no softmax).
    ``imgsz`` None: dynamic height and width."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tools.layout import LOGITS_NAME, finish_graph

    rng = np.random.default_rng(seed)
    nc, features = len(names), 12
    hw = list(imgsz) if imgsz else ["height", "width"]
    inits = [numpy_helper.from_array(rng.standard_normal((features, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(features).astype(np.float32) * 0.1, "b"),
             numpy_helper.from_array(rng.standard_normal((nc, features)).astype(np.float32) * 0.5, "fc.w"),
             numpy_helper.from_array(rng.standard_normal(nc).astype(np.float32), "fc.b")]
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["conv"], name="conv", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
             helper.make_node("Flatten", ["pool"], ["flat"], name="flat"),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], [LOGITS_NAME], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "tiny-cls", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                ["batch", 3, *hw])],
                              [helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, ["batch", nc])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    metadata = dict(task="classify", names=dict(enumerate(names)), strides=[], reg_max=None, nm=None, kpt_shape=None,
                    dfl_bins=None, imgsz=tuple(imgsz or (64, 64)), batch=None, dynamic_hw=imgsz is None,
                    source="tiny", source_sha256="0" * 64, ultralytics_version="none")
    onnx.save(finish_graph(model, [LOGITS_NAME], metadata, input_dtype="float32" if input_dtype_float else "uint8",
                           simplify=False, where=str(path), graph="tiny", error=ValueError), str(path))
    return path


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("tiny_cls") / "tiny-cls.onnx")


@pytest.fixture(scope="module")
def tiny_cls_dynamic(tmp_path_factory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("tiny_cls") / "tiny-cls-any.onnx", imgsz=None)


def picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A BGR picture with structure at several scales (smooth gradients mixed per seed, blobs and noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (h + w) * 255], axis=2) @ rng.random((3, 3))
    blobs = cv2.GaussianBlur(rng.random((h, w, 3), dtype=np.float32) * 255, (0, 0), max(1.0, min(h, w) / 20))
    noise = rng.normal(0, 20, (h, w, 3))
    return np.clip(0.5 * base + 0.5 * blobs + noise, 0, 255).astype(np.uint8)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits.astype(np.float64) - logits.max())
    return e / e.sum()


# ---------------------------------------------------------------------------------------------- the preprocessing
@pytest.mark.parametrize("src_hw, target", [((480, 640), 224), ((640, 427), 224), ((333, 500), 160), ((100, 149), 64),
                                             ((64, 64), 64), ((31, 1000), 32), ((1000, 31), 32)])
def test_center_crop_plan_resizes_the_short_side_and_crops_the_centre(src_hw, target):
    plan = plan_center_crop(src_hw, (target, target))
    h, w = src_hw
    rh, rw = plan.resized_hw
    assert min(rh, rw) == target and plan.dst_hw == (target, target)
    assert abs(rh / rw - h / w) <= 1 / min(rh, rw) + 1e-9, "the resize keeps the aspect ratio (long side floored)"
    assert 0 <= plan.crop_top <= rh - target and 0 <= plan.crop_left <= rw - target
    assert abs(plan.crop_top - (rh - target - plan.crop_top)) <= 1
    assert abs(plan.crop_left - (rw - target - plan.crop_left)) <= 1


def test_rectangular_target_resizes_to_it_without_a_crop():
    plan = plan_center_crop((480, 640), (160, 224))
    assert plan.resized_hw == (160, 224) and (plan.crop_top, plan.crop_left) == (0, 0)


@needs_packages("PIL")
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("src_hw, target_hw", [((480, 640), (224, 224)), ((427, 640), (64, 64)), ((500, 333), (96, 96)),
                                               ((90, 120), (160, 160)), ((300, 200), (64, 96))])
def test_preprocessing_is_pillows_resize_then_the_centre_crop(src_hw, target_hw, dtype):
    from PIL import Image

    image = picture(*src_hw)
    plan = plan_center_crop(src_hw, target_hw)
    out = np.empty((3, *target_hw), dtype)
    center_crop_into(image, plan, out)
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    resized = np.asarray(Image.fromarray(rgb).resize(plan.resized_hw[::-1], Image.BILINEAR))
    want = resized[plan.crop_top:plan.crop_top + target_hw[0], plan.crop_left:plan.crop_left + target_hw[1]]
    want = want.transpose(2, 0, 1)
    if dtype == np.float32:
        want = want.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(out, want)


@needs_packages("PIL")
@pytest.mark.parametrize("seed", [0, 1])
def test_resize_crop_kernel_is_pillow_bit_for_bit(seed):
    """Random sizes up and down (both orders of Pillow's passes, the boundary between them included), random crops,
    random and smooth pictures: the kernel equals the installed Pillow's resize then the crop."""
    from PIL import Image

    from runtime.kernels.resample import pillow_vertical_first, resize_crop_into

    rng = np.random.default_rng(seed)
    orders = set()
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(2, 700, 2))
        rh, rw = (int(v) for v in rng.integers(1, 500, 2))
        if rng.random() < 0.2 and min(h, w) > 6:  # on the boundary of Pillow's choice of order
            shrink_w = int(rng.integers(0, w // 3))
            rw, rh = w - shrink_w, max(1, h - 2 * shrink_w + int(rng.integers(-1, 2)))
        th, tw = int(rng.integers(1, rh + 1)), int(rng.integers(1, rw + 1))
        top, left = int(rng.integers(0, rh - th + 1)), int(rng.integers(0, rw - tw + 1))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if rng.random() < 0.5:
            image = cv2.GaussianBlur(image, (0, 0), 2)
        want = np.asarray(Image.fromarray(image).resize((rw, rh), Image.BILINEAR))[top:top + th, left:left + tw]
        want = want[..., ::-1].transpose(2, 0, 1)
        out = np.empty((3, th, tw), np.uint8)
        resize_crop_into(image, (rh, rw), top, left, out)
        np.testing.assert_array_equal(out, want, err_msg=f"{(h, w)} -> {(rh, rw)}, crop {(top, left, th, tw)}")
        orders.add(pillow_vertical_first((h, w), (rh, rw)))
    assert orders == {True, False}


def test_resize_crop_kernel_refuses_a_crop_outside_the_image():
    from runtime.kernels.resample import resize_crop_into

    with pytest.raises(ValueError, match="does not fit the resized 100x120 image"):
        resize_crop_into(picture(50, 60), (100, 120), 90, 0, np.empty((3, 20, 20), np.uint8))


@needs_packages("PIL")
def test_opencv_would_not_do(tmp_path):
    """Why Pillow: OpenCV's area and bilinear resizes differ from Pillow's filter on a downscale."""
    from PIL import Image

    image = picture(480, 640)
    plan = plan_center_crop((480, 640), (224, 224))
    pillow = np.asarray(Image.fromarray(image).resize(plan.resized_hw[::-1], Image.BILINEAR)).astype(int)
    for flag in (cv2.INTER_AREA, cv2.INTER_LINEAR):
        opencv = cv2.resize(image, plan.resized_hw[::-1], interpolation=flag).astype(int)
        assert np.abs(opencv - pillow).max() > 1


# ------------------------------------------------------------------------------------------------ Model and Result
def test_tiny_classifier_gives_probabilities_and_top5(tiny_cls):
    import onnxruntime as ort

    model = Model(tiny_cls)
    images = [picture(480, 640, 1), picture(500, 333, 2)]
    prepared = model.prepare(images)
    assert all(isinstance(p, CenterCrop) for p in prepared.plans) and prepared.tensor.shape == (2, 3, 64, 64)
    logits = ort.InferenceSession(str(tiny_cls)).run(None, {"images": prepared.tensor})[0]
    results = model.results(model.infer(prepared))
    for result, raw, image in zip(results, logits, images):
        assert len(result) == 0 and result.probs.shape == (len(TINY_NAMES),) and result.probs.dtype == np.float32
        np.testing.assert_allclose(result.probs, softmax(raw), atol=1e-6)
        assert result.top5 == np.argsort(-softmax(raw), kind="stable")[:5].tolist()
        assert result.top1 == result.top5[0] and result.class_names == [TINY_NAMES[c] for c in result.top5]
        assert np.all(np.diff(result.top5conf) <= 0) and result.orig_hw == image.shape[:2]
        assert result.counts() == {} and result[0:0].probs is result.probs
    assert results[0].top5 != results[1].top5 or not np.allclose(results[0].probs, results[1].probs)


def test_batches_give_the_results_of_single_images(tiny_cls):
    images = [picture(480, 640, k) for k in range(3)] + [picture(640, 480, 7)]
    batched = Predictor(tiny_cls, batch=4).predict(images)
    for image, result in zip(images, batched):
        single = Predictor(tiny_cls).predict(image)[0]
        np.testing.assert_array_equal(single.probs, result.probs)


def test_a_fixed_size_classifier_refuses_another_imgsz(tiny_cls):
    with pytest.raises(InputError, match=r"fixed at 64x64; imgsz 64x96 cannot be used"):
        Model(tiny_cls, imgsz=(64, 96))


def test_a_dynamic_classifier_takes_rectangular_and_rounds_to_32(tiny_cls_dynamic):
    model = Model(tiny_cls_dynamic, imgsz=(64, 100))
    assert model.imgsz == (64, 128)  # Ultralytics' predict rounds a classifier's size up to a multiple of 32
    prepared = model.prepare([picture(480, 640)])
    assert prepared.plans[0].resized_hw == (64, 128) and prepared.tensor.shape == (1, 3, 64, 128)


def test_a_classifier_with_two_outputs_is_refused(tmp_path):
    import onnx

    path = tiny_classifier(tmp_path / "two.onnx")
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info("pool", onnx.TensorProto.FLOAT, ["batch", 12, 1, 1]))
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"two.onnx: a classify model has one output of shape \[batch, nc\]"):
        Model(path)


def test_a_stock_classifier_output_is_taken_as_probabilities(tmp_path):
    """A stock export's output0 is already softmaxed: the head passes it on as it is."""
    import onnx
    from onnx import helper

    ours = tiny_classifier(tmp_path / "ours.onnx", names=TINY_NAMES)
    model = onnx.load(str(ours))
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["output0"], axis=1))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, ["batch", 7]))
    del model.metadata_props[:]
    for key, value in (("task", "classify"), ("names", str(dict(enumerate(TINY_NAMES)))), ("imgsz", "[64, 64]")):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(tmp_path / "stock.onnx"))
    image = picture(300, 400)
    stock, truncated = Predictor(tmp_path / "stock.onnx").predict(image)[0], Predictor(ours).predict(image)[0]
    np.testing.assert_allclose(stock.probs, truncated.probs, atol=1e-6)


# ------------------------------------------------------------------------------------------------------ the CLI
@pytest.fixture()
def cls_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "wide.png"), picture(360, 640, 3))
    cv2.imwrite(str(folder / "tall.png"), picture(500, 300, 4))
    return folder


def test_cli_prints_writes_and_draws_the_top5(tiny_cls, cls_images, tmp_path, capsys):
    from runtime.cli.infer import main

    out_dir = tmp_path / "out"
    code = main([str(cls_images), "--model", str(tiny_cls), "--save-dir", str(out_dir), "--json",
                 "--jsonl", "frames.jsonl"])
    assert code == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("wide.png", "tall.png"))]
    assert len(printed) == 2
    expected = {p.name: Predictor(tiny_cls).predict(str(p))[0] for p in cls_images.iterdir()}
    for line in printed:
        result = expected[line.split(" ", 1)[0]]
        top = ", ".join(f"{TINY_NAMES[c]} {result.probs[c]:.2f}" for c in result.top5)
        assert f": {top} | ms: pre " in line
    records = json.loads((out_dir / "predictions.json").read_text())
    assert len(records) == 2
    for record in records:
        result = expected[record["image_id"]]
        assert record["category_id"] == result.top1 and record["category_name"] == TINY_NAMES[result.top1]
        assert [e["category_id"] for e in record["top5"]] == result.top5
        assert [e["score"] for e in record["top5"]] == pytest.approx(result.top5conf.tolist(), abs=1e-5)
    lines = [json.loads(line) for line in (out_dir / "frames.jsonl").read_text().splitlines()]
    assert [len(line["top5"]) for line in lines] == [5, 5] and all(line["detections"] == [] for line in lines)
    for name in ("wide.png", "tall.png"):
        saved, original = cv2.imread(str(out_dir / name)), cv2.imread(str(cls_images / name))
        assert saved.shape == original.shape
        changed = np.any(saved.astype(int) - original != 0, axis=2)
        assert changed[:20, :20].any() and not changed[-20:, -20:].any(), "the label sits at the top left"


def test_cli_rectangular_imgsz_on_a_fixed_classifier_is_one_line_and_exit_2(tiny_cls, cls_images, capsys):
    from runtime.cli.infer import main

    assert main([str(cls_images), "--model", str(tiny_cls), "--imgsz", "64", "96", "--no-save"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and str(tiny_cls) in err
    assert "fixed at 64x64" in err


# ------------------------------------------------------------------------------ Ultralytics: export, truncate, parity
@pytest.fixture(scope="module")
def classifier_pts(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("torch", reason="building Ultralytics classifiers needs torch")
    pytest.importorskip("ultralytics", reason="building Ultralytics classifiers needs ultralytics")
    from classify_models import CLASSIFY_CFGS, random_classifier_pt

    folder = tmp_path_factory.mktemp("cls_models")
    return {cfg: random_classifier_pt(folder, cfg) for cfg in CLASSIFY_CFGS}


@pytest.fixture(scope="module")
def classifier_onnx(classifier_pts, tmp_path_factory):
    """{(cfg, source): onnx}: our export (dynamic H/W) and Ultralytics' dynamic stock export truncated by us."""
    import shutil

    from ultralytics import YOLO

    from tools.export import export_truncated
    from tools.truncate import truncate

    folder = tmp_path_factory.mktemp("cls_onnx")
    files = {}
    for cfg, pt in classifier_pts.items():
        stem = Path(cfg).stem
        files[cfg, "export"] = export_truncated(pt, folder / f"{stem}-ours.onnx", dynamic_hw=True)
        local = folder / stem / pt.name
        local.parent.mkdir()
        shutil.copy(pt, local)
        stock = YOLO(str(local)).export(format="onnx", imgsz=224, dynamic=True, device="cpu", verbose=False)
        files[cfg, "truncate"] = truncate(stock, folder / f"{stem}-truncated.onnx")
    return files


def parity_images(shared_dir: Path, n: int = 10) -> list[Path]:
    """``n`` COCO images spread over the aspect ratios there (portrait to wide)."""
    folder = shared_dir / "coco" / "val2017"
    files = sorted(folder.glob("*.jpg"))
    if len(files) < n:
        pytest.skip(f"too few COCO images in {folder}")
    ratios = []
    for f in files[:80]:
        h, w = cv2.imread(str(f)).shape[:2]
        ratios.append((w / h, f))
    ratios.sort()
    picks = np.linspace(0, len(ratios) - 1, n).round().astype(int)
    return [ratios[k][1] for k in picks]


def assert_probs_match(theirs: np.ndarray, ours: np.ndarray, where: str) -> float:
    gap = float(np.abs(theirs - ours).max())
    assert gap <= PROB_TOL, f"{where}: |Δprob| {gap:.2e} > {PROB_TOL}"
    order = np.argsort(-theirs, kind="stable")[:5]
    ours_order = np.argsort(-ours, kind="stable")[:5]
    for k in range(len(order)):
        if order[k] != ours_order[k]:  # allowed only between classes closer than the tolerance
            assert abs(theirs[order[k]] - theirs[ours_order[k]]) <= PROB_TOL, f"{where}: top-5 order differs"
    return gap


@needs_export
@pytest.mark.slow
@pytest.mark.parametrize("cfg", ["yolov8n-cls.yaml", "yolo11n-cls.yaml", "yolo26n-cls.yaml"])
def test_parity_with_ultralytics_predict(cfg, classifier_pts, classifier_onnx, shared_dir):
    """Our export and the truncated stock export, at three input sizes and two batch sizes, against
    ``YOLO(pt).predict`` on the same images."""
    from ultralytics import YOLO

    images = parity_images(shared_dir)
    yolo = YOLO(str(classifier_pts[cfg]))
    worst, spread = 0.0, set()
    for imgsz in (224, 160, 320):
        theirs = [yolo.predict(str(p), imgsz=imgsz, device="cpu", verbose=False)[0].probs.data.numpy() for p in images]
        spread |= {int(t.argmax()) for t in theirs}
        for source in ("export", "truncate"):
            for batch in (1, 4):
                predictor = Predictor(classifier_onnx[cfg, source], imgsz=imgsz, batch=batch)
                ours = predictor.predict([str(p) for p in images])
                for path, want, got in zip(images, theirs, ours):
                    worst = max(worst, assert_probs_match(want, got.probs, f"{cfg} {source} {imgsz} b{batch} "
                                                                           f"{path.name}"))
    assert len(spread) >= 2, "the random classifier must not give every image the same class"
    print(f"{cfg}: worst |Δprob| {worst:.2e}")


@needs_export
@pytest.mark.slow
def test_preprocessing_is_bit_identical_to_ultralytics(classifier_pts, shared_dir):
    """The float input tensor equals the one Ultralytics' predictor builds, bit for bit."""
    from ultralytics import YOLO

    yolo = YOLO(str(classifier_pts["yolov8n-cls.yaml"]))
    for imgsz in (224, 160, (160, 224)):
        image_path = parity_images(shared_dir, 4)
        yolo.predict(str(image_path[0]), imgsz=imgsz, device="cpu", verbose=False)  # sets up the predictor
        hw = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        for path in image_path:
            image = cv2.imread(str(path))
            theirs = yolo.predictor.preprocess([image]).numpy()[0]
            ours = np.empty((3, *hw), np.float32)
            center_crop_into(image, plan_center_crop(image.shape[:2], hw), ours)
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{path.name} at {imgsz}")


@needs_export
@pytest.mark.slow
def test_export_metadata_and_graph_end(classifier_onnx):
    import onnx

    model = onnx.load(str(classifier_onnx["yolov8n-cls.yaml", "export"]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["task"] == "classify" and json.loads(meta["imgsz"]) == [224, 224] and meta["layout"] == "truncated-head"
    from classify_models import CLASSIFY_NAMES

    assert json.loads(meta["names"]) == {str(k): v for k, v in enumerate(CLASSIFY_NAMES)}
    assert "strides" not in meta and "reg_max" not in meta
    producer = {o: n for n in model.graph.node for o in n.output}
    assert [o.name for o in model.graph.output] == ["logits"] and producer["logits"].op_type == "Gemm"
    assert not any(n.op_type == "Softmax" for n in model.graph.node)


@needs_export
@pytest.mark.slow
def test_export_refuses_sizes_predict_would_round(classifier_pts, tmp_path, capsys):
    from tools.export import main

    out = tmp_path / "x.onnx"
    assert main([str(classifier_pts["yolov8n-cls.yaml"]), "--imgsz", "200", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "must be multiples of 32" in err and not out.exists()


@needs_packages("openvino")
@pytest.mark.slow
def test_openvino_f32_gives_the_same_results(classifier_onnx, shared_dir):
    images = [str(p) for p in parity_images(shared_dir, 6)]
    for (cfg, source), onnx_path in classifier_onnx.items():
        reference = Predictor(onnx_path, batch=2).predict(images)
        other = Predictor(onnx_path, batch=2, engine="openvino", precision="f32").predict(images)
        for path, a, b in zip(images, reference, other):
            assert_probs_match(a.probs, b.probs, f"{cfg} {source} openvino {Path(path).name}")


# ------------------------------------------------------------------------------------------------------- W8A8
def test_calibration_inputs_are_the_predictors(tiny_cls, tmp_path):
    """The quantizer calibrates on exactly the tensors the Predictor feeds a classifier (centre crop, not letterbox)."""
    from tools.calibration import preprocess_image
    from tools.quant_model import inspect_float_model

    info = inspect_float_model(tiny_cls)
    assert info.preprocess == "center_crop" and info.output_names == ("logits",)
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), picture(300, 451, 9))
    want = Model(tiny_cls).prepare([cv2.imread(str(path))]).tensor[0]
    np.testing.assert_array_equal(preprocess_image(path, info.input_hw, info.input_dtype, info.preprocess), want)


@pytest.mark.parametrize("target", ["openvino", "onnxruntime"])
def test_quantized_tiny_classifier_keeps_its_classes(tiny_cls, tmp_path, target):
    from tools.quantize import main as quantize

    calib = tmp_path / "calib"
    calib.mkdir()
    for k in range(12):
        cv2.imwrite(str(calib / f"{k}.png"), picture(200 + 10 * k, 300, seed=40 + k))
    out = tmp_path / f"w8a8-{target}.onnx"
    assert quantize([str(tiny_cls), "--calib", str(calib), "--num", "12", "--target", target, "-o", str(out)]) == 0
    images = [picture(240, 320, seed=200 + k) for k in range(8)]
    float_results, int8_results = Predictor(tiny_cls).predict(images), Predictor(out).predict(images)
    assert Predictor(out).model.spec.task == "classify"
    agree = np.mean([a.top1 == b.top1 for a, b in zip(float_results, int8_results)])
    gap = max(float(np.abs(a.probs - b.probs).max()) for a, b in zip(float_results, int8_results))
    assert agree >= 7 / 8 and gap < 0.1


@needs_export
@pytest.mark.slow
def test_w8a8_of_a_classifier_with_a_trained_backbone_agrees_with_float(shared_dir, tmp_path):
    """On COCO images: calibration on train2017, agreement measured on val2017 (label-free)."""
    from classify_models import classifier_with_backbone, save_classifier
    from tools.eval_classify import agreement
    from tools.export import export_truncated
    from tools.quantize import main as quantize

    detector = shared_dir / "models" / "yolov8n.pt"
    calib = shared_dir / "coco" / "train2017"
    if not detector.is_file() or not calib.is_dir():
        pytest.skip(f"needs {detector} and {calib}")
    pt = save_classifier(classifier_with_backbone("yolov8n-cls.yaml", detector), tmp_path / "bb.pt")
    float_onnx = export_truncated(pt, tmp_path / "bb.onnx")
    out = tmp_path / "bb-w8a8.onnx"
    assert quantize([str(float_onnx), "--calib", str(calib), "--num", "64", "-o", str(out)]) == 0
    images = [str(p) for p in parity_images(shared_dir, 40)]
    want = np.stack([r.probs for r in Predictor(float_onnx, batch=8).predict(images)])
    got = np.stack([r.probs for r in Predictor(out, batch=8).predict(images)])
    top1, top5 = agreement(got, want)
    assert len(set(want.argmax(1).tolist())) >= 3, "the classifier must spread its images over several classes"
    assert top1 >= 0.9 and top5 >= 0.95, (top1, top5)


# ------------------------------------------------------------------------------------------ truncation, torch-free
def stock_classifier(path: Path, softmax: bool = True) -> Path:
    """The tiny classifier as a stock Ultralytics export would be: float input, ``output0`` = Softmax of the Gemm
    (or the Gemm itself when ``softmax`` is False), Ultralytics' metadata keys."""
    import onnx
    from onnx import TensorProto, helper

    ours = onnx.load(str(tiny_classifier(path.with_name(path.stem + "-ours.onnx"), input_dtype_float=True)))
    graph = ours.graph
    if softmax:
        graph.node.append(helper.make_node("Softmax", ["logits"], ["output0"], name="/model.9/Softmax", axis=1))
    else:
        graph.node.append(helper.make_node("Identity", ["logits"], ["output0"], name="/out"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", len(TINY_NAMES)]))
    del ours.metadata_props[:]
    for key, value in (("task", "classify"), ("head", "Classify"), ("names", str(dict(enumerate(TINY_NAMES)))),
                       ("imgsz", "[64, 64]"), ("version", "8.4.190"), ("stride", "1")):
        ours.metadata_props.add(key=key, value=value)
    onnx.save(ours, str(path))
    return path


def test_truncating_a_stock_classifier_cuts_before_its_softmax(tmp_path, capsys):
    import onnx

    from tools.truncate import main as truncate_main

    stock = stock_classifier(tmp_path / "stock.onnx")
    out = tmp_path / "cut.onnx"
    assert truncate_main([str(stock), "-o", str(out)]) == 0
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    producer = {o: n for n in model.graph.node for o in n.output}
    assert [o.name for o in model.graph.output] == ["logits"] and producer["logits"].op_type == "Gemm"
    assert meta["task"] == "classify" and meta["layout"] == "truncated-head" and json.loads(meta["imgsz"]) == [64, 64]
    assert json.loads(meta["names"]) == {str(k): v for k, v in enumerate(TINY_NAMES)}
    image = picture(300, 420, 11)
    cut, original = Predictor(out).predict(image)[0], Predictor(stock).predict(image)[0]
    assert Predictor(out).model.spec.input_dtype == "uint8"
    np.testing.assert_allclose(cut.probs, original.probs, atol=1e-6)


def test_truncate_refuses_a_classifier_without_a_softmax(tmp_path, capsys):
    from tools.truncate import main as truncate_main

    stock = stock_classifier(tmp_path / "nosoftmax.onnx", softmax=False)
    out = tmp_path / "cut.onnx"
    assert truncate_main([str(stock), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(stock) in err and "does not come from a Softmax" in err
    assert not out.exists()


def test_quantize_refuses_a_stock_classifier_and_says_to_truncate_it(tmp_path, capsys):
    from tools.quantize import main as quantize

    stock = stock_classifier(tmp_path / "stock.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    cv2.imwrite(str(calib / "a.png"), picture(100, 100))
    assert quantize([str(stock), "--calib", str(calib), "-o", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stock Ultralytics classifier" in err and "tools/truncate.py" in err


@needs_export
@pytest.mark.slow
def test_latency_bench_times_a_classifier_beside_ultralytics(classifier_pts, classifier_onnx, shared_dir, tmp_path):
    """bench/latency.py runs a classifier at two batch sizes and beside YOLO(pt).predict (structure only: no timing
    is asserted on a shared machine)."""
    import math

    from bench import latency

    images = tmp_path / "images"
    images.mkdir()
    for path in parity_images(shared_dir, 4):
        (images / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "latency.json"
    assert latency.main(["--model", str(classifier_onnx["yolo11n-cls.yaml", "export"]), "--images", str(images),
                         "--batch", "1,2", "--warmup", "1", "--threads", "1", "--compare-ultralytics",
                         str(classifier_pts["yolo11n-cls.yaml"]), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    cmp = report["compare_ultralytics"]
    assert cmp["images"] == 4 and cmp["settings"]["imgsz"] == [224, 224]
    for side in ("ours", "theirs"):
        assert math.isfinite(cmp["host_share"][side]) and cmp["host_share"][side] > 0
        assert cmp[side]["preprocess"]["p50"] > 0 and cmp[side]["inference"]["p50"] > 0
