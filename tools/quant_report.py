"""Quantization report: per-tensor errors, per-output consistency, speed and size of a W8A8 model vs its float model.

Used by ``python tools/quantize.py ... --report DIR``; also runnable on an existing pair::

    python tools/quant_report.py FLOAT.onnx W8A8.onnx --images DIR [--num 8] [--threads N] -o REPORT_DIR

``report.json`` holds every figure; ``report.md`` is rendered from that same dict (``render_markdown``).

* Per tensor (activations and weights), worst first: SNR (dB) = 10 log10(sum f^2 / sum (q - f)^2), cosine
  similarity and MSE between the float model's tensor and the W8A8 model's dequantized tensor, accumulated over the
  images. The W8A8 values are read from the ``DequantizeLinear`` outputs of a temporary copy in which those outputs
  are graph outputs; this keeps onnxruntime from fusing them into QLinear* kernels, so the quantized graph is
  emulated in float (same integer grid, float accumulation). Errors accumulate along the network (as in a
  "xquant" table), so late tensors include the error of everything before them.
* Per model output: the consistency figure, mean over images of ||q - f|| / ||f||, on the real (fused) W8A8 model,
  and the same per head branch (box, cls, kpt, mc, proto: mean over levels).
* Task metrics: label-free box / mask / OKS mAP of the W8A8 model against the float model's own detections on the
  held-back images (``tools/fidelity.py``), so a user without labels sees what the error does to detections.
* Speed: median ms per image at batch 1, float and W8A8 alternating in the same run, same thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

__all__ = ["branch_errors", "build_report", "measure_speed", "task_metrics", "output_consistency", "render_markdown", "tensor_errors",
           "write_report", "main"]


# --------------------------------------------------------------------------------------------------------- sessions
def make_session(path_or_bytes, threads: int | None = None, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = str(path_or_bytes) if isinstance(path_or_bytes, (str, Path)) else path_or_bytes
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def load_inputs(images: Sequence[Path], hw: tuple[int, int], dtype: str,
                preprocess: str = "letterbox") -> list[np.ndarray]:
    from tools.calibration import preprocess_image

    return [preprocess_image(p, hw, dtype, preprocess)[None] for p in images]


# ---------------------------------------------------------------------------------------------------- tensor errors
class _Acc:
    """Running sums for SNR / cosine / MSE over several images."""

    __slots__ = ("ff", "qq", "fq", "ee", "n")

    def __init__(self) -> None:
        self.ff = self.qq = self.fq = self.ee = 0.0
        self.n = 0

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f = f.astype(np.float64, copy=False).ravel()
        q = q.astype(np.float64, copy=False).ravel()
        e = q - f
        self.ff += float(f @ f)
        self.qq += float(q @ q)
        self.fq += float(f @ q)
        self.ee += float(e @ e)
        self.n += f.size

    def figures(self) -> dict[str, float | None]:
        snr = (math.inf if self.ee == 0 else 10 * math.log10(self.ff / self.ee)) if self.ff > 0 else None
        denom = math.sqrt(self.ff * self.qq)
        cos = self.fq / denom if denom > 0 else (1.0 if self.ee == 0 else 0.0)
        return {"snr_db": None if snr is None else (999.0 if math.isinf(snr) else round(snr, 3)),
                "cosine": round(cos, 6), "mse": float(f"{self.ee / max(self.n, 1):.6g}")}


def qdq_pairs(qmodel) -> tuple[dict[str, str], dict[str, tuple[str, str, str | None]]]:
    """Activation map {float tensor: DequantizeLinear output} and weight map {weight: (q init, scale, zp)}."""
    inits = {i.name for i in qmodel.graph.initializer}
    q_of = {n.output[0]: n for n in qmodel.graph.node if n.op_type == "QuantizeLinear"}
    acts: dict[str, str] = {}
    weights: dict[str, tuple[str, str, str | None]] = {}
    for node in qmodel.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        src = node.input[0]
        if src in q_of and q_of[src].input[0] not in inits:
            acts.setdefault(q_of[src].input[0], node.output[0])
        elif src in inits:
            weights[node.output[0]] = (src, node.input[1], node.input[2] if len(node.input) > 2 else None)
    return acts, weights


def _with_outputs(model, names: Sequence[str]) -> bytes:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return m.SerializeToString()


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    q = q.astype(np.float32)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zp = None if zp is None else zp.reshape(shape)
    return (q - (0 if zp is None else zp.astype(np.float32))) * scale


def tensor_errors(pre_path: str | Path, q_path: str | Path, inputs: Sequence[np.ndarray], input_name: str,
                  threads: int | None = None, silu_clip: float | None = None) -> list[dict[str, Any]]:
    """SNR / cosine / MSE of every quantized tensor (activations over ``inputs``, weights once), worst first.

    With ``silu_clip``, SiLU inputs carry a note: their error includes the clipping below -silu_clip, which the
    SiLU flattens (|SiLU(x)| < 0.003 there), so their SiLU output is the figure that matters.
    """
    import onnx
    from onnx import numpy_helper

    from tools.quant_model import silu_inputs

    qmodel = onnx.load(str(q_path))
    fmodel = onnx.load(str(pre_path))
    acts, weights = qdq_pairs(qmodel)
    float_names = {v.name for v in fmodel.graph.value_info} | {o.name for o in fmodel.graph.output} | {
        o for n in fmodel.graph.node for o in n.output}
    acts = {t: d for t, d in acts.items() if t in float_names or t == input_name}
    order = {o: i for i, n in enumerate(fmodel.graph.node) for o in n.output}
    rows: list[dict[str, Any]] = []

    if acts:
        act_names = [t for t in acts if t != input_name]
        fsess = make_session(_with_outputs(fmodel, act_names), threads)
        qsess = make_session(_with_outputs(qmodel, list(acts.values())), threads)
        fouts = act_names
        qouts = [acts[t] for t in acts]
        accs = {t: _Acc() for t in acts}
        for x in inputs:
            fvals = dict(zip(fouts, fsess.run(fouts, {input_name: x})))
            fvals[input_name] = x
            qvals = dict(zip(acts, qsess.run(qouts, {input_name: x})))
            for t in acts:
                accs[t].add(fvals[t], qvals[t])
            del fvals, qvals
        producer = {o: n for n in fmodel.graph.node for o in n.output}
        clipped = set(silu_inputs(fmodel)) if silu_clip else set()
        for t, acc in accs.items():
            node = producer.get(t)
            note = f"SiLU input clipped at -{silu_clip:g}" if t in clipped else ""
            rows.append({"tensor": t, "kind": "activation", "producer": node.name if node else "(input)",
                         "op": node.op_type if node else "Input", "order": order.get(t, -1), **acc.figures(),
                         "note": note})

    finits = {i.name: i for i in fmodel.graph.initializer}
    qinits = {i.name: i for i in qmodel.graph.initializer}
    dq_nodes = {n.output[0]: n for n in qmodel.graph.node if n.op_type == "DequantizeLinear"}
    consumer = {}
    for n in qmodel.graph.node:
        for i in n.input:
            consumer.setdefault(i, n)
    for dq_out, (qname, sname, zname) in weights.items():
        qarr = numpy_helper.to_array(qinits[qname])
        if qarr.dtype not in (np.int8, np.uint8):  # int32 biases: report weights only
            continue
        fname = qname[:-len("_quantized")] if qname.endswith("_quantized") else qname
        if fname not in finits:
            continue
        axis = next((a.i for a in dq_nodes[dq_out].attribute if a.name == "axis"), 1)
        scale = numpy_helper.to_array(qinits[sname])
        zp = numpy_helper.to_array(qinits[zname]) if zname else None
        acc = _Acc()
        acc.add(numpy_helper.to_array(finits[fname]), _dequantize(qarr, scale, zp, axis))
        user = consumer.get(dq_out)
        rows.append({"tensor": fname, "kind": "weight", "producer": user.name if user else "", "op": "initializer",
                     "order": -1, **acc.figures(), "note": ""})
    rows.sort(key=lambda r: (r["snr_db"] if r["snr_db"] is not None else 1e9, r["tensor"]))
    return rows


# ------------------------------------------------------------------------------------------------ output consistency
def output_consistency(float_path: str | Path, q_path: str | Path, inputs: Sequence[np.ndarray], input_name: str,
                       threads: int | None = None, float_outputs: list[dict[str, np.ndarray]] | None = None
                       ) -> dict[str, float]:
    """{output: mean over inputs of ||q - f|| / ||f||} plus "mean" (over outputs), on the fused W8A8 model."""
    qs = make_session(q_path, threads)
    names = [o.name for o in qs.get_outputs()]
    if float_outputs is None:
        float_outputs = run_outputs(float_path, inputs, input_name, threads)
    rel = {n: [] for n in names}
    for x, fo in zip(inputs, float_outputs):
        for n, q in zip(names, qs.run(names, {input_name: x})):
            f = fo[n]
            rel[n].append(float(np.linalg.norm((q - f).ravel()) / max(np.linalg.norm(f.ravel()), 1e-12)))
    out = {n: float(np.mean(v)) for n, v in rel.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def run_outputs(path: str | Path, inputs: Sequence[np.ndarray], input_name: str, threads: int | None = None
                ) -> list[dict[str, np.ndarray]]:
    s = make_session(path, threads)
    names = [o.name for o in s.get_outputs()]
    return [dict(zip(names, s.run(names, {input_name: x}))) for x in inputs]


def branch_errors(consistency: dict[str, float]) -> dict[str, float]:
    """Output consistency per head branch (box, cls, kpt, mc, proto): the mean over its levels."""
    groups: dict[str, list[float]] = {}
    for name, value in consistency.items():
        if name != "mean":
            groups.setdefault(name.split("_p")[0], []).append(value)
    return {k: round(float(np.mean(v)), 6) for k, v in groups.items()}


def task_metrics(float_path: str | Path, q_path: str | Path, images: Sequence[Path],
                 threads: int | None = None, engine: str | None = None) -> dict[str, Any]:
    """Label-free box / mask / OKS mAP of the W8A8 model (run on ``engine``) against the float model's own
    detections (tools/fidelity)."""
    from tools.eval_coco import make_predictor
    from tools.fidelity import FidelityError, label_free_scores

    reference = make_predictor(float_path, threads=threads)
    if reference.model.spec.task == "classify":
        from tools.eval_classify import classify_fidelity

        return classify_fidelity(reference, make_predictor(q_path, threads=threads, engine=engine), images)
    try:
        scores = label_free_scores(make_predictor(float_path, threads=threads),
                                   make_predictor(q_path, threads=threads, engine=engine), images)
    except FidelityError as exc:
        return {"error": str(exc)}
    return {k: scores[k] for k in ("box", "mask", "pose", "images", "gt_objects", "gt_conf")}


# ------------------------------------------------------------------------------------------------------------ speed
def report_engine(settings: dict[str, Any]) -> str:
    """The engine a W8A8 file is made for (its ``target_engine``) when installed here, else onnxruntime."""
    import importlib.util

    target = settings.get("target_engine") or "onnxruntime"
    return target if importlib.util.find_spec(target) is not None else "onnxruntime"


def measure_speed(models: Sequence[tuple[str, str | Path, str]], hw: tuple[int, int], dtype: str,
                  threads: int | None = None, repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median ms per image at batch 1 for each ``(label, path, engine)``, the models alternating so load changes hit
    all alike."""
    from runtime.engines import open_engine

    engines = [open_engine(path, engine, threads=threads) for _, path, engine in models]
    x = np.random.default_rng(0).integers(0, 256, (1, 3, *hw), dtype=np.uint8)
    if dtype == "float32":
        x = x.astype(np.float32) / np.float32(255)
    for e in engines:
        for _ in range(warmup):
            e.run(x)
    times: list[list[float]] = [[] for _ in engines]
    for _ in range(repeats):
        for e, t in zip(engines, times):
            t0 = time.perf_counter()
            e.run(x)
            t.append(time.perf_counter() - t0)
    return {label: float(np.median(t) * 1000) for (label, _, _), t in zip(models, times)}


# ----------------------------------------------------------------------------------------------------------- report
def _op_counts(path: str | Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def build_report(float_path: str | Path, q_path: str | Path, pre_path: str | Path | None, images: Sequence[Path],
                 info=None, *, settings: dict[str, Any] | None = None, threads: int | None = None,
                 sensitivity=None, auto_exclude: int = 0, baseline_qdq: str | Path | None = None,
                 repeats: int = 20) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    import onnxruntime

    from tools.quant_model import inspect_float_model, prepare_model

    info = info or inspect_float_model(float_path)
    if settings is None:
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(q_path), load_external_data=False).metadata_props}
        settings = json.loads(meta.get("quantization", "{}"))
    inputs = load_inputs(images, info.input_hw, info.input_dtype, info.preprocess)
    with tempfile.TemporaryDirectory(prefix="quant-report-") as tmp:
        if pre_path is None:
            pre_path = prepare_model(float_path, Path(tmp) / "pre.onnx")
        rows = tensor_errors(pre_path, q_path, inputs, info.input_name, threads, settings.get("silu_clip"))
    float_outputs = run_outputs(float_path, inputs, info.input_name, threads)
    consistency = output_consistency(float_path, q_path, inputs, info.input_name, threads, float_outputs)
    engine = report_engine(settings)
    timed = [("float", float_path, "onnxruntime"), ("w8a8", q_path, engine)]
    timed += [("float_engine", float_path, engine)] if engine != "onnxruntime" else []
    timed += [("all_int8", baseline_qdq, engine)] if baseline_qdq else []
    ms = measure_speed(timed, info.input_hw, info.input_dtype, threads, repeats)
    ms_f, ms_q = ms["float"], ms["w8a8"]
    size_f, size_q = Path(float_path).stat().st_size, Path(q_path).stat().st_size
    report: dict[str, Any] = {
        "float_model": str(float_path),
        "quantized_model": str(q_path),
        "settings": settings,
        "measured_on": {"images": [Path(p).name for p in images], "count": len(images),
                        "note": "held-back images: not used for calibration"},
        "speed": {"batch": 1, "threads": threads or "engine default", "repeats": repeats, "engine": engine,
                  "float_ms": round(ms_f, 2), "w8a8_ms": round(ms_q, 2), "ratio": round(ms_f / ms_q, 3),
                  "float_engine_ms": round(ms["float_engine"], 2) if "float_engine" in ms else None,
                  "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                  "onnxruntime": onnxruntime.__version__},
        "size": {"float_bytes": size_f, "w8a8_bytes": size_q, "ratio": round(size_q / size_f, 4)},
        "outputs": {k: round(v, 6) for k, v in consistency.items()},
        "branches": branch_errors(consistency),
        "task_metrics": task_metrics(float_path, q_path, images, threads, engine),
        "tensors": rows,
        "op_counts": _op_counts(q_path),
    }
    if sensitivity is not None:
        report["sensitivity"] = sensitivity.to_dict()
    if auto_exclude and baseline_qdq:
        base = output_consistency(float_path, baseline_qdq, inputs, info.input_name, threads, float_outputs)
        ms_b = ms["all_int8"]
        report["auto_exclude"] = {"k": auto_exclude, "groups": settings.get("auto_exclude", {}).get("groups", []),
                                  "consistency_all_int8": round(base["mean"], 6),
                                  "consistency_with_float_groups": round(consistency["mean"], 6),
                                  "all_int8_ms": round(ms_b, 2), "with_float_groups_ms": round(ms_q, 2),
                                  "speed_cost": round(ms_q / ms_b, 3)}
    return report


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def render_markdown(report: dict[str, Any], max_rows: int | None = None) -> str:
    """The markdown report, generated only from the report dict (the same data as report.json)."""
    s, sp, sz = report["settings"], report["speed"], report["size"]
    lines = [f"# W8A8 quantization report: {Path(report['quantized_model']).name}", "",
             f"Float model `{report['float_model']}`; W8A8 model `{report['quantized_model']}`.", "",
             "## Settings", "", "| setting | value |", "|---|---|"]
    for k in sorted(s):
        v = s[k]
        lines.append(f"| {k} | {', '.join(map(str, v)) if isinstance(v, list) else json.dumps(v) if isinstance(v, dict) else _fmt(v)} |")
    engine = sp.get("engine", "onnxruntime")
    lines += ["", "## Speed and size", "",
              f"Batch 1, {sp['threads']} threads, median of {sp['repeats']} alternating runs "
              f"({sp['cpu']}, {sp['cores']} cores, onnxruntime {sp['onnxruntime']}); float on onnxruntime, "
              f"W8A8 on {engine}{'' if sp.get('float_engine_ms') is None else f' (float on {engine}: ' + _fmt(sp['float_engine_ms']) + ' ms)'}.", "",
              "| | float | W8A8 | ratio |", "|---|---|---|---|",
              f"| ms / image | {_fmt(sp['float_ms'])} | {_fmt(sp['w8a8_ms'])} | {_fmt(sp['ratio'])}x faster |",
              f"| file bytes | {sz['float_bytes']} | {sz['w8a8_bytes']} | {100 * sz['ratio']:.1f}% |", "",
              "## Model outputs", "",
              f"Consistency = mean over {report['measured_on']['count']} held-back images of ||q - f|| / ||f||.", "",
              "| output | rel. L2 |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in report["outputs"].items()]
    lines += ["", "Per branch (mean over levels):", "", "| branch | rel. L2 |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in report["branches"].items()]
    tm = report["task_metrics"]
    lines += ["", "## Task metrics (label-free)", ""]
    if "error" in tm:
        lines.append(f"Not measured: {tm['error']}")
    elif "top1_agreement" in tm:
        lines += [f"On the {tm['images']} held-back images, the W8A8 classifier's best class is the float model's on "
                  f"{100 * tm['top1_agreement']:.2f}% of them; {100 * tm['top5_overlap']:.2f}% of the float top 5 "
                  "are in its top 5."]
    else:
        lines += [f"The W8A8 model's detections scored with pycocotools against the float model's own detections "
                  f"(score >= {tm['gt_conf']:g}: {tm['gt_objects']} objects) on the {tm['images']} held-back images; "
                  "the float model against itself scores 1.0.", "",
                  "| metric | mAP50-95 | mAP50 |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(tm[k]['mAP50-95'])} | {_fmt(tm[k]['mAP50'])} |" for k in ("box", "mask", "pose")
                  if tm.get(k)]
    if "auto_exclude" in report:
        a = report["auto_exclude"]
        lines += ["", f"## Auto-exclude (K = {a['k']})", "",
                  f"Groups kept float: {', '.join(a['groups'])}", "",
                  "| | all int8 | with float groups |", "|---|---|---|",
                  f"| mean consistency | {_fmt(a['consistency_all_int8'])} | {_fmt(a['consistency_with_float_groups'])} |",
                  f"| ms / image | {_fmt(a['all_int8_ms'])} | {_fmt(a['with_float_groups_ms'])} |"]
    if "sensitivity" in report:
        sens = report["sensitivity"]
        lines += ["", "## Sensitivity (one Conv+SiLU group float at a time)", "",
                  f"Baseline mean consistency {_fmt(sens['baseline'])} on {sens['images']} held-back images; "
                  "gain = baseline - consistency with the group float.", "",
                  "| rank | group | nodes | consistency | gain |", "|---|---|---|---|---|"]
        for i, g in enumerate(sens["groups"], 1):
            lines.append(f"| {i} | {g['name']} | {len(g['nodes'])} | {_fmt(g['consistency'])} | {_fmt(g['gain'])} |")
    rows = report["tensors"] if max_rows is None else report["tensors"][:max_rows]
    lines += ["", "## Per-tensor error, worst first", "",
              f"{len(report['tensors'])} quantized tensors; activations measured on the held-back images "
              "(error accumulated from the input, W8A8 graph emulated unfused), weights on their own. "
              "A SiLU input clipped by silu_clip counts the clipping as error although the SiLU flattens it: "
              "judge those by their SiLU output (the Mul after it).", "",
              "| # | tensor | kind | producer | op | SNR dB | cosine | MSE | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['tensor']} | {r['kind']} | {r['producer']} | {r['op']} | {_fmt(r['snr_db'])} | "
                     f"{_fmt(r['cosine'])} | {_fmt(r['mse'])} | {r.get('note', '')} |")
    lines += ["", "## Operators in the W8A8 graph", "", "| op | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["op_counts"].items()]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    from runtime.io.files import atomic_write_text

    out_dir = Path(out_dir)
    j = atomic_write_text(out_dir / "report.json", json.dumps(report, indent=1, sort_keys=False) + "\n")
    m = atomic_write_text(out_dir / "report.md", render_markdown(report))
    return j, m


# -------------------------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    from tools.calibration import select_images
    from tools.quant_model import QuantizeError, inspect_float_model

    p = argparse.ArgumentParser(prog="quant_report.py", description=__doc__.split("\n")[0])
    p.add_argument("float_model")
    p.add_argument("w8a8_model")
    p.add_argument("--images", required=True, help="images to measure on (use ones not used for calibration)")
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("-o", "--output", required=True, help="report folder")
    args = p.parse_args(argv)
    try:
        info = inspect_float_model(args.float_model)
        images, _ = select_images(args.images, args.num, args.seed)
        if not Path(args.w8a8_model).is_file():
            raise QuantizeError(f"{args.w8a8_model}: model file not found")
        report = build_report(args.float_model, args.w8a8_model, None, images, info, threads=args.threads,
                              repeats=args.repeats)
    except QuantizeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    j, m = write_report(report, args.output)
    print(f"{m}\n{j}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
