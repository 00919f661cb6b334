"""Inference engines: selection, errors, what they report, and OpenVINO's Results against onnxruntime's.

Parity between engines uses the criteria of the Ultralytics parity tests (tests/matching.py):
>= 99% of onnxruntime's detections matched by OpenVINO's (same class, box IoU >= 0.99, |score
difference| <= 0.002), mask IoU >= 0.97, and keypoints within 0.5 px. OpenVINO runs at
``precision="f32"`` for them; its default (bf16 on CPUs that have it) is judged by COCO mAP instead.

Selection, errors and the engine interface run on the tiny models (no torch needed); engine parity runs on the
tiny models and, for the numerics of a real network, on random-init Ultralytics models (needs torch).
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from conftest import RANDOM_IMGSZ, needs_export
from matching import Detections, Tally, assert_parity, compare_one, match
from runtime import EngineNotInstalledError, InputError, ModelError, Predictor, YoloRuntimeError
from runtime.engines import ENGINES, TensorInfo, engine_class, open_engine
from test_predictor import _same
from tiny_models import TINY_IMGSZ

KEYPOINT_PX = 0.5


@pytest.fixture(autouse=True)
def _openvino_cache(tmp_path_factory, monkeypatch):
    """Compiled OpenVINO models go to a folder of this test session, not the user's cache."""
    monkeypatch.setenv("YOLO_EDGE_OPENVINO_CACHE", str(tmp_path_factory.getbasetemp() / "openvino-cache"))


@pytest.fixture(scope="module")
def openvino():
    return pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def images(pictures) -> list[np.ndarray]:
    portrait, wide = (cv2.imread(str(p)) for p in pictures)
    return [portrait, wide, cv2.resize(portrait, (333, 517))]


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Ultralytics' two photos (and one resized): the scenes the random-init models' thresholds were set on."""
    from test_parity import asset_images

    bus, zidane = (cv2.imread(str(p)) for p in asset_images())
    return [bus, zidane, cv2.resize(bus, (333, 517))]


def _detections(result) -> Detections:
    return Detections(result.xyxy, result.scores, result.class_ids.astype(int), result.masks)


def engine_parity(reference: Predictor, candidate: Predictor, images: list, conf: float,
                  names: list[str] | None = None) -> Tally:
    """Compare ``candidate``'s Results with ``reference``'s on ``images`` (paths or arrays), by the
    parity criteria; keypoints of matched detections must be within KEYPOINT_PX."""
    tally = Tally()
    ref_results = reference.predict(images)
    cand_results = candidate.predict(images)
    for k, (ref, cand) in enumerate(zip(ref_results, cand_results)):
        name = names[k] if names else f"image{k}"
        theirs, ours = _detections(ref), _detections(cand)
        compare_one(tally, name, theirs, ours, conf)
        if ref.keypoints is not None:
            pairs, _, _, _ = match(theirs, ours, conf)
            for i, j in pairs:
                err = float(np.abs(ref.keypoints[i, :, :2] - cand.keypoints[j, :, :2]).max())
                if err > KEYPOINT_PX:
                    tally.failures.append(f"{name}: keypoints of detection {i} off by {err:.2f} px")
    return tally


def _assert_engine_parity(tally: Tally, min_detections: int) -> None:
    assert_parity(tally, min_detections)
    assert not [f for f in tally.failures if "keypoints" in f], tally.failures[:10]


# ---------------------------------------------------------------------------------------------- selection
def test_registry_names_both_engines():
    assert list(ENGINES) == ["onnxruntime", "openvino"]
    assert engine_class("onnxruntime").name == "onnxruntime"


def test_default_engine_is_onnxruntime(tiny_detect_onnx):
    predictor = Predictor(tiny_detect_onnx)
    assert predictor.engine.name == "onnxruntime"
    assert predictor.engine.settings["precision"] == "f32"


def _quantized_for(src, target: str, tmp_path):
    """A copy of ``src`` whose metadata says it was quantized for ``target`` (what engine=None reads)."""
    import json

    import onnx

    model = onnx.load(str(src))
    model.metadata_props.add(key="quantization", value=json.dumps({"target_engine": target}))
    out = tmp_path / f"for-{target}.onnx"
    onnx.save(model, str(out))
    return out


def test_metadata_is_read_as_onnx_reads_it(tiny_detect_onnx, tiny_seg_onnx, tmp_path):
    import onnx

    from runtime.engines.onnx_metadata import read_onnx_metadata

    tagged = _quantized_for(tiny_seg_onnx, "openvino", tmp_path)
    for path in (tiny_detect_onnx, tiny_seg_onnx, tagged):
        want = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert want and read_onnx_metadata(path) == want
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.onnx").write_text("not a protobuf at all")
    (tmp_path / "cut.onnx").write_bytes(tagged.read_bytes()[:-7])  # the last metadata entry cut short
    for bad in ("empty.onnx", "text.onnx", "cut.onnx", "missing.onnx"):
        assert read_onnx_metadata(tmp_path / bad) == {}


def test_choosing_the_engine_does_not_import_onnx(tiny_detect_onnx):
    import subprocess

    code = (f"import sys; from runtime import Predictor; Predictor({str(tiny_detect_onnx)!r}); "
            "print('onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_w8a8_file_runs_on_the_engine_it_was_made_for(openvino, tiny_detect_onnx, tmp_path, caplog):
    assert Predictor(_quantized_for(tiny_detect_onnx, "openvino", tmp_path)).engine.name == "openvino"
    assert Predictor(_quantized_for(tiny_detect_onnx, "onnxruntime", tmp_path)).engine.name == "onnxruntime"
    # a name given wins, and the mismatch is said once
    with caplog.at_level("WARNING"):
        predictor = Predictor(_quantized_for(tiny_detect_onnx, "openvino", tmp_path), engine="onnxruntime")
    assert predictor.engine.name == "onnxruntime" and "was quantized for openvino" in caplog.text


def test_w8a8_file_falls_back_when_its_engine_is_missing(tiny_detect_onnx, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as if absent
    monkeypatch.delitem(sys.modules, "runtime.engines.openvino", raising=False)
    with caplog.at_level("WARNING"):
        predictor = Predictor(_quantized_for(tiny_detect_onnx, "openvino", tmp_path))
    assert predictor.engine.name == "onnxruntime" and "was quantized for openvino" in caplog.text


def test_openvino_is_chosen_with_one_argument(openvino, tiny_detect_onnx):
    predictor = Predictor(tiny_detect_onnx, engine="openvino", precision="f32", device="CPU", threads=1)
    settings = predictor.engine.settings
    assert predictor.engine.name == "openvino" and settings["version"] in openvino.__version__
    assert settings["device"] == "CPU" and settings["precision"] == "f32" and settings["threads"] == 1


def test_unknown_engine_lists_the_valid_ones(tiny_detect_onnx):
    with pytest.raises(InputError, match=r"unknown engine 'tensorrt'; choose one of: onnxruntime, openvino"):
        Predictor(tiny_detect_onnx, engine="tensorrt")


def test_missing_engine_says_how_to_install(tiny_detect_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as if absent
    monkeypatch.delitem(sys.modules, "runtime.engines.openvino", raising=False)
    with pytest.raises(EngineNotInstalledError, match=r'pip install "yolo-edge-runtime\[openvino\]"') as info:
        Predictor(tiny_detect_onnx, engine="openvino")
    assert isinstance(info.value, YoloRuntimeError) and isinstance(info.value, ImportError)
    assert "the openvino engine needs the openvino package" in str(info.value)


def test_cli_reports_a_missing_engine(tiny_detect_onnx, pictures, monkeypatch, capsys):
    from runtime.cli.infer import main

    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.delitem(sys.modules, "runtime.engines.openvino", raising=False)
    image = str(pictures[0])
    assert main([image, "--model", str(tiny_detect_onnx), "--engine", "openvino", "--no-save"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the openvino engine needs") and "Traceback" not in err


def test_import_runtime_loads_no_engine():
    import subprocess

    code = ("import sys, runtime; print(','.join(m for m in ('openvino', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("engine,kwargs,pattern", [
    ("onnxruntime", {"precision": "bf16"}, r"onnxruntime engine runs float models at f32 only"),
    ("onnxruntime", {"device": "GPU"}, r"picks its device through providers"),
    ("onnxruntime", {"precision": "int4"}, r"unknown precision 'int4'; choose one of: f32, bf16, f16"),
    ("openvino", {"providers": ["CPUExecutionProvider"]}, r"openvino engine takes device= instead"),
    ("openvino", {"device": "NPU"}, r"OpenVINO device 'NPU' is not available here \(available: .*CPU"),
    ("openvino", {"threads": 0}, r"threads must be >= 1"),
], ids=["ort_bf16", "ort_device", "bad_precision", "ov_providers", "ov_missing_device", "ov_threads"])
def test_options_an_engine_cannot_honour(tiny_detect_onnx, engine, kwargs, pattern):
    if engine == "openvino":
        pytest.importorskip("openvino")
    with pytest.raises(InputError, match=pattern):
        Predictor(tiny_detect_onnx, engine=engine, **kwargs)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_bad_files_name_the_file(engine, tmp_path):
    if engine == "openvino":
        pytest.importorskip("openvino")
    with pytest.raises(ModelError, match=r"missing\.onnx: model file not found; export one with"):
        Predictor(tmp_path / "missing.onnx", engine=engine)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not a protobuf")
    with pytest.raises(ModelError, match=r"bad\.onnx: not a loadable ONNX model \(") as info:
        Predictor(bad, engine=engine)
    assert "\n" not in str(info.value)


def test_openvino_refuses_a_batch_of_the_wrong_dtype(openvino, tiny_detect_onnx):
    engine = open_engine(tiny_detect_onnx, "openvino", precision="f32")
    with pytest.raises(InputError, match=r"input is tensor\(uint8\), got a float32 batch"):
        engine.run(np.zeros((1, 3, TINY_IMGSZ, TINY_IMGSZ), np.float32))


# ---------------------------------------------------------------------------------------------- interface
def _dims(info: TensorInfo) -> tuple:
    return tuple(d if isinstance(d, int) else None for d in info.shape)


@pytest.mark.parametrize("model", ["tiny_seg_onnx", "tiny_pose_onnx"])
def test_engines_report_the_same_model(openvino, model, request):
    path = request.getfixturevalue(model)
    ort_engine, ov_engine = open_engine(path, "onnxruntime"), open_engine(path, "openvino")
    assert ov_engine.metadata == ort_engine.metadata and ov_engine.metadata["layout"] == "truncated-head"
    for a, b in ((ort_engine.inputs, ov_engine.inputs), (ort_engine.outputs, ov_engine.outputs)):
        assert [(t.name, _dims(t), t.type) for t in a] == [(t.name, _dims(t), t.type) for t in b]
    assert ov_engine.inputs[0].type == "tensor(uint8)" and ov_engine.inputs[0].shape[0] is None
    spec_ort = Predictor(path).spec
    spec_ov = Predictor(path, engine="openvino").spec
    assert spec_ov == spec_ort


def test_openvino_outputs_stay_valid_while_held(openvino, tiny_seg_onnx):
    engine = open_engine(tiny_seg_onnx, "openvino", precision="f32")
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (1, 3, TINY_IMGSZ, TINY_IMGSZ), dtype=np.uint8) for _ in range(2))
    first = engine.run(a)
    kept = {k: v.copy() for k, v in first.items()}
    second = engine.run(b)  # the first request is still lent out: a second one runs this
    assert set(first) == {o.name for o in engine.outputs}
    for name, value in first.items():
        assert value.dtype == np.float32 and value.flags.c_contiguous
        np.testing.assert_array_equal(value, kept[name])
        assert value.ctypes.data != second[name].ctypes.data
    assert not np.array_equal(first["proto"], second["proto"])
    row = first["proto"][0]  # a view keeps its request lent out too
    del first, second, value
    assert len(engine._pool._free) == 1
    del row
    assert len(engine._pool._free) == 2
    again = engine.run(a)
    for name, value in again.items():
        np.testing.assert_array_equal(value, kept[name])


def test_openvino_compiles_into_the_cache_folder(openvino, tiny_detect_onnx, tmp_path, monkeypatch):
    engine = open_engine(tiny_detect_onnx, "openvino", cache_dir=tmp_path / "blobs")
    assert engine.settings["cache_dir"] == str(tmp_path / "blobs")
    assert any((tmp_path / "blobs").iterdir()), "no compiled blob written"
    monkeypatch.setenv("YOLO_EDGE_OPENVINO_CACHE", "")  # empty: no cache
    assert open_engine(tiny_detect_onnx, "openvino").settings["cache_dir"] is None
    monkeypatch.setenv("YOLO_EDGE_OPENVINO_CACHE", str(tmp_path / "env"))
    assert open_engine(tiny_detect_onnx, "openvino").settings["cache_dir"] == str(tmp_path / "env")


# ---------------------------------------------------------------------------------------------- parity
TINY_PARITY_CASES = [  # (task, tiny model kwargs, predictor kwargs)
    ("detect", {}, {}),
    ("segment", {}, {}),
    ("segment", {}, {"retina_masks": True}),
    ("pose", {}, {}),
    ("segment", {}, {"batch": 3}),
    ("segment", {"batch": 2}, {}),
    ("detect", {"input_dtype": "float32"}, {"batch": 2}),
]


@pytest.mark.parametrize("task,model_kwargs,predictor_kwargs", TINY_PARITY_CASES,
                         ids=["detect", "segment", "segment_native_masks", "pose", "segment_batch3",
                              "segment_fixed_batch2", "detect_float_input_batch2"])
def test_openvino_f32_matches_onnxruntime_on_tiny_models(openvino, tiny_onnx, images, task, model_kwargs,
                                                         predictor_kwargs):
    path = tiny_onnx(task, **model_kwargs)
    reference = Predictor(path, **predictor_kwargs)
    candidate = Predictor(path, engine="openvino", precision="f32", **predictor_kwargs)
    assert candidate.spec == reference.spec and candidate.batch == reference.batch
    tally = engine_parity(reference, candidate, images, 0.25)
    _assert_engine_parity(tally, min_detections=10)
    assert tally.theirs_matched == tally.theirs, tally.failures
    if task == "segment":
        assert len(tally.mask_ious) >= 10


# (random checkpoint fixture, export kwargs, predictor kwargs, conf): the numerics of a real network; random pose
# heads score low
PARITY_CASES = [
    ("random_detect_pt", {}, {}, 0.3),
    ("random_seg_pt", {}, {}, 0.3),
    ("random_seg_pt", {}, {"retina_masks": True}, 0.3),
    ("random_pose_pt", {}, {}, 0.02),
    ("random_seg_pt", {}, {"batch": 3}, 0.3),
    ("random_seg_pt", {"batch": 2}, {}, 0.3),
    ("random_pose_pt", {"batch": 2}, {}, 0.02),
    ("random_detect_pt", {"input_dtype": "float32"}, {}, 0.3),
    ("random_seg_pt", {"input_dtype": "float32"}, {"batch": 2}, 0.3),
    ("random_seg_pt", {"dynamic_hw": True}, {}, 0.3),
]


@needs_export
@pytest.mark.slow
@pytest.mark.parametrize("pt_fixture,export_kwargs,predictor_kwargs,conf", PARITY_CASES,
                         ids=["detect", "segment", "segment_native_masks", "pose", "segment_batch3",
                              "segment_fixed_batch2", "pose_fixed_batch2", "detect_float_input",
                              "segment_float_input_batch2", "segment_dynamic_hw"])
def test_openvino_f32_matches_onnxruntime(openvino, request, export_onnx, photos, pt_fixture, export_kwargs,
                                          predictor_kwargs, conf):
    onnx = export_onnx(request.getfixturevalue(pt_fixture), imgsz=RANDOM_IMGSZ, **export_kwargs)
    reference = Predictor(onnx, conf=conf, **predictor_kwargs)
    candidate = Predictor(onnx, conf=conf, engine="openvino", precision="f32", **predictor_kwargs)
    assert candidate.spec == reference.spec and candidate.batch == reference.batch
    tally = engine_parity(reference, candidate, photos, conf)
    _assert_engine_parity(tally, min_detections=10)
    assert tally.theirs_matched == tally.theirs, tally.failures  # a handful of images: every one matches
    if reference.spec.task == "segment":
        assert len(tally.mask_ious) >= 10


def test_openvino_predict_is_thread_safe(openvino, tiny_seg_onnx, images):
    predictor = Predictor(tiny_seg_onnx, threads=1, engine="openvino", precision="f32")
    reference = predictor.predict(images)
    start = threading.Barrier(2)

    def work(_):
        start.wait()
        return [predictor.predict(images) for _ in range(3)]

    with ThreadPoolExecutor(2) as pool:
        runs = [run for runs in pool.map(work, range(2)) for run in runs]
    for run in runs:
        for ours, ref in zip(run, reference):
            _same(ours, ref, atol=1e-4)


# ---------------------------------------------------------------------------------------------- shared data
SHARED_CASES = [  # (checkpoint, image folder, images: enough for 20+ detections, predictor kwargs)
    ("models/yolov8n.pt", "val2017", 12, {}),
    ("models/yolov8n-seg.pt", "val2017", 12, {}),
    ("models/yolov8n-seg.pt", "val2017", 12, {"retina_masks": True}),
    ("models/yolo11n-pose.pt", "val2017-pose", 30, {}),  # one person per image
]


@needs_export
@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("pt,folder,n_images,predictor_kwargs", SHARED_CASES,
                         ids=["yolov8n", "yolov8n-seg", "yolov8n-seg_native_masks", "yolo11n-pose"])
def test_shared_openvino_f32_matches_onnxruntime(openvino, shared_file, shared_dir, export_onnx, pt, folder,
                                                 n_images, predictor_kwargs):
    onnx = export_onnx(shared_file(pt), imgsz=640)
    image_dir = shared_dir / "coco" / folder
    if not image_dir.is_dir():
        pytest.skip(f"no COCO images at {image_dir} (set YOLO_SHARED_DIR)")
    paths = sorted(image_dir.glob("*.jpg"))[:n_images]
    reference = Predictor(onnx, **predictor_kwargs)
    candidate = Predictor(onnx, engine="openvino", precision="f32", **predictor_kwargs)
    tally = engine_parity(reference, candidate, [str(p) for p in paths], 0.25, [p.name for p in paths])
    _assert_engine_parity(tally, min_detections=20)
