"""tools/quantize.py (+ recipe.py, qdq.py, quant_report.py, sensitivity.py): W8A8 QDQ of truncated-head exports.

Small and fast: random-init models exported at imgsz 320 (tests/conftest.py), a handful of calibration images
written into a temp folder (Ultralytics' bundled bus.jpg / zidane.jpg plus synthetic ones).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")
cv2 = pytest.importorskip("cv2")

from tools import quantize as qz  # noqa: E402
from tools.quant_model import branch_nodes, branch_outputs  # noqa: E402
from runtime.io.files import file_sha256  # noqa: E402

N_CALIB = 4  # of the 6 images written: 2 stay held back for the report
AUTO_EXCLUDE = 2  # the report fixture also runs the sensitivity analysis and keeps this many groups float


# --------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("calib")
    try:
        from ultralytics.utils import ASSETS

        for name in ("bus.jpg", "zidane.jpg"):
            if (Path(ASSETS) / name).is_file():
                shutil.copy(Path(ASSETS) / name, d / name)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    shapes = [(480, 640), (640, 480), (300, 500), (360, 360), (200, 640), (512, 384)]
    for i, (h, w) in enumerate(shapes[:6 - len(list(d.iterdir()))]):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (30 * i, 200, 90), -1)
        cv2.imwrite(str(d / f"synthetic_{i}.jpg"), img)
    assert len(list(d.iterdir())) == 6
    return d


@pytest.fixture(scope="module")
def quantized_detect(random_detect_onnx, calib_dir, tmp_path_factory):
    """The random detect model quantized by the CLI with the default recipe, with a report."""
    out_dir = tmp_path_factory.mktemp("q_detect")
    out = out_dir / "detect-w8a8.onnx"
    rep = out_dir / "report"
    rc = qz.main([str(random_detect_onnx), "--calib", str(calib_dir), "--num", str(N_CALIB), "--seed", "0",
                  "-o", str(out), "--report", str(rep), "--report-images", "2", "--sensitivity-images", "1",
                  "--auto-exclude", str(AUTO_EXCLUDE)])
    assert rc == 0
    return out, rep


def _inits(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _quant_params(path: Path) -> dict[str, np.ndarray]:
    """Every scale / zero-point initializer of the Q/DQ nodes."""
    model = onnx.load(str(path))
    inits = _inits(model)
    params = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for name in n.input[1:]:
                params[name] = inits[name]
    return params


def _conv_weight_sources(model) -> dict[str, str]:
    """{Conv node: 'int8' if its weight comes from DequantizeLinear of an int8 initializer, 'float' if a float one}."""
    inits = _inits(model)
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    kinds = {}
    for n in model.graph.node:
        if n.op_type not in ("Conv", "ConvTranspose"):
            continue
        w = n.input[1]
        if w in dq and dq[w].input[0] in inits and inits[dq[w].input[0]].dtype == np.int8:
            kinds[n.name] = "int8"
        elif w in inits and inits[w].dtype == np.float32:
            kinds[n.name] = "float"
        else:
            kinds[n.name] = "other"
    return kinds


# ------------------------------------------------------------------------------------------------------ the model
def test_quantized_model_runs_in_predictor(quantized_detect, random_detect_onnx, calib_dir):
    from runtime import Predictor

    out, _ = quantized_detect
    pred = Predictor(out, conf=0.001)  # no flag: the QDQ model loads like the float one
    results = pred.predict(sorted(calib_dir.iterdir())[:2])
    assert len(results) == 2
    assert pred.spec.task == "detect" and pred.spec.layout == "truncated"
    float_pred = Predictor(random_detect_onnx)
    assert pred.names == float_pred.names and pred.spec.strides == float_pred.spec.strides


def _quantized_sources(model, tensor: str) -> list:
    """The nodes a conv input is computed from, traced back through data-movement ops (split / slice / concat /
    max-pool / resize): in the openvino layout every one is a DequantizeLinear."""
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer.get(tensor)
    if node is None or node.op_type not in ("Split", "Slice", "Concat", "MaxPool", "Resize"):
        return [node]
    data = list(node.input) if node.op_type == "Concat" else [node.input[0]]
    return [s for t in data if t for s in _quantized_sources(model, t)]


def test_running_a_file_on_the_engine_it_was_not_made_for_warns(quantized_detect, caplog):
    import importlib.util

    from runtime import Predictor

    out, _ = quantized_detect
    with caplog.at_level("WARNING", logger="runtime.predictor"):
        Predictor(out, engine="onnxruntime")
    assert any("quantized for openvino" in r.getMessage() for r in caplog.records)
    if importlib.util.find_spec("openvino") is not None:
        caplog.clear()
        with caplog.at_level("WARNING", logger="runtime.predictor"):
            Predictor(out, engine="openvino")
        assert not any("quantized for" in r.getMessage() for r in caplog.records)


def test_quantized_model_runs_on_both_engines(quantized_detect, calib_dir):
    """The openvino-layout file on OpenVINO (int8 convs) and on onnxruntime (float convs): the engines round
    differently, so outputs agree closely, not exactly."""
    pytest.importorskip("openvino")
    from runtime.engines import open_engine
    from runtime.records.letterbox import letterbox_into, plan_letterbox

    out, _ = quantized_detect
    ort_engine, ov_engine = open_engine(out, "onnxruntime"), open_engine(out, "openvino", precision="f32")
    hw = tuple(d for d in ort_engine.inputs[0].shape[2:])
    hw = hw if all(isinstance(d, int) for d in hw) else (320, 320)
    image = cv2.imread(str(sorted(calib_dir.iterdir())[0]))
    batch = np.empty((1, 3, *hw), np.uint8)
    letterbox_into(image, plan_letterbox(image.shape[:2], hw), batch[0])
    a, b = ort_engine.run(batch), ov_engine.run(batch)
    assert set(a) == set(b)
    for name in a:
        rel = np.linalg.norm(a[name] - b[name]) / max(np.linalg.norm(a[name]), 1e-12)
        assert rel < 0.05, (name, rel)  # about 0.01 seen; quantization error itself is several times that


def test_quantized_model_is_int8_with_metadata(quantized_detect, random_detect_onnx):
    out, _ = quantized_detect
    model = onnx.load(str(out))
    kinds = _conv_weight_sources(model)
    meta = {p.key: p.value for p in model.metadata_props}
    q = json.loads(meta["quantization"])
    excluded = set(q["excluded_nodes"])
    groups = q["auto_exclude"]["groups"]
    assert len(groups) == AUTO_EXCLUDE
    # detect has no keypoint / mask-coefficient branch: only the sensitivity's groups stay float
    assert {n for n, kind in kinds.items() if kind == "float"} == {n for n in kinds if n in excluded}
    assert 0 < len(excluded & set(kinds)) <= AUTO_EXCLUDE
    assert sum(kind == "int8" for kind in kinds.values()) == len(kinds) - len(excluded & set(kinds))
    # openvino layout: each int8 conv reads its activation from quantizers only (through splits, concats, pools and
    # resizes), with one shared scale across a concat, and a per-output-channel int8 weight
    inits = _inits(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    concat_seen = 0
    for node in model.graph.node:
        if kinds.get(node.name) != "int8":
            continue
        sources = _quantized_sources(model, node.input[0])
        assert all(s is not None and s.op_type == "DequantizeLinear" for s in sources), node.name
        assert all(producer[s.input[0]].op_type == "QuantizeLinear" for s in sources)
        assert len({(float(inits[s.input[1]]), int(inits[s.input[2]])) for s in sources}) == 1  # one grid
        concat_seen += len(sources) > 1
        weight = producer[node.input[1]]
        assert inits[weight.input[1]].shape == (inits[weight.input[0]].shape[0],)  # one scale per output channel
        assert next(a.i for a in weight.attribute if a.name == "axis") == 0
    assert concat_seen >= 4  # the C2f / SPPF / neck concats run on one int8 grid
    ops = [n.op_type for n in model.graph.node]
    quantized = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantized) == len(set(quantized))  # one quantizer per tensor, shared by all its readers
    assert ops.count("DequantizeLinear") == len(quantized) + sum(kind == "int8" for kind in kinds.values())
    assert not any(producer.get(n.input[0]) is not None and producer[n.input[0]].op_type in ("Split", "Concat",
                   "Slice", "MaxPool") for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert not any(n.op_type == "Sigmoid" and n.input[0] in producer and producer[n.input[0]].op_type ==
                   "DequantizeLinear" for n in model.graph.node)  # SiLU inputs are never rounded
    float_weights = {n.input[1] for n in model.graph.node if n.name in excluded and n.op_type == "Conv"}
    big_float = [k for k, v in inits.items() if v.dtype == np.float32 and v.size > 64
                 and k not in float_weights and "bias" not in k and not k.endswith("_scale")]
    assert big_float == []  # no float weights left but the excluded convs' (scales and biases are small vectors)
    kept_float = sum(inits[w].nbytes for w in float_weights if w in inits)
    assert out.stat().st_size - kept_float <= 0.30 * random_detect_onnx.stat().st_size
    float_meta = {p.key: p.value for p in onnx.load(str(random_detect_onnx)).metadata_props}
    assert all(meta[k] == v for k, v in float_meta.items())  # float metadata kept
    assert q["format"] == "QDQ" and q["weight_type"] == "QInt8" and q["target_engine"] == "openvino"
    assert q["activation_type"] == ("QUInt8" if qz.DEFAULT_RECIPE.activation_type == "u8" else "QInt8")
    assert q["calibration_images"] == N_CALIB and q["calibration_seed"] == 0
    assert q["float_source_sha256"] == file_sha256(random_detect_onnx)
    for key in ("method", "per_channel", "activation_symmetric", "weight_symmetric", "bias_correction",
                "float_branches", "float_tails", "excluded_nodes", "recipe"):
        assert key in q


def test_excluded_nodes_stay_float(random_detect_onnx, calib_dir, tmp_path):
    groups = qz.conv_groups(random_detect_onnx)
    names = list(groups)
    first, last = names[0], names[-1]
    exclude = groups[first] + [last]  # first Conv with its SiLU, and a bare head conv
    out = tmp_path / "ex.onnx"
    rc = qz.main([str(random_detect_onnx), "--calib", str(calib_dir), "--num", "2", "-o", str(out),
                  "--no-float-head", "--no-float-branches", "--exclude", *exclude])
    assert rc == 0
    model = onnx.load(str(out))
    kinds = _conv_weight_sources(model)
    assert kinds[first] == "float" and kinds[last] == "float"
    assert sum(k == "int8" for k in kinds.values()) == len(kinds) - 2
    # the excluded convs read float activations, not a DequantizeLinear
    producers = {o: n for n in model.graph.node for o in n.output}
    nodes = {n.name: n for n in model.graph.node}
    for name in (first, last):
        assert producers[nodes[name].input[0]].op_type != "DequantizeLinear"
    assert json.loads({p.key: p.value for p in model.metadata_props}["quantization"])["excluded_nodes"] == exclude


def test_float_head_keeps_outputs_unrounded(random_detect_onnx, calib_dir, tmp_path):
    out = tmp_path / "fh.onnx"
    assert qz.main([str(random_detect_onnx), "--calib", str(calib_dir), "--num", "2", "-o", str(out),
                    "--float-head", "--no-float-branches"]) == 0
    model = onnx.load(str(out))
    producers = {o: n for n in model.graph.node for o in n.output}
    for o in model.graph.output:  # every output comes straight from a float Conv, not from DequantizeLinear
        assert producers[o.name].op_type == "Conv"
    q = json.loads({p.key: p.value for p in model.metadata_props}["quantization"])
    assert q["float_head"] is True and sorted(q["excluded_nodes"]) == sorted(qz.head_nodes(random_detect_onnx))


def test_onnxruntime_layout_runs_the_body_as_int8_kernels(random_detect_onnx, calib_dir, tmp_path):
    """The onnxruntime preset: uint8 input read as int8 data, one scale per concat group, float head convs with
    float activations, and every other conv fused by onnxruntime into QLinearConv."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from tools.ort_qdq import scale_groups

    out = tmp_path / "ort.onnx"
    assert qz.main([str(random_detect_onnx), "--calib", str(calib_dir), "--num", "2", "--target", "onnxruntime",
                    "-o", str(out)]) == 0
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    # the input prologue (Cast, Div by 255, QuantizeLinear) is gone: the uint8 input is dequantized exactly
    readers = consumers[model.graph.input[0].name]
    assert readers and all(n.op_type == "DequantizeLinear" for n in readers)
    for n in readers:
        assert inits[n.input[1]] == np.float32(1 / 255) and inits[n.input[2]] == 0
    # every concat group shares one scale: a Concat's inputs are dequantized with its output's scale
    concats = [n for n in model.graph.node if n.op_type == "Concat"]
    assert concats
    for n in concats:
        q_out = consumers[n.output[0]][0]
        assert q_out.op_type == "QuantizeLinear"
        for name in n.input:
            dq = producers[name]
            assert dq.op_type == "DequantizeLinear", n.name
            assert inits[dq.input[1]] == inits[q_out.input[1]] and inits[dq.input[2]] == inits[q_out.input[2]]
    assert scale_groups(model)
    # the float convs (the head's output convs) read a dequantized tensor and nothing after them is quantized
    quantization = json.loads({p.key: p.value for p in model.metadata_props}["quantization"])
    float_convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name in quantization["excluded_nodes"]]
    assert sorted(n.name for n in float_convs) == sorted(qz.head_nodes(random_detect_onnx))
    for conv in float_convs:
        assert all(c.op_type != "QuantizeLinear" for c in consumers.get(conv.output[0], []))
    # onnxruntime fuses every other conv into QLinearConv
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    n_convs = sum(n.op_type == "Conv" for n in onnx.load(str(random_detect_onnx)).graph.node)
    assert fused.count("QLinearConv") == n_convs - len(float_convs)
    assert fused.count("Conv") == len(float_convs)


# ---------------------------------------------------------------------------------------------------- calibration
def test_calibration_reader_is_reiterable_and_matches_letterbox(random_detect_onnx, calib_dir):
    from runtime.records.letterbox import letterbox_into, plan_letterbox

    info = qz.inspect_float_model(random_detect_onnx)
    chosen, held = qz.select_images(calib_dir, 3, seed=1)
    assert len(chosen) == 3 and len(held) == 3 and not set(chosen) & set(held)
    assert info.input_dtype == "uint8"  # our exports normalise inside the graph
    reader = qz.CalibrationImages(chosen, info.input_name, info.input_hw, info.input_dtype)
    first = list(iter(reader))
    second = list(iter(reader))
    assert len(first) == len(second) == 3
    via_get_next = []
    while (item := reader.get_next()) is not None:
        via_get_next.append(item)
    assert len(via_get_next) == 3 and reader.get_next() is not None  # a new pass starts after None
    for a, b in zip(first, second):
        assert list(a) == [info.input_name]
        x = a[info.input_name]
        assert x.dtype == np.uint8 and x.shape == (1, 3, *info.input_hw)
        np.testing.assert_array_equal(x, b[info.input_name])
    image = cv2.imread(str(chosen[0]))
    want = np.empty((3, *info.input_hw), np.uint8)
    letterbox_into(image, plan_letterbox(image.shape[:2], info.input_hw), want)
    np.testing.assert_array_equal(first[0][info.input_name][0], want)


@pytest.mark.parametrize("target", ["openvino", "onnxruntime"])
def test_same_seed_same_scales(random_detect_onnx, calib_dir, tmp_path, monkeypatch, target):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # onnxruntime's shape inference likes to drop temp files into the current directory
    paths = []
    for i, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"r{i}.onnx"
        assert qz.main([str(random_detect_onnx), "--calib", str(calib_dir), "--num", "2", "--seed", str(seed),
                        "--target", target, "-o", str(out)]) == 0
        paths.append(out)
    a, b, c = (_quant_params(p) for p in paths)
    assert a.keys() == b.keys() and len(a) > 100
    assert any(not np.array_equal(a[k], c[k]) for k in a)  # another draw of images gives other scales
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert qz.select_images(calib_dir, 2, 3) != qz.select_images(calib_dir, 2, 4)
    assert list(cwd.iterdir()) == []  # nothing leaked into the working directory


# ---------------------------------------------------------------------------------------------------------- report
def test_report_files_agree_with_json(quantized_detect):
    from tools.quant_report import render_markdown

    out, rep = quantized_detect
    report = json.loads((rep / "report.json").read_text())
    md = (rep / "report.md").read_text()
    assert md == render_markdown(report)  # the markdown is generated from exactly the JSON data
    tensors = report["tensors"]
    model = onnx.load(str(out))
    int8_convs = sum(kind == "int8" for kind in _conv_weight_sources(model).values())
    quantizers = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert sum(t["kind"] == "weight" for t in tensors) == int8_convs > 30  # every int8 weight and activation
    assert sum(t["kind"] == "activation" for t in tensors) == quantizers
    snr = [t["snr_db"] for t in tensors]
    assert snr == sorted(snr)  # worst first
    for t in tensors:
        assert f"| {t['tensor']} |" in md
        assert -1.0001 <= t["cosine"] <= 1.0001 and t["mse"] >= 0
    assert set(report["outputs"]) == {"box_p3", "cls_p3", "box_p4", "cls_p4", "box_p5", "cls_p5", "mean"}
    branches = report["branches"]
    assert set(branches) == {"box", "cls"}
    assert branches["box"] == pytest.approx(np.mean([report["outputs"][f"box_p{k}"] for k in (3, 4, 5)]), abs=1e-5)
    tm = report["task_metrics"]  # a random model may find nothing to score against: then it says so
    assert ("error" in tm and "detections" in tm["error"]) or (0 <= tm["box"]["mAP50-95"] <= 1 and tm["images"] == 2)
    assert "## Task metrics (label-free)" in md
    sp = report["speed"]
    assert sp["float_ms"] > 0 and sp["w8a8_ms"] > 0 and abs(sp["ratio"] - sp["float_ms"] / sp["w8a8_ms"]) < 0.01
    assert report["size"]["w8a8_bytes"] == out.stat().st_size
    assert report["measured_on"]["count"] == 2
    sens = report["sensitivity"]  # the default recipe's auto-exclude ran the sensitivity analysis
    gains = [g["gain"] for g in sens["groups"]]
    assert gains == sorted(gains, reverse=True) and len(gains) > 40
    a = report["auto_exclude"]
    assert a["k"] == AUTO_EXCLUDE and a["groups"] == [g["name"] for g in sens["groups"][:a["k"]]]
    assert "## Auto-exclude" in md and "## Sensitivity" in md


def test_prepare_model_takes_relative_paths(random_detect_onnx, tmp_path, monkeypatch):
    """Relative paths mean the caller's directory, although the pre-processing runs from a scratch directory."""
    monkeypatch.chdir(Path(random_detect_onnx).parent)
    out = qz.prepare_model(Path(random_detect_onnx).name, Path(os.path.relpath(tmp_path / "pre.onnx")))
    assert out == (tmp_path / "pre.onnx").resolve() and out.is_file()


@pytest.mark.parametrize("target", ["openvino", "onnxruntime"])
def test_sensitivity_ranks_groups(random_detect_onnx, calib_dir, tmp_path, target):
    from tools.recipe import calibrate_model, preset
    from tools.sensitivity import run_sensitivity

    recipe = replace(preset(target), num=2)
    info = qz.inspect_float_model(random_detect_onnx)
    chosen, held = qz.select_images(calib_dir, recipe.num, recipe.seed)
    calibrated = calibrate_model(info, chosen, recipe, tmp_path)
    groups = [name for name, nodes in qz.conv_groups(calibrated.model_path).items() if len(nodes) == 3][:8]
    res = run_sensitivity(calibrated, recipe, info, held[:1], tmp_path, threads=1, groups=groups[-3:], log=None)
    assert len(res.groups) == 3 and res.baseline > 0
    gains = [g.gain for g in res.groups]
    assert gains == sorted(gains, reverse=True)
    for g in res.groups:
        assert np.isfinite(g.consistency) and g.gain == pytest.approx(res.baseline - g.consistency)
    assert "rank" in res.format_table(2)


# ---------------------------------------------------------------------------------------------------------- errors
def _run_error(argv, capsys) -> str:
    rc = qz.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    return err


def test_empty_calibration_folder(random_detect_onnx, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "o.onnx"
    err = _run_error([random_detect_onnx, "--calib", empty, "-o", out], capsys)
    assert str(empty) in err and "no images" in err
    assert not out.exists() and list(tmp_path.glob("*.onnx*")) == []
    err = _run_error([random_detect_onnx, "--calib", tmp_path / "missing", "-o", out], capsys)
    assert "missing" in err and not out.exists()


def test_unreadable_calibration_images(random_detect_onnx, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "o.onnx"
    err = _run_error([random_detect_onnx, "--calib", bad, "-o", out], capsys)
    assert "a.jpg" in err and "cannot be read" in err
    assert not out.exists() and list(tmp_path.glob("*.onnx*")) == []


def test_unknown_exclude_lists_valid_names(random_detect_onnx, calib_dir, tmp_path, capsys):
    out = tmp_path / "o.onnx"
    err = _run_error([random_detect_onnx, "--calib", calib_dir, "-o", out, "--exclude", "/model.0/conv/Conv",
                      "/no/such/Conv"], capsys)
    assert "/no/such/Conv" in err and "/model.0/conv/Conv" in err.split("Valid names", 1)[1]
    assert str(random_detect_onnx) in err and not out.exists()


def _standard_export(path: Path, nc: int = 80, nm: int = 32) -> Path:
    """A stand-in for a stock Ultralytics segment export: output0 [1, 4 + nc + nm, 8400], output1 protos."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])
    o0 = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + nc + nm, 8400])
    o1 = helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, nm, 160, 160])
    shape0 = helper.make_tensor("s0", TensorProto.INT64, [3], [1, 4 + nc + nm, 8400])
    shape1 = helper.make_tensor("s1", TensorProto.INT64, [4], [1, nm, 160, 160])
    nodes = [helper.make_node("ConstantOfShape", ["s0c"], ["output0"]),
             helper.make_node("ConstantOfShape", ["s1c"], ["output1"]),
             helper.make_node("Identity", ["s0"], ["s0c"]), helper.make_node("Identity", ["s1"], ["s1c"])]
    graph = helper.make_graph(nodes, "standard", [x], [o0, o1], initializer=[shape0, shape1])
    model = helper.make_model(graph)
    model.metadata_props.add(key="task", value="segment")
    onnx.save(model, str(path))
    return path


def test_standard_head_export_is_refused(calib_dir, tmp_path, capsys):
    std = _standard_export(tmp_path / "yolov8n-seg-standard.onnx")
    out = tmp_path / "o.onnx"
    err = _run_error([std, "--calib", calib_dir, "-o", out], capsys)
    assert str(std) in err and "standard Ultralytics export" in err and "output0 [1, 116, 8400]" in err
    assert "zero" in err and "tools/export.py" in err and not out.exists()


def test_not_an_onnx_file(calib_dir, tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_text("hello")
    err = _run_error([junk, "--calib", calib_dir, "-o", tmp_path / "o.onnx"], capsys)
    assert str(junk) in err and "ONNX" in err
    err = _run_error([tmp_path / "nope.onnx", "--calib", calib_dir], capsys)
    assert "not found" in err


def test_already_quantized_is_refused(quantized_detect, calib_dir, tmp_path, capsys):
    out, _ = quantized_detect
    err = _run_error([out, "--calib", calib_dir, "-o", tmp_path / "o.onnx"], capsys)
    assert "already quantized" in err


# ------------------------------------------------------------------------------------------------ recipe and layout
def test_quantized_pose_model_runs_in_predictor(random_pose_onnx, calib_dir, tmp_path):
    from runtime import Predictor

    out = tmp_path / "pose-w8a8.onnx"
    assert qz.main([str(random_pose_onnx), "--calib", str(calib_dir), "--num", "3", "-o", str(out)]) == 0
    kinds = _conv_weight_sources(onnx.load(str(out)))
    assert sum(k == "int8" for k in kinds.values()) > 30
    owner = branch_outputs(random_pose_onnx)
    for level in ("kpt_p3", "kpt_p4", "kpt_p5"):  # the keypoint towers: the last two convs float, the first int8
        tower = [n for n in kinds if owner.get(n) == level]
        assert [kinds[n] for n in tower] == ["int8", "float", "float"], level
    assert all(kinds[n] == "int8" for n in kinds if owner.get(n, "").startswith(("box_", "cls_")))
    images = sorted(calib_dir.iterdir())[:2]
    q_results = Predictor(out, conf=0.001).predict(images)
    f_results = Predictor(random_pose_onnx, conf=0.001).predict(images)
    for q, f in zip(q_results, f_results):
        assert q.keypoints is not None and q.keypoints.shape[1:] == (17, 3)
        assert q.keypoints.shape[0] == len(q.scores) > 0
        assert abs(len(q.scores) - len(f.scores)) <= max(3, 0.2 * len(f.scores))


@pytest.mark.parametrize("argv, message", [
    (["--silu-clip", "7"], "--target onnxruntime"),
    (["--method", "entropy"], "--target onnxruntime"),
    (["--shared-scales"], "--target onnxruntime"),
], ids=["silu-clip", "entropy", "shared-scales"])
def test_options_of_the_other_target_are_refused(random_detect_onnx, calib_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "o.onnx"
    err = _run_error([random_detect_onnx, "--calib", calib_dir, "-o", out, *argv], capsys)
    assert message in err and not out.exists()


def test_weight_scale_keeps_a_per_tensor_grid_and_refines_real_weights():
    from tools.qdq import quantize_weight

    rng = np.random.default_rng(0)
    step = np.float32(0.01)
    levels = rng.integers(-127, 128, (8, 4, 3, 3))
    levels[0, 0, 0, 0] = 127  # the tensor's max-abs sits on the grid's end
    levels[3] = rng.integers(-10, 11, (4, 3, 3))  # a quiet channel: its own max-abs scale would miss the grid
    on_grid = (levels * step).astype(np.float32)
    q, scale = quantize_weight(on_grid)
    np.testing.assert_array_equal(q, levels)  # every channel keeps the tensor's grid: lossless
    real = rng.normal(0, 1, (8, 4, 3, 3)).astype(np.float32) * np.geomspace(0.01, 1, 8)[:, None, None, None]
    q_pc, s_pc = quantize_weight(real)
    q_pt, s_pt = quantize_weight(real, per_channel=False)
    err_pc = np.abs(q_pc * s_pc[:, None, None, None] - real).max(axis=(1, 2, 3))
    err_pt = np.abs(q_pt * s_pt[:, None, None, None] - real).max(axis=(1, 2, 3))
    assert np.all(err_pc <= err_pt + 1e-7) and err_pc[0] < 0.1 * err_pt[0]
    assert q_pc.dtype == np.int8 and np.abs(q_pc).max() <= 127


@pytest.mark.parametrize("act_type, symmetric", [("u8", False), ("s8", False), ("s8", True), ("u8", True)])
def test_activation_qparams_cover_the_range(act_type, symmetric):
    from tools.qdq import activation_qparams

    lo, hi = -0.28, 6.5
    scale, zp = activation_qparams(lo, hi, act_type, symmetric)
    info = np.iinfo(zp.dtype)
    q_lo, q_hi = np.rint(lo / scale) + int(zp), np.rint(hi / scale) + int(zp)
    assert info.min <= q_lo and q_hi <= info.max and q_hi - q_lo >= (127 if symmetric else 250)
    assert zp.dtype == (np.uint8 if act_type == "u8" else np.int8)


def test_bias_correction_removes_the_mean_shift_of_rounding(tmp_path):
    """One conv on inputs with a large mean: rounding its weights shifts the output mean; the correction cancels it."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from tools.qdq import build_conv_qdq, collect_stats

    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.05, (16, 8, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(16, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    xs = [(rng.normal(0, 0.3, (1, 8, 16, 16)) + 20 + np.arange(8).reshape(1, 8, 1, 1)).astype(np.float32)
          for _ in range(6)]
    stats = collect_stats(path, ["x"], ({"x": x} for x in xs))
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def mean_shift(corrected: bool) -> float:
        q = build_conv_qdq(model, stats, bias_correction=corrected)
        sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
        diffs = [sess.run(None, {"x": x})[0] - ref.run(None, {"x": x})[0] for x in xs]
        return float(np.abs(np.mean(diffs, axis=(0, 1, 3, 4))).max())  # worst per-channel mean shift

    assert mean_shift(True) < 0.3 * mean_shift(False)


def test_branch_nodes_are_found_from_the_graph():
    from onnx import TensorProto, helper

    def relu(name, src, dst):
        return helper.make_node("Relu", [src], [dst], name=name)

    nodes = [relu("stem", "x", "s"), relu("a1", "s", "a"), relu("a2", "a", "out_a"), relu("b1", "s", "out_b"),
             relu("shared", "s", "t"), helper.make_node("Add", ["t", "a"], ["out_c"], name="join")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("out_a", "out_b", "out_c")])
    # a1 feeds out_a and (through join) out_c: not a branch; stem feeds all three
    assert branch_nodes(helper.make_model(graph)) == ["a2", "b1", "shared", "join"]


def test_onnxruntime_bias_correction_uses_quantize_statics_weight_grid(random_detect_onnx, calib_dir, tmp_path):
    """The weights quantize_static writes are the grid correct_biases assumes; the correction moves the biases of
    the int8 convs and leaves the float convs' alone."""
    from tools.ort_qdq import ort_weight_grid

    models = {}
    for flag in ("--bias-correction", "--no-bias-correction"):
        out = tmp_path / f"{flag}.onnx"
        assert qz.main([str(random_detect_onnx), "--calib", str(calib_dir), "--num", "2", "--target", "onnxruntime",
                        flag, "-o", str(out)]) == 0
        models[flag] = onnx.load(str(out))
    float_inits = _inits(onnx.load(str(random_detect_onnx)))
    corrected, plain = _inits(models["--bias-correction"]), _inits(models["--no-bias-correction"])
    model = models["--bias-correction"]
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    int8_convs = moved = 0
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        if node.input[1] not in dq:  # a float conv: its bias is the float model's
            np.testing.assert_array_equal(corrected[node.input[2]], float_inits[node.input[2]])
            continue
        int8_convs += 1
        w_dq = dq[node.input[1]]
        w_q = corrected[w_dq.input[0]].astype(np.float32)
        scale = corrected[w_dq.input[1]].reshape(-1, *([1] * (w_q.ndim - 1)))
        weight_name = next(k for k in float_inits if w_dq.input[0].startswith(k) and k.endswith("weight"))
        np.testing.assert_allclose(w_q * scale, ort_weight_grid(float_inits[weight_name], True), rtol=0, atol=1e-7)
        bias_q = dq[node.input[2]].input[0]
        moved += not np.array_equal(corrected[bias_q], plain[bias_q])
    assert int8_convs > 10 and moved > int8_convs // 2
