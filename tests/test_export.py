"""Tests of tools/export.py: truncated-head ONNX export of YOLOv8 detect / segment / pose checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tools.export import (  # noqa: E402
    CheckpointError,
    CheckpointNotFoundError,
    ExportArgumentError,
    ExportError,
    UnsupportedModelError,
    export_truncated,
    main,
    output_names,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
from conftest import OUTPUT_ATOL, OUTPUT_RTOL, assert_outputs_close, needs_export  # noqa: E402

RANDOM_IMGSZ = 320  # the size conftest exports the random models at
RANDOM_NC7_NAMES = ["person", "bicycle", "car", "traffic light", "dog", "cat", "stop sign"]  # as in conftest
# ONNX vs torch head outputs: onnxruntime and torch sum each convolution in their own order, and
# torch's order changes with its thread count (Ultralytics' predict sets it to cores - 1, so it depends
# on which tests ran before). On the shared checkpoints that reassociation reaches ~7e-6 relative on
# logits near -18 (1.2e-4 absolute at 1 thread): the bound is absolute plus relative, like allclose.
ATOL, RTOL = OUTPUT_ATOL, OUTPUT_RTOL
BASE_META_KEYS = {
    "producer", "layout", "layout_version", "task", "names", "strides", "reg_max", "nc", "imgsz", "batch",
    "dynamic_hw", "input_dtype", "source", "source_sha256", "ultralytics_version", "opset", "simplified",
}  # fmt: skip
EXTRA_META_KEYS = {"detect": set(), "segment": {"nm"}, "pose": {"kpt_shape"}}

# case -> (pt fixture, onnx fixture, task, nc, channels of the third per-level output or None)
CASES = {
    "detect": ("random_detect_pt", "random_detect_onnx", "detect", 80, None),
    "segment": ("random_seg_pt", "random_seg_onnx", "segment", 80, 32),
    "pose": ("random_pose_pt", "random_pose_onnx", "pose", 1, 17 * 3),
    "detect_nc7": ("random_detect_nc7_pt", "random_detect_nc7_onnx", "detect", 7, None),
}


# --------------------------------------------------------------------------------------------------------- helpers
def random_images(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 RGB batch (B, 3, H, W), as our exports take it."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def normalised(x: np.ndarray) -> np.ndarray:
    """Ultralytics' preprocessing of a uint8 batch: float32 / 255."""
    return x.astype(np.float32) / np.float32(255)


def run_onnx(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs by name for a uint8 batch ``x``, normalised first when the model takes float input."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feed = x if sess.get_inputs()[0].type == "tensor(uint8)" else normalised(x)
    return dict(zip(names, sess.run(None, {"images": feed})))


def torch_head_outputs(pt: Path, x: np.ndarray, fuse: bool = True) -> dict[str, np.ndarray]:
    """The reloaded torch model's own per-branch head outputs for a uint8 batch ``x`` (normalised as
    Ultralytics does), captured with forward hooks on the last layers."""
    import torch
    from ultralytics import YOLO

    model = YOLO(str(pt)).model
    if fuse:
        model = model.fuse(verbose=False)
    model = model.float().eval()
    head = model.model[-1]
    kind = type(head).__name__
    captured: dict[str, np.ndarray] = {}

    def hook(name):
        return lambda module, inputs, output: captured.__setitem__(name, output.detach().cpu().numpy().copy())

    hooks = []
    for i, s in enumerate(head.stride.tolist()):
        lvl = f"p{int(math.log2(s))}"
        hooks.append(head.cv2[i][-1].register_forward_hook(hook(f"box_{lvl}")))
        hooks.append(head.cv3[i][-1].register_forward_hook(hook(f"cls_{lvl}")))
        if kind in ("Segment", "Pose"):
            hooks.append(head.cv4[i][-1].register_forward_hook(hook(f"{'mc' if kind == 'Segment' else 'kpt'}_{lvl}")))
    if kind == "Segment":
        hooks.append(head.proto.register_forward_hook(hook("proto")))
    try:
        with torch.no_grad():
            model(torch.from_numpy(normalised(x)))
    finally:
        for h in hooks:
            h.remove()
    return captured


def assert_parity(onnx_path: Path, pt: Path, x: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> float:
    """Every head output within ``atol + rtol * |torch|`` of torch's; returns the largest absolute difference."""
    got = run_onnx(onnx_path, x)
    want = torch_head_outputs(pt, x)
    assert list(got) == [n for n in got if n in want] and set(got) == set(want)
    return assert_outputs_close(got, want, atol, rtol)


def metadata(model_onnx) -> dict[str, str]:
    return {p.key: p.value for p in model_onnx.metadata_props}


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def expected_shapes(task, nc, extra, h, w, batch="batch") -> dict[str, list]:
    shapes = {}
    for s in (8, 16, 32):
        lvl = f"p{int(math.log2(s))}"
        shapes[f"box_{lvl}"] = [batch, 64, h // s, w // s]
        shapes[f"cls_{lvl}"] = [batch, nc, h // s, w // s]
        if task != "detect":
            shapes[f"{'mc' if task == 'segment' else 'kpt'}_{lvl}"] = [batch, extra, h // s, w // s]
    if task == "segment":
        shapes["proto"] = [batch, 32, h // 4, w // 4]
    return shapes


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# -------------------------------------------------------------------------------------------------- pure helpers
def test_output_names():
    assert output_names("detect", [8, 16, 32]) == ["box_p3", "cls_p3", "box_p4", "cls_p4", "box_p5", "cls_p5"]
    assert output_names("pose", [8, 16, 32])[:3] == ["box_p3", "cls_p3", "kpt_p3"]
    seg = output_names("segment", [8, 16, 32, 64])
    assert seg[-4:] == ["box_p6", "cls_p6", "mc_p6", "proto"] and len(seg) == 13


def test_import_is_light():
    code = "import sys, tools.export; assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


# ------------------------------------------------------------------------------------------ random-init checkpoints
@needs_export
@pytest.mark.parametrize("case", list(CASES))
def test_random_checkpoint_reloads_and_predicts(request, case):
    from ultralytics import YOLO

    pt = request.getfixturevalue(CASES[case][0])  # the fixture already checked that the weights round-trip
    model = YOLO(str(pt))
    assert model.task == CASES[case][2] and len(model.names) == CASES[case][3]
    results = model.predict(np.zeros((256, 320, 3), np.uint8), imgsz=RANDOM_IMGSZ, verbose=False)
    assert len(results) == 1 and results[0].orig_shape == (256, 320)


# ---------------------------------------------------------------------------------------------- graph + metadata
@pytest.mark.parametrize("case", list(CASES))
def test_graph_structure(request, case):
    _, onnx_fixture, task, nc, extra = CASES[case]
    m = onnx.load(str(request.getfixturevalue(onnx_fixture)))
    onnx.checker.check_model(m)

    assert [i.name for i in m.graph.input] == ["images"]
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims(m.graph.input[0]) == ["batch", 3, RANDOM_IMGSZ, RANDOM_IMGSZ]
    want = expected_shapes(task, nc, extra, RANDOM_IMGSZ, RANDOM_IMGSZ)
    assert [o.name for o in m.graph.output] == list(want) == output_names(task, [8, 16, 32])
    assert {o.name: dims(o) for o in m.graph.output} == want
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in m.graph.output)

    producer = {t: n for n in m.graph.node for t in n.output}
    consumers = {t for n in m.graph.node for t in n.input}
    for name in want:
        # nothing (Softmax, Reshape, Concat, Sigmoid, ...) runs downstream of the head outputs
        assert name not in consumers, f"{name} feeds other nodes"
        node = producer[name]
        if name == "proto":  # Proto ends with Conv(+BN folded)+SiLU, exported as Mul(conv, Sigmoid(conv))
            assert node.op_type == "Mul"
            conv_out = [t for t in node.input if producer[t].op_type == "Conv"]
            sig = [producer[t] for t in node.input if producer[t].op_type == "Sigmoid"]
            assert len(conv_out) == 1 and len(sig) == 1 and list(sig[0].input) == conv_out
        else:
            assert node.op_type == "Conv", f"{name} is produced by {node.op_type}"
            assert [list(a.ints) for a in node.attribute if a.name == "kernel_shape"] in ([], [[1, 1]])
    ops = {n.op_type for n in m.graph.node}
    assert not ops & {"Softmax", "Reshape", "Transpose", "TopK", "NonMaxSuppression", "Flatten", "ReduceMax"}


@needs_export
@pytest.mark.parametrize("case", list(CASES))
def test_metadata(request, case):
    import ultralytics
    from ultralytics import YOLO

    pt_fixture, onnx_fixture, task, nc, extra = CASES[case]
    pt, path = request.getfixturevalue(pt_fixture), request.getfixturevalue(onnx_fixture)
    meta = metadata(onnx.load(str(path)))
    assert set(meta) == BASE_META_KEYS | EXTRA_META_KEYS[task]
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["producer"] == "yolo-edge-runtime"
    assert meta["layout"] == "truncated-head" and meta["layout_version"] == "1"
    assert meta["task"] == task
    names = json.loads(meta["names"])
    assert names == {str(k): v for k, v in YOLO(str(pt)).names.items()} and len(names) == nc
    assert list(names) == [str(i) for i in range(nc)]
    if case == "detect_nc7":
        assert list(names.values()) == RANDOM_NC7_NAMES
    assert json.loads(meta["strides"]) == [8, 16, 32]
    assert meta["reg_max"] == "16" and meta["nc"] == str(nc)
    if task == "segment":
        assert meta["nm"] == "32"
    if task == "pose":
        assert json.loads(meta["kpt_shape"]) == [17, 3]
    assert json.loads(meta["imgsz"]) == [RANDOM_IMGSZ, RANDOM_IMGSZ]
    assert meta["batch"] == "dynamic" and meta["dynamic_hw"] == "false"
    assert meta["source"] == Path(pt).name
    assert meta["source_sha256"] == sha256(pt)
    assert meta["ultralytics_version"] == ultralytics.__version__
    assert meta["opset"] == "17" and meta["input_dtype"] == "uint8"
    assert meta["simplified"] in ("true", "false")
    assert ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map == meta  # what the runtime reads


# --------------------------------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_torch(request, case):
    pt_fixture, onnx_fixture, *_ = CASES[case]
    x = random_images(0, (2, 3, RANDOM_IMGSZ, RANDOM_IMGSZ))
    assert_parity(request.getfixturevalue(onnx_fixture), request.getfixturevalue(pt_fixture), x)


def test_dynamic_batch(random_detect_onnx):
    x3 = random_images(1, (3, 3, RANDOM_IMGSZ, RANDOM_IMGSZ))
    out3 = run_onnx(random_detect_onnx, x3)
    out1 = run_onnx(random_detect_onnx, x3[1:2])
    for name, want in expected_shapes("detect", 80, None, RANDOM_IMGSZ, RANDOM_IMGSZ, batch=3).items():
        assert list(out3[name].shape) == want
        assert out1[name].shape[0] == 1
        np.testing.assert_allclose(out1[name][0], out3[name][1], atol=1e-5, rtol=0)


def test_dynamic_hw(export_onnx, random_seg_pt):
    path = export_onnx(random_seg_pt, imgsz=RANDOM_IMGSZ, dynamic_hw=True)
    m = onnx.load(str(path))
    assert dims(m.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(m.graph.output[0]) == ["batch", 64, "h_p3", "w_p3"]
    assert dims(m.graph.output[-1]) == ["batch", 32, "h_proto", "w_proto"]
    assert metadata(m)["dynamic_hw"] == "true" and json.loads(metadata(m)["imgsz"]) == [RANDOM_IMGSZ, RANDOM_IMGSZ]

    x = random_images(2, (1, 3, 256, 320))  # H=256, W=320
    got = run_onnx(path, x)
    for name, want in expected_shapes("segment", 80, 32, 256, 320, batch=1).items():
        assert list(got[name].shape) == want
    assert_parity(path, random_seg_pt, x)


def test_no_simplify_matches_simplified(export_onnx, random_pose_pt, random_pose_onnx):
    path = export_onnx(random_pose_pt, imgsz=RANDOM_IMGSZ, simplify=False)
    m = onnx.load(str(path))
    assert metadata(m)["simplified"] == "false"
    assert [o.name for o in m.graph.output] == output_names("pose", [8, 16, 32])
    x = random_images(3, (1, 3, RANDOM_IMGSZ, RANDOM_IMGSZ))
    a, b = run_onnx(path, x), run_onnx(random_pose_onnx, x)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, rtol=0)


def test_input_normalised_in_graph(export_onnx, random_detect_pt, random_detect_onnx):
    """Default uint8 input: the graph starts with Cast + Div by 255 and gives, bit for bit, what a float32 export
    gives for the same image divided by 255 on the host."""
    m = onnx.load(str(random_detect_onnx))
    first = m.graph.node[:2]
    assert [n.op_type for n in first] == ["Cast", "Div"] and list(first[0].input) == ["images"]
    path = export_onnx(random_detect_pt, imgsz=RANDOM_IMGSZ, input_dtype="float32")
    f = onnx.load(str(path))
    assert f.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert metadata(f)["input_dtype"] == "float32" and "Cast" not in {n.op_type for n in f.graph.node}
    x = random_images(6, (1, 3, RANDOM_IMGSZ, RANDOM_IMGSZ))
    a, b = run_onnx(path, x), run_onnx(random_detect_onnx, x)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ------------------------------------------------------------------------------------------------------------- CLI
def test_cli_fixed_batch_rect_default_output(tmp_path, random_detect_pt, capsys):
    pt = tmp_path / "my model.pt"  # default output goes next to the .pt
    pt.write_bytes(Path(random_detect_pt).read_bytes())
    assert main([str(pt), "--batch", "2", "--imgsz", "256", "320", "--opset", "17"]) == 0
    out = tmp_path / "my model.onnx"
    assert out.is_file() and leftovers(tmp_path) == []
    summary = capsys.readouterr().out.strip()
    assert str(out) in summary and "MB" in summary and "box_p3[2,64,32,40]" in summary

    m = onnx.load(str(out))
    assert dims(m.graph.input[0]) == [2, 3, 256, 320]
    assert {o.name: dims(o) for o in m.graph.output} == expected_shapes("detect", 80, None, 256, 320, batch=2)
    meta = metadata(m)
    assert meta["batch"] == "2" and json.loads(meta["imgsz"]) == [256, 320] and meta["source"] == "my model.pt"

    x = random_images(4, (2, 3, 256, 320))
    assert_parity(out, pt, x)
    with pytest.raises(Exception):  # the batch dimension is fixed
        run_onnx(out, np.concatenate([x, x[:1]]))


def test_cli_missing_file(tmp_path, capsys):
    missing = tmp_path / "nothing-here.pt"
    out = tmp_path / "out.onnx"
    assert main([str(missing), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointNotFoundError, match="nothing-here.pt"):
        export_truncated(missing)


@pytest.mark.parametrize(
    "cfg, head",
    [
        ("yolo26n-obb.yaml", "OBB26"),  # end-to-end oriented boxes
        ("yolo26n-sem.yaml", "SemanticSegment"),
        ("yolo26n-depth.yaml", "Depth"),
        ("yoloe-26n.yaml", "YOLOEDetect"),  # open-vocabulary: class scores from an unfused text head
    ],
)
def test_unsupported_head(tmp_path, random_pt, capsys, cfg, head):
    pt = random_pt(cfg)
    out = tmp_path / "out.onnx"
    assert main([str(pt), "-o", str(out), "--imgsz", "256"]) == 2
    err = capsys.readouterr().err
    assert str(pt) in err and f"unsupported head {head}" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(UnsupportedModelError, match=Path(pt).name):
        export_truncated(pt, out)


@needs_export
def test_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "yolov8n.pt"  # an official asset name: must not trigger a re-download either
    bad.write_bytes(b"this is not a zip archive or a pickle")
    out = tmp_path / "out.onnx"
    assert main([str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a loadable" in err
    assert not out.exists() and leftovers(tmp_path) == []
    not_pt = tmp_path / "model.onnx.bin"
    not_pt.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="model.onnx.bin"):
        export_truncated(not_pt, out)


@pytest.mark.parametrize("imgsz", [330, (320, 250), 0, (320, 320, 3), -32, "big", 320.5])
def test_bad_imgsz(tmp_path, random_detect_pt, imgsz):
    out = tmp_path / "out.onnx"
    with pytest.raises(ExportArgumentError, match=Path(random_detect_pt).name):
        export_truncated(random_detect_pt, out, imgsz=imgsz)
    assert list(tmp_path.iterdir()) == []


def test_bad_input_dtype(tmp_path, random_detect_pt):
    with pytest.raises(ExportArgumentError, match="input_dtype must be one of uint8, float32"):
        export_truncated(random_detect_pt, tmp_path / "out.onnx", input_dtype="float16")
    assert list(tmp_path.iterdir()) == []


def test_bad_args_cli(tmp_path, random_detect_pt, capsys):
    out = tmp_path / "out.onnx"
    assert main([str(random_detect_pt), "-o", str(out), "--imgsz", "330"]) == 2
    assert "multiples of" in capsys.readouterr().err
    assert main([str(random_detect_pt), "-o", str(out), "--imgsz", "320", "320", "3"]) == 2
    assert main([str(random_detect_pt), "-o", str(out), "--batch", "0"]) == 2  # argparse usage error
    assert main([str(random_detect_pt), "-o", str(out), "--opset", "9"]) == 2
    assert not out.exists()


def test_failure_keeps_previous_file(tmp_path, random_detect_pt, monkeypatch):
    import torch

    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")

    def broken_export(model, args, f, *a, **k):
        Path(f).write_bytes(b"half-written")
        raise RuntimeError("simulated exporter crash")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(ExportError, match="simulated exporter crash"):
        export_truncated(random_detect_pt, out, imgsz=RANDOM_IMGSZ)
    assert out.read_bytes() == b"previous export"
    assert leftovers(tmp_path) == []


def test_head_forward_restored(random_detect_pt):
    """The export swaps the head's forward on the instance only and puts it back."""
    from ultralytics import YOLO
    from ultralytics.nn.modules.head import Detect

    from tools.export import truncated_head

    head = YOLO(str(random_detect_pt)).model.model[-1]
    with truncated_head(head, "detect"):
        assert "forward" in head.__dict__
    assert "forward" not in head.__dict__ and type(head).forward is Detect.forward


# ---------------------------------------------------------------------------------------- real COCO checkpoints
@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("which", ["detect", "segment"])
def test_shared_checkpoint_parity(request, which):
    pt = request.getfixturevalue("shared_detect_pt" if which == "detect" else "shared_seg_pt")
    path = request.getfixturevalue("shared_detect_onnx" if which == "detect" else "shared_seg_onnx")
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    meta = metadata(m)
    assert meta["task"] == which and meta["nc"] == "80" and meta["source_sha256"] == sha256(pt)
    assert json.loads(meta["names"])["0"] == "person" and json.loads(meta["imgsz"]) == [640, 640]
    assert {o.name: dims(o) for o in m.graph.output} == expected_shapes(which, 80, 32, 640, 640)
    from ultralytics import YOLO

    bins = YOLO(str(pt)).model.model[-1].dfl.conv.weight.flatten().tolist()
    if bins != list(range(16)):  # these checkpoints' DFL weights went through int8: the decode needs them
        np.testing.assert_array_equal(json.loads(meta["dfl_bins"]), np.float32(bins))
    x = random_images(5, (2, 3, 640, 640))
    assert_parity(path, pt, x)
