"""Where the quantizers go on YOLO26's DFL-free box branch: label-free fidelity and box error in pixels per level.

A YOLO26 box conv outputs the four distances in strides, so its value *is* the coordinate: an 8-bit grid on it is a
grid of pixels (one step of a 0..20-cell range at stride 32 is 2.5 px). This study builds W8A8 variants of one float
file and scores each against the float model on the same images:

* ``int8-box-tail``: tools/quantize.py's layout with every box conv int8 (``--float-box-tails 0``). Quantizers sit
  where activations are computed and feed convs; the head's last convs read int8 inputs with int8 weights but
  nothing quantizes their outputs, so each box output leaves its conv in float (the int32 accumulator dequantized).
* ``float-box-tail``: the default recipe: the same with the last conv of every box branch kept float.
* ``naive``: the head quantized like the body: ``int8-box-tail`` plus a u8 quantizer (mean per-image min / max
  range) on every head output, each with its own scale (the least a head-like-body recipe does).
* ``pixel-grid``: ``int8-box-tail`` with the box outputs quantized on one pixel grid shared by all levels (scale =
  the largest level's range in pixels / 255, divided by each level's stride), which is what quantizing the decoded,
  concatenated ``(B, 4, N)`` pixel boxes of a stock export does (Ultralytics' NNCF / QNN int8 exports).

Each runs through OpenVINO at its default precision (bf16 on CPUs with AVX512-BF16 / AMX) and at f32; the float
model through onnxruntime is the reference. Box error: |distance difference| * stride over every anchor, and over the
anchors whose float score passes 0.25, per level. Fidelity: ``tools/fidelity.py`` (box mAP50-95 against the float
model's detections >= 0.25).

Usage (needs torch + ultralytics for the random-init model; any float truncated-head file works with --float)::

    python tools/quant26_study.py --cfg yolo26n.yaml --calib ../shared/coco/train2017 --images ../shared/coco/val2017
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LEVEL_STRIDES = {"p3": 8, "p4": 16, "p5": 32}


def _images(folder: Path, n: int) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]


def _batches(paths, hw):
    from tools.calibration import preprocess_image

    for p in paths:
        yield preprocess_image(p, hw, "uint8")[None]


def _output_ranges(float_path: Path, images, hw) -> dict[str, tuple[float, float]]:
    """Mean over images of each output's per-image min / max (the recipe's range rule)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    lows, highs = {n: [] for n in names}, {n: [] for n in names}
    for x in _batches(images, hw):
        for n, v in zip(names, sess.run(names, {"images": x})):
            lows[n].append(float(v.min()))
            highs[n].append(float(v.max()))
    return {n: (float(np.mean(lows[n])), float(np.mean(highs[n]))) for n in names}


def _add_output_quantizers(qdq_path: Path, out_path: Path, scales: dict[str, tuple[float, int]]) -> Path:
    """A copy of ``qdq_path`` whose outputs named in ``scales`` pass through QuantizeLinear/DequantizeLinear (u8)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(qdq_path))
    g = model.graph
    for name, (scale, zp) in scales.items():
        raw = f"{name}_before_output_qdq"
        for node in g.node:
            node.output[:] = [raw if o == name else o for o in node.output]
            node.input[:] = [raw if i == name else i for i in node.input]
        g.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}_out_scale"),
                              numpy_helper.from_array(np.array(zp, np.uint8), f"{name}_out_zp")])
        g.node.extend([helper.make_node("QuantizeLinear", [raw, f"{name}_out_scale", f"{name}_out_zp"], [f"{name}_q"]),
                       helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_out_scale", f"{name}_out_zp"],
                                        [name])])
    onnx.save(model, str(out_path))
    return out_path


def _u8(lo: float, hi: float) -> tuple[float, int]:
    from tools.qdq import activation_qparams

    scale, zp = activation_qparams(lo, hi, "u8", False)
    return float(scale), int(zp)


def build_variants(float_path: Path, calib: Path, num: int, work: Path, head_only: bool) -> dict[str, Path]:
    """The four variants; ``head_only`` keeps every conv outside the box branches float, so the differences from
    the float model are the box branch's quantization alone."""
    import onnx

    from tools.quant_model import branch_outputs, branch_tail_convs
    from tools.quantize import Recipe, quantize_model

    model = onnx.load(str(float_path))
    hw = tuple(json.loads({p.key: p.value for p in model.metadata_props}["imgsz"]))
    quiet = lambda *a, **k: None  # noqa: E731
    owner = branch_outputs(model)
    body = tuple(n.name for n in model.graph.node if n.op_type == "Conv" and not owner.get(n.name, "").startswith("box_")
                 ) if head_only else ()
    ours = quantize_model(float_path, calib, work / "int8-box-tail.onnx",
                          Recipe(num=num, exclude=body, float_box_tails=0), log=quiet).output
    tails = branch_tail_convs(model, 1, ("box_",))
    tail = quantize_model(float_path, calib, work / "float-box-tail.onnx",
                          Recipe(num=num, exclude=body + tuple(tails), float_box_tails=0), log=quiet).output
    from tools.calibration import select_images

    chosen, _ = select_images(calib, num, 0)
    ranges = _output_ranges(float_path, chosen, hw)
    naive = _add_output_quantizers(ours, work / "naive.onnx", {n: _u8(*r) for n, r in ranges.items() if n != "proto"})
    box = {n: r for n, r in ranges.items() if n.startswith("box_")}
    px_hi = max(r[1] * LEVEL_STRIDES[n[4:]] for n, r in box.items())
    px_lo = min(r[0] * LEVEL_STRIDES[n[4:]] for n, r in box.items())
    px_scale, px_zp = _u8(px_lo, px_hi)
    grid = _add_output_quantizers(ours, work / "pixel-grid.onnx",
                                  {n: (px_scale / LEVEL_STRIDES[n[4:]], px_zp) for n in box})
    return {"int8-box-tail": ours, "float-box-tail": tail, "naive": naive, "pixel-grid": grid}


def box_errors(float_path: Path, candidate: Path, images, hw, precision: str | None) -> dict[str, dict[str, float]]:
    """Per level: mean / p99 / max of |distance difference| * stride, all anchors and anchors scoring >= 0.25."""
    import onnxruntime as ort
    import openvino as ov

    ref = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    cand = core.compile_model(str(candidate), "CPU", config)
    names = [o.name for o in ref.get_outputs()]
    errs: dict[str, list] = {lv: [] for lv in LEVEL_STRIDES}
    conf_errs: dict[str, list] = {lv: [] for lv in LEVEL_STRIDES}
    for x in _batches(images, hw):
        want = dict(zip(names, ref.run(names, {"images": x})))
        got_raw = cand(x)
        got = {o.get_any_name(): got_raw[o] for o in cand.outputs}
        for lv, s in LEVEL_STRIDES.items():
            d = np.abs(got[f"box_{lv}"] - want[f"box_{lv}"])[0] * s  # (4, H, W) px
            errs[lv].append(d.reshape(4, -1))
            confident = (1 / (1 + np.exp(-want[f"cls_{lv}"][0].max(0)))).reshape(-1) >= 0.25
            conf_errs[lv].append(d.reshape(4, -1)[:, confident])
    out = {}
    for lv in LEVEL_STRIDES:
        a = np.concatenate(errs[lv], 1).reshape(-1)
        c = np.concatenate(conf_errs[lv], 1).reshape(-1)
        out[lv] = {"mean_px": float(a.mean()), "p99_px": float(np.quantile(a, 0.99)), "max_px": float(a.max()),
                   "confident_mean_px": float(c.mean()) if c.size else None,
                   "confident_p99_px": float(np.quantile(c, 0.99)) if c.size else None, "confident_anchors": int(c.size)}
    return out


def fidelity(float_path: Path, candidate: Path, images, precision: str | None) -> float:
    from tools.eval_coco import make_predictor
    from tools.fidelity import label_free_scores

    ref = make_predictor(float_path)
    cand = make_predictor(candidate, engine="openvino", precision=precision)
    return float(label_free_scores(ref, cand, images)["box"]["mAP50-95"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/quant26_study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--float", dest="float_paths", nargs="+", type=Path, default=None,
                   help="float truncated-head files (default: random-init --cfg exported with both branches)")
    p.add_argument("--cfg", default="yolo26n.yaml")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--calib", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--num", type=int, default=64, help="calibration images")
    p.add_argument("--eval-images", type=int, default=60)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--head-only", action="store_true",
                   help="quantize the box branches alone (the rest float): the box recipe's own error")
    p.add_argument("--box-cells", type=float, nargs=2, default=(4.0, 1.2), metavar=("MEAN", "STD"),
                   help="the random-init model's box distances, in cells (default 4 +- 1.2, a trained-like spread)")
    args = p.parse_args(argv)
    images = _images(args.images, args.eval_images)
    results = {}
    with tempfile.TemporaryDirectory(prefix="quant26-") as tmp:
        work = Path(tmp)
        floats = args.float_paths
        if floats is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            import models26

            from tools.export import export_truncated

            pt = models26.build(args.cfg, work / f"{Path(args.cfg).stem}.pt", args.imgsz, box_cells=args.box_cells)
            floats = [export_truncated(pt, work / f"{Path(args.cfg).stem}-{b}.onnx", imgsz=args.imgsz, nms=nms)
                      for b, nms in (("one2many", None), ("one2one", False))]
        for float_path in floats:
            vdir = work / float_path.stem
            vdir.mkdir()
            hw = (args.imgsz, args.imgsz)
            variants = {"float": float_path, **build_variants(float_path, args.calib, args.num, vdir, args.head_only)}
            for name, path in variants.items():
                for precision in (None, "f32"):
                    key = f"{float_path.stem} {name} openvino-{precision or 'default'}"
                    row = {"fidelity_box_map": fidelity(float_path, path, images, precision),
                           "box_error": box_errors(float_path, path, images, hw, precision)}
                    results[key] = row
                    e = row["box_error"]
                    print(f"{key:55s} fidelity {row['fidelity_box_map']:.4f}  " + "  ".join(
                        f"{lv} mean {e[lv]['mean_px']:.3f} p99 {e[lv]['p99_px']:.3f} max {e[lv]['max_px']:.2f} px"
                        for lv in LEVEL_STRIDES), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
