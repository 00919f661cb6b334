"""tools/quantize.py (+ quant_report.py, sensitivity.py): W8A8 QDQ quantization of truncated-head exports.

Small and fast: random-init models exported at imgsz 320 (tests/conftest.py), a handful of calibration images
written into a temp folder (Ultralytics' bundled bus.jpg / zidane.jpg plus synthetic ones).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")
cv2 = pytest.importorskip("cv2")

from tools import quantize as qz  # noqa: E402

N_CALIB = 4  # of the 6 images written: 2 stay held back for the report


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
                  "-o", str(out), "--report", str(rep), "--report-images", "2", "--sensitivity-images", "1"])
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


def test_quantized_model_is_int8_with_metadata(quantized_detect, random_detect_onnx):
    out, _ = quantized_detect
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 100
    kinds = _conv_weight_sources(model)
    meta = {p.key: p.value for p in model.metadata_props}
    q = json.loads(meta["quantization"])
    excluded = set(q["excluded_nodes"])
    head = set(qz.head_nodes(random_detect_onnx)) if qz.DEFAULT_RECIPE.float_head else set()
    assert len(head) == (6 if head else 0) and head <= excluded  # box_pN / cls_pN convs stay float by default
    k = qz.DEFAULT_RECIPE.auto_exclude
    assert len(q.get("auto_exclude", {}).get("groups", [])) == k and len(excluded) == len(head) + 3 * k
    assert {n for n, kind in kinds.items() if kind == "float"} == {n for n in kinds if n in excluded}
    assert sum(kind == "int8" for kind in kinds.values()) == len(kinds) - len(head) - k  # all other convs int8
    float_weights = {n.input[1] for n in model.graph.node if n.name in excluded and n.op_type == "Conv"}
    big_float = [k for k, v in _inits(model).items() if v.dtype == np.float32 and v.size > 64
                 and k not in float_weights and not k.endswith("bias")]
    assert big_float == []  # no float weights left but the excluded convs' (scales and biases are small vectors)
    # int8 storage: apart from the weights the recipe keeps float, the file is under 30% of the float one
    inits = _inits(model)
    kept_float = sum(inits[w].nbytes for w in float_weights if w in inits)
    assert out.stat().st_size - kept_float <= 0.30 * random_detect_onnx.stat().st_size
    float_meta = {p.key: p.value for p in onnx.load(str(random_detect_onnx)).metadata_props}
    assert all(meta[k] == v for k, v in float_meta.items())  # float metadata kept
    assert q["format"] == "QDQ" and q["weight_type"] == "QInt8"
    assert q["activation_type"] == ("QUInt8" if qz.DEFAULT_RECIPE.activation_type == "u8" else "QInt8")
    assert q["calibration_images"] == N_CALIB and q["calibration_seed"] == 0
    assert q["float_source_sha256"] == qz.sha256_file(random_detect_onnx)
    for key in ("method", "per_channel", "activation_symmetric", "weight_symmetric", "reduce_range",
                "excluded_nodes"):
        assert key in q


def test_excluded_nodes_stay_float(random_detect_onnx, calib_dir, tmp_path):
    groups = qz.conv_groups(random_detect_onnx)
    names = list(groups)
    first, last = names[0], names[-1]
    exclude = groups[first] + [last]  # first Conv with its SiLU, and a bare head conv
    out = tmp_path / "ex.onnx"
    rc = qz.main([str(random_detect_onnx), "--calib", str(calib_dir), "--num", "2", "-o", str(out),
                  "--auto-exclude", "0", "--no-float-head", "--exclude", *exclude])
    assert rc == 0
    model = onnx.load(str(out))
    kinds = _conv_weight_sources(model)
    assert kinds[first] == "float" and kinds[last] == "float"
    assert sum(k == "int8" for k in kinds.values()) == len(kinds) - 2
    # the SiLU of the excluded conv computes on float values: its Sigmoid reads the conv output directly
    producers = {o: n for n in model.graph.node for o in n.output}
    nodes = {n.name: n for n in model.graph.node}
    sig = nodes[groups[first][1]]
    assert producers[sig.input[0]].name == first
    assert json.loads({p.key: p.value for p in model.metadata_props}["quantization"])["excluded_nodes"] == exclude


def test_float_head_keeps_outputs_unrounded(random_detect_onnx, calib_dir, tmp_path):
    out = tmp_path / "fh.onnx"
    assert qz.main([str(random_detect_onnx), "--calib", str(calib_dir), "--num", "2", "-o", str(out),
                    "--auto-exclude", "0", "--float-head"]) == 0
    model = onnx.load(str(out))
    producers = {o: n for n in model.graph.node for o in n.output}
    for o in model.graph.output:  # every output comes straight from a float Conv, not from DequantizeLinear
        assert producers[o.name].op_type == "Conv"
    q = json.loads({p.key: p.value for p in model.metadata_props}["quantization"])
    assert q["float_head"] is True and sorted(q["excluded_nodes"]) == sorted(qz.head_nodes(random_detect_onnx))


# ---------------------------------------------------------------------------------------------------- calibration
def test_calibration_reader_is_reiterable_and_matches_letterbox(random_detect_onnx, calib_dir):
    from runtime.letterbox import letterbox_into, plan_letterbox

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


def test_same_seed_same_scales(random_detect_onnx, calib_dir, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # onnxruntime's shape inference likes to drop temp files into the current directory
    paths = []
    for i, seed in enumerate((3, 3)):
        out = tmp_path / f"r{i}.onnx"
        assert qz.main([str(random_detect_onnx), "--calib", str(calib_dir), "--num", "2", "--seed", str(seed),
                        "--auto-exclude", "0", "-o", str(out)]) == 0
        paths.append(out)
    a, b = _quant_params(paths[0]), _quant_params(paths[1])
    assert a.keys() == b.keys() and len(a) > 100
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
    assert len(tensors) > 100 and {t["kind"] for t in tensors} == {"activation", "weight"}
    snr = [t["snr_db"] for t in tensors]
    assert snr == sorted(snr)  # worst first
    for t in tensors:
        assert f"| {t['tensor']} |" in md
        assert -1.0001 <= t["cosine"] <= 1.0001 and t["mse"] >= 0
    assert set(report["outputs"]) == {"box_p3", "cls_p3", "box_p4", "cls_p4", "box_p5", "cls_p5", "mean"}
    sp = report["speed"]
    assert sp["float_ms"] > 0 and sp["w8a8_ms"] > 0 and abs(sp["ratio"] - sp["float_ms"] / sp["w8a8_ms"]) < 0.01
    assert report["size"]["w8a8_bytes"] == out.stat().st_size
    assert report["measured_on"]["count"] == 2
    sens = report["sensitivity"]  # the default recipe's auto-exclude ran the sensitivity analysis
    gains = [g["gain"] for g in sens["groups"]]
    assert gains == sorted(gains, reverse=True) and len(gains) > 40
    a = report["auto_exclude"]
    assert a["k"] == qz.DEFAULT_RECIPE.auto_exclude and a["groups"] == [g["name"] for g in sens["groups"][:a["k"]]]
    assert "## Auto-exclude" in md and "## Sensitivity" in md


def test_prepare_model_takes_relative_paths(random_detect_onnx, tmp_path, monkeypatch):
    """Relative paths mean the caller's directory, although the pre-processing runs from a scratch directory."""
    monkeypatch.chdir(Path(random_detect_onnx).parent)
    out = qz.prepare_model(Path(random_detect_onnx).name, Path(os.path.relpath(tmp_path / "pre.onnx")))
    assert out == (tmp_path / "pre.onnx").resolve() and out.is_file()


def test_sensitivity_ranks_groups(random_detect_onnx, calib_dir, tmp_path):
    from tools.sensitivity import run_sensitivity

    recipe = qz.Recipe(num=2)
    info = qz.inspect_float_model(random_detect_onnx)
    chosen, held = qz.select_images(calib_dir, recipe.num, recipe.seed)
    pre = qz.prepare_model(random_detect_onnx, tmp_path / "pre.onnx")
    table = qz.load_or_calibrate(pre, info, chosen, recipe, None, tmp_path)
    groups = [name for name, nodes in qz.conv_groups(pre).items() if len(nodes) == 3]  # Conv + Sigmoid + Mul
    res = run_sensitivity(pre, table, recipe, info, held[:1], tmp_path, threads=1, groups=groups[-3:], log=None)
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
