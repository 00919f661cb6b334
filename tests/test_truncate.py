"""tools/truncate.py: stock Ultralytics ONNX exports (and vendor cuts, raw per-level files) to our truncated-head layout.

Random-init models (tests/conftest.py) are exported by Ultralytics' own ``model.export(format="onnx")`` in several
variants; the truncated file must give the outputs of ``tools/export.py``'s file for the same checkpoint, and the
Predictor on it the results of the Predictor on our export. Also: YOLO11 / YOLO12 / YOLOv9 / YOLOv5u exports against
``YOLO(pt).predict``, the shared real checkpoints, vendor cuts, refusals, and one quantization run.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("ultralytics")

from conftest import OUTPUT_ATOL, OUTPUT_RTOL, RANDOM_IMGSZ, assert_outputs_close  # noqa: E402
from matching import Detections, Tally, assert_parity, match  # noqa: E402
from test_parity import adaptive_conf, asset_images, run_parity  # noqa: E402
from tools.layout import output_names  # noqa: E402
from tools.truncate import (  # noqa: E402
    CutError,
    NotAYoloHeadError,
    UnsupportedHeadError,
    main,
    truncate,
)

from runtime import Predictor  # noqa: E402

ATOL, RTOL = OUTPUT_ATOL, OUTPUT_RTOL  # the bound of the issue: |Δ| <= 1e-4 + 1e-5 * |ref|
META_KEYS = {
    "producer", "layout", "layout_version", "task", "names", "strides", "reg_max", "nc", "imgsz", "batch",
    "dynamic_hw", "input_dtype", "source", "source_sha256", "ultralytics_version", "opset", "simplified",
}  # fmt: skip
EXTRA_META = {"detect": set(), "segment": {"nm"}, "pose": {"kpt_shape"}}


# --------------------------------------------------------------------------------------------------------- helpers
def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def images_u8(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = x if sess.get_inputs()[0].type == "tensor(uint8)" else x.astype(np.float32) / np.float32(255)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: feed})))


def assert_same_outputs(got_path: Path, want_path: Path, x: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> float:
    got, want = run(got_path, x), run(want_path, x)
    assert list(got) == list(want)
    return assert_outputs_close(got, want, atol, rtol)


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


@pytest.fixture(scope="module")
def stock_export(tmp_path_factory):
    """Factory: stock_export(pt, **export_kwargs) -> Path of Ultralytics' own ONNX export (cached per arguments)."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("stock")
    cache: dict[tuple, Path] = {}

    def make(pt: Path, imgsz: int = RANDOM_IMGSZ, **kwargs) -> Path:
        key = (str(pt), imgsz, tuple(sorted(kwargs.items())))
        if key not in cache:
            folder = root / f"e{len(cache)}"
            folder.mkdir()
            local = folder / Path(pt).name  # Ultralytics writes the .onnx beside the .pt
            shutil.copy(pt, local)
            out = YOLO(str(local)).export(format="onnx", imgsz=imgsz, device="cpu", verbose=False, **kwargs)
            cache[key] = Path(out)
        return cache[key]

    return make


@pytest.fixture(scope="module")
def truncated(stock_export, tmp_path_factory):
    """Factory: truncated(pt, **export_kwargs) -> (stock path, truncated path), truncated with the defaults."""
    root = tmp_path_factory.mktemp("truncated")
    cache: dict[tuple, tuple[Path, Path]] = {}

    def make(pt: Path, **kwargs) -> tuple[Path, Path]:
        key = (str(pt), tuple(sorted(kwargs.items())))
        if key not in cache:
            stock = stock_export(pt, **kwargs)
            # onnxslim takes ~10 s on a dynamic-shape graph: simplify the static ones only (both paths covered)
            cache[key] = stock, truncate(stock, root / f"t{len(cache)}.onnx", simplify=not kwargs.get("dynamic"))
        return cache[key]

    return make


def _pt(request, random_pt, which: str) -> Path:
    if which.endswith(".yaml"):
        return random_pt(which, nc=1, names=["person"]) if "pose" in which else random_pt(which)
    return request.getfixturevalue(which)


# ----------------------------------------------------------------- stock exports: same outputs as our own export
# id -> (checkpoint: conftest fixture or yaml, Ultralytics export kwargs, task)
STOCK_CASES = {
    "v8-detect-dynamic-opset17": ("random_detect_pt", {"dynamic": True, "opset": 17, "simplify": False}, "detect"),
    "v8-segment-opset12-unsimplified": ("random_seg_pt", {"opset": 12, "simplify": False}, "segment"),
    "v8-pose-batch2": ("random_pose_pt", {"batch": 2, "simplify": True}, "pose"),
    "11-detect-opset12": ("yolo11n.yaml", {"opset": 12, "simplify": True}, "detect"),
    "11-segment-dynamic-unsimplified": ("yolo11n-seg.yaml", {"dynamic": True, "simplify": False}, "segment"),
    "11-pose-opset17": ("yolo11n-pose.yaml", {"opset": 17, "simplify": True}, "pose"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(STOCK_CASES))
def test_stock_truncates_to_our_export(request, random_pt, export_onnx, truncated, case):
    which, kwargs, task = STOCK_CASES[case]
    pt = _pt(request, random_pt, which)
    stock, out = truncated(pt, **kwargs)
    ours = export_onnx(pt, imgsz=RANDOM_IMGSZ)
    assert stock.is_file() and out.is_file()

    m = onnx.load(str(out))
    onnx.checker.check_model(m)
    names = output_names(task, [8, 16, 32])
    assert [o.name for o in m.graph.output] == names == [o.name for o in onnx.load(str(ours)).graph.output]
    assert m.graph.input[0].name == "images" and m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    producer = {t: n.op_type for n in m.graph.node for t in n.output}
    assert all(producer[n] == "Conv" for n in names if n != "proto")
    ref_ops = [n.op_type for n in onnx.load(str(ours)).graph.node]
    for op in ("Conv", "Softmax", "MatMul"):  # the DFL gone, the backbone's convs and attention all kept
        assert [n.op_type for n in m.graph.node].count(op) == ref_ops.count(op), op
    assert not {i for n in m.graph.node for i in n.input} & set(names)  # nothing runs after the head outputs

    meta, ref_meta = metadata(out), metadata(ours)
    assert set(meta) == META_KEYS | EXTRA_META[task] == set(ref_meta) - {"dfl_bins"}
    for key in ("producer", "layout", "layout_version", "task", "names", "strides", "reg_max", "nc", "nm",
                "kpt_shape", "imgsz", "input_dtype"):
        assert meta.get(key) == ref_meta.get(key), key
    assert meta["source"] == stock.name and meta["source_sha256"] == sha256(stock)
    assert meta["batch"] == str(kwargs.get("batch", "dynamic" if kwargs.get("dynamic") else 1))
    assert meta["dynamic_hw"] == ("true" if kwargs.get("dynamic") else "false")
    assert meta["simplified"] == ("false" if kwargs.get("dynamic") else "true")
    assert meta["opset"] == str(next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))

    batch = kwargs.get("batch", 2 if kwargs.get("dynamic") else 1)
    assert_same_outputs(out, ours, images_u8(0, (batch, 3, RANDOM_IMGSZ, RANDOM_IMGSZ)))
    if kwargs.get("dynamic"):  # any stride-multiple size, like a --dynamic-hw export of ours
        got = run(out, images_u8(1, (1, 3, 256, 320)))
        assert got[names[0]].shape == (1, 64, 32, 40)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["v8-segment-opset12-unsimplified", "v8-pose-batch2", "11-detect-opset12",
                                  "11-segment-dynamic-unsimplified", "11-pose-opset17"])
def test_predictor_on_truncated_matches_our_export(request, random_pt, export_onnx, truncated, case):
    which, kwargs, task = STOCK_CASES[case]
    pt = _pt(request, random_pt, which)
    _, out = truncated(pt, **kwargs)
    ours = export_onnx(pt, imgsz=RANDOM_IMGSZ)
    total = 0
    for image in asset_images():
        conf = adaptive_conf(pt, image, RANDOM_IMGSZ, rect=False, rank=10 if task == "pose" else 30)
        a = Predictor(ours, conf=conf, imgsz=RANDOM_IMGSZ, rect=False).predict(str(image))[0]
        b = Predictor(out, conf=conf, imgsz=RANDOM_IMGSZ, rect=False).predict(str(image))[0]
        pairs, n_a, n_b, unmatched = match(Detections(a.xyxy, a.scores, a.class_ids.astype(int)),
                                           Detections(b.xyxy, b.scores, b.class_ids.astype(int)), conf)
        assert n_a >= 1 and len(pairs) == len(a) == len(b) and unmatched == 0, image.name
        total += n_a
        for i, j in pairs:
            if a.masks is not None:
                inter = np.logical_and(a.masks[i], b.masks[j]).sum()
                assert inter / max(np.logical_or(a.masks[i], b.masks[j]).sum(), 1) >= 0.97
            if a.keypoints is not None:
                np.testing.assert_allclose(b.keypoints[j], a.keypoints[i], atol=1e-3)
    assert total >= 10


@pytest.mark.slow
def test_half_export(random_pt, export_onnx, truncated):
    """half=True (float16 weights and compute, float32 I/O on CPU): truncated to a float32 graph; the outputs
    differ from our float32 export only by the float16 rounding of the weights."""
    pt = random_pt("yolo11n-pose.yaml", nc=1, names=["person"])
    stock, out = truncated(pt, half=True)
    stock_inits = onnx.load(str(stock)).graph.initializer
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in stock_inits), "the stock file is not float16"
    m = onnx.load(str(out))
    assert all(t.data_type != onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in m.graph.output)
    x = images_u8(2, (1, 3, RANDOM_IMGSZ, RANDOM_IMGSZ))
    got, want = run(out, x), run(export_onnx(pt, imgsz=RANDOM_IMGSZ), x)
    for name, ref in want.items():
        assert np.abs(got[name] - ref).max() <= 2e-3 * np.abs(ref).max() + 1e-3, name
    assert Predictor(out).spec.task == "pose"


# ---------------------------------------------------------------------------- families: export + Predictor parity
FAMILIES = ["yolo11n.yaml", "yolo11n-seg.yaml", "yolo11n-pose.yaml", "yolo12n.yaml", "yolov9t.yaml", "yolov5nu.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("cfg", FAMILIES, ids=[c.removesuffix(".yaml") for c in FAMILIES])
def test_family_export_predictor_parity(random_pt, export_onnx, cfg):
    from ultralytics import YOLO

    pt = random_pt(cfg, nc=1, names=["person"]) if "pose" in cfg else random_pt(cfg)
    path = export_onnx(pt, imgsz=RANDOM_IMGSZ)
    task = YOLO(str(pt)).task
    assert metadata(path)["task"] == task
    total = Tally()
    for image in asset_images():
        conf = adaptive_conf(pt, image, RANDOM_IMGSZ, rect=False, rank=10 if task == "pose" else 30)
        tally = run_parity(pt, path, [image], conf=conf, iou=0.7, imgsz=RANDOM_IMGSZ, rect=False, retina=False)
        assert tally.theirs_matched == tally.theirs, f"{image.name}: {tally.failures}"
        for name in ("theirs", "theirs_matched", "ours", "ours_unmatched"):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
        total.mask_ious += tally.mask_ious
    assert_parity(total, min_detections=10)
    if task == "segment":
        assert len(total.mask_ious) >= 10


# -------------------------------------------------------------------------------------- cuts and raw per-level files
def _reshapes_of_convs(path: Path) -> list[str]:
    """xquant-style cut points: the Reshape outputs that flatten head convs (whatever the exporter named them)."""
    m = onnx.load(str(path))
    producer = {t: n for n in m.graph.node for t in n.output}
    return [n.output[0] for n in m.graph.node
            if n.op_type == "Reshape" and producer.get(n.input[0]) is not None
            and producer[n.input[0]].op_type in ("Conv", "Concat")
            and not (producer[n.input[0]].op_type == "Conv" and len(producer[n.input[0]].input) == 2)  # DFL: no bias
            and all(producer.get(i) is not None and producer[i].op_type == "Conv"
                    for i in (producer[n.input[0]].input if producer[n.input[0]].op_type == "Concat"
                              else [n.input[0]]))]


@pytest.mark.slow
def test_cut_at_reshapes_or_convs_equals_automatic(random_seg_pt, truncated, tmp_path):
    stock, auto = truncated(random_seg_pt, opset=12, simplify=False)
    cuts = _reshapes_of_convs(stock)
    assert len(cuts) == 9  # box, cls, mc per level
    m = onnx.load(str(stock))
    producer = {t: n for n in m.graph.node for t in n.output}
    convs = [producer[c].input[0] for c in cuts]
    proto = [o.name for o in m.graph.output][1]
    x = images_u8(3, (1, 3, RANDOM_IMGSZ, RANDOM_IMGSZ))
    for i, names in enumerate([cuts, convs + [proto]]):
        out = tmp_path / f"cut{i}.onnx"
        assert main([str(stock), "-o", str(out), "--cut", *names]) == 0
        assert_same_outputs(out, auto, x, atol=0, rtol=0)


@pytest.mark.slow
def test_raw_per_level_file(random_seg_onnx, random_seg_pt, export_onnx, tmp_path, capsys):
    """A patched head's export: unnamed raw outputs (box, cls per level, then mask coefficients, then prototypes),
    a float input and no metadata: recognised by shapes; names and task from flags."""
    ours = export_onnx(random_seg_pt, imgsz=RANDOM_IMGSZ, input_dtype="float32")
    m = onnx.load(str(ours))
    order = [f"{k}_p{p}" for p in (3, 4, 5) for k in ("box", "cls")] + [f"mc_p{p}" for p in (3, 4, 5)] + ["proto"]
    mapping = {name: f"onnx::Conv_{900 + i}" for i, name in enumerate(order)}
    for node in m.graph.node:
        node.output[:] = [mapping.get(o, o) for o in node.output]
    outs = {o.name: o for o in m.graph.output}
    del m.graph.output[:]
    for name in order:
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(outs[name])
        vi.name = mapping[name]
        m.graph.output.append(vi)
    del m.metadata_props[:]
    raw = tmp_path / "raw.onnx"
    onnx.save(m, str(raw))
    names = json.loads(metadata(random_seg_onnx)["names"])
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("path: x\nnames:\n" + "".join(f"  {k}: {v}\n" for k, v in names.items()))

    out = tmp_path / "out.onnx"
    assert main([str(raw), "-o", str(out), "--names", str(data_yaml)]) == 0  # task: told by the prototypes
    assert "box_p3" in capsys.readouterr().out
    meta = metadata(out)
    assert meta["task"] == "segment" and json.loads(meta["names"]) == names and meta["nm"] == "32"
    assert_same_outputs(out, random_seg_onnx, images_u8(4, (1, 3, RANDOM_IMGSZ, RANDOM_IMGSZ)), atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------------- refusals
def _tiny_graph(path: Path) -> Path:
    """A valid ONNX image model that is no YOLO head: Conv -> Relu."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 64, 64])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("cfg, message", [
    ("yolo26n-sem.yaml", "unsupported head SemanticSegment"),
    ("yolo26n-depth.yaml", "unsupported head Depth"),
    ("yolo26n-obb.yaml", "unsupported head OBB26"),
], ids=["semseg", "depth", "yolo26-obb"])
def test_refuses_unsupported_models(random_pt, stock_export, tmp_path, capsys, cfg, message):
    stock = stock_export(random_pt(cfg), imgsz=128)
    before = sha256(stock)
    out = tmp_path / "out.onnx"
    assert main([str(stock), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(stock) in err and re.search(message, err) and len(err.splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [] and sha256(stock) == before
    with pytest.raises(UnsupportedHeadError, match=message):
        truncate(stock, out)


def test_refuses_a_graph_that_is_not_a_yolo_head(tmp_path, capsys):
    tiny = _tiny_graph(tmp_path / "tiny.onnx")
    assert main([str(tiny), "-o", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err
    assert str(tiny) in err and "not a YOLO detection head" in err
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(NotAYoloHeadError, match="garbage.onnx: not a loadable ONNX model"):
        truncate(garbage, tmp_path / "out.onnx")
    assert main([str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx: no such model file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.onnx", "tiny.onnx"]


@pytest.mark.slow
def test_refuses_missing_cut_tensor_and_bad_arguments(random_detect_pt, random_detect_onnx, truncated, tmp_path,
                                                      capsys):
    stock, _ = truncated(random_detect_pt, dynamic=True, opset=17, simplify=False)
    out = tmp_path / "out.onnx"
    assert main([str(stock), "-o", str(out), "--cut", "/model.22/Reshape_output_0", "no/such/tensor"]) == 2
    err = capsys.readouterr().err
    assert "--cut names tensors that do not exist: no/such/tensor" in err and str(stock) in err
    with pytest.raises(CutError, match="cannot walk back from --cut output0"):
        truncate(stock, out, cut=["output0"])
    with pytest.raises(CutError, match="would overwrite the input"):
        truncate(stock, stock)
    with pytest.raises(CutError, match="disagrees with the file's metadata task"):
        truncate(stock, out, task="pose")
    with pytest.raises(CutError, match="3 class names but the class branch has 80 channels"):
        truncate(stock, out, names=["a", "b", "c"])
    assert main([str(random_detect_onnx), "-o", str(out)]) == 2  # our own layout: nothing to truncate
    assert "already in the truncated-head layout" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_input_untouched_output_atomic(random_detect_pt, stock_export, tmp_path, monkeypatch):
    stock = stock_export(random_detect_pt, dynamic=True, opset=17, simplify=False)
    before, mtime = sha256(stock), stock.stat().st_mtime_ns
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous file")

    def broken_save(model, f, *a, **k):
        Path(f).write_bytes(b"half-written")
        raise OSError("simulated disk full")

    monkeypatch.setattr(onnx, "save", broken_save)
    with pytest.raises(OSError, match="simulated disk full"):
        truncate(stock, out)
    assert out.read_bytes() == b"previous file" and leftovers(tmp_path) == []
    monkeypatch.undo()
    assert main([str(stock), "-o", str(out), "--input-dtype", "float32", "--no-simplify"]) == 0
    assert sha256(stock) == before and stock.stat().st_mtime_ns == mtime and leftovers(tmp_path) == []
    meta = metadata(out)
    assert meta["input_dtype"] == "float32" and meta["simplified"] == "false"
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


# ------------------------------------------------------------------------------------------------- quantization
@pytest.mark.slow
def test_truncated_file_quantizes(random_detect_pt, truncated, tmp_path):
    from tools import quantize

    calib = tmp_path / "calib"
    calib.mkdir()
    for image in asset_images():
        shutil.copy(image, calib / image.name)
    _, out = truncated(random_detect_pt, dynamic=True, opset=17, simplify=False)
    q = tmp_path / "w8a8.onnx"
    assert quantize.main([str(out), "--calib", str(calib), "--num", "2", "-o", str(q)]) == 0
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    results = Predictor(q, conf=0.001).predict(str(asset_images()[0]))
    assert len(results) == 1 and Predictor(q).spec.layout == "truncated"


# --------------------------------------------------------------------------------- shared real checkpoints
def _shared_images(shared_dir: Path, folder: str, n: int) -> list[Path]:
    d = shared_dir / "coco" / folder
    if not d.is_dir():
        pytest.skip(f"no COCO images at {d} (set YOLO_SHARED_DIR)")
    return sorted(d.glob("*.jpg"))[:n]


@pytest.mark.shared
@pytest.mark.slow
def test_shared_segment_truncated_matches_ultralytics(shared_dir, shared_file, stock_export, tmp_path):
    pt = shared_file("models/yolov8n-seg.pt")
    out = truncate(stock_export(pt, imgsz=640), tmp_path / "seg.onnx")
    images = asset_images() + _shared_images(shared_dir, "val2017", 60)
    tally = run_parity(pt, out, images, conf=0.25, iou=0.7, imgsz=640, rect=False, retina=False)
    assert_parity(tally, min_detections=200)
    assert len(tally.mask_ious) >= 200


@pytest.mark.shared
@pytest.mark.slow
def test_shared_pose_truncated_matches_ultralytics(shared_dir, shared_file, stock_export, tmp_path):
    from ultralytics import YOLO

    pt = shared_file("models/yolo11n-pose.pt")
    out = truncate(stock_export(pt, imgsz=640), tmp_path / "pose.onnx")
    images = asset_images() + _shared_images(shared_dir, "val2017-pose", 40)
    tally = run_parity(pt, out, images, conf=0.25, iou=0.7, imgsz=640, rect=False, retina=False)
    assert_parity(tally, min_detections=40)
    model, predictor = YOLO(str(pt)), Predictor(out, conf=0.25, iou=0.7, imgsz=640, rect=False)
    checked = 0
    for image in images[:12]:
        theirs = model.predict(str(image), conf=0.25, iou=0.7, imgsz=640, rect=False, verbose=False, device="cpu")[0]
        ours = predictor.predict(str(image))[0]
        pairs, *_ = match(Detections(theirs.boxes.xyxy.numpy(), theirs.boxes.conf.numpy(),
                                     theirs.boxes.cls.numpy().astype(int)),
                          Detections(ours.xyxy, ours.scores, ours.class_ids.astype(int)), 0.25)
        kpts = theirs.keypoints.data.numpy()
        for i, j in pairs:
            np.testing.assert_allclose(ours.keypoints[j, :, :2], kpts[i, :, :2], atol=0.05)
            np.testing.assert_allclose(ours.keypoints[j, :, 2], kpts[i, :, 2], atol=1e-3)
            checked += 1
    assert checked >= 10
