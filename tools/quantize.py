"""Post-training W8A8 quantization of a truncated-head YOLO ONNX (static calibration on real images, QDQ ONNX out).

Usage::

    python tools/quantize.py FLOAT.onnx --calib DIR [--target openvino|onnxruntime] [--num N] [--seed S]
                             [recipe options: --help lists them] [--sensitivity] [--auto-exclude K]
                             [--report DIR] [--cache-dir DIR] [--threads N] [-o OUT.onnx]

Library::

    from tools.quantize import Recipe, quantize_model
    result = quantize_model("yolo11n-pose.onnx", "calib_images/", "yolo11n-pose-w8a8.onnx", Recipe())

Steps: calibration images drawn reproducibly (``--seed``) from ``--calib`` and letterboxed exactly as the Predictor
does (``tools/calibration.py``); statistics of the float model over them; the QDQ model of the recipe
(``tools/recipe.py``: the openvino layout of ``tools/qdq.py`` or onnxruntime's ``quantize_static``); optionally the
sensitivity analysis (``tools/sensitivity.py``) and the report (``tools/quant_report.py``). The output keeps the
float model's metadata and adds ``quantization`` (JSON, with ``target_engine``). It is written to a temporary file
and renamed into place, so a failed run never leaves a half-written model. Errors print one line and exit with 2.

The file's metadata says which engine it was made for (``quantization.target_engine``); ``Predictor`` and the CLI run
it there by default. Each engine also runs the other's file with the same accuracy, but slower: onnxruntime computes
the openvino layout's convs in float (slower than the float model; the Predictor warns).

onnxruntime target (``--target onnxruntime``; yolo11n-pose, same calibration; box / OKS mAP50-95 computed by
onnxruntime on the first 150 images of the pose set, float 0.7805 / 0.6337, then the whole set for the chosen one):

================================================================================  ======  ======
recipe (quantize_static QDQ, u8 asym activations, SiLU inputs clipped at -7)      box     OKS
================================================================================  ======  ======
every head branch float (the previous default; 1.25x onnxruntime float)           0.7767  0.6248
  + one scale per concat / split / slice / pool / resize group                    0.7768  0.6276
every conv int8 but the keypoint branches' last two, shared scales                0.6784  0.4605
  (u8 outputs; all 495 images, float 0.7666 / 0.5827)
  + the output convs float                                                        0.7749  0.5989
  + the SiLU of each keypoint branch's first conv float                           0.7749  0.6098
  + class branches float                                                          0.7749  0.6062
  + class and box branches float                                                  0.7768  0.6063
output convs and keypoint branches' last two convs float, with their SiLUs        0.7749  0.6162
output convs and whole keypoint branches float, with their SiLUs (default)        0.7749  0.6302
================================================================================  ======  ======

Two things decide it. onnxruntime quantizes every tensor, the outputs included: u8 DFL logits and keypoints lose 8
box / 12 OKS points, so the output convs stay float. And quantize_static still rounds the SiLU of a conv it leaves
float, so a float conv keeps its SiLU float; with that, the keypoint branch's middle tensor (the one the openvino
layout keeps float too) is unrounded.

The default over the whole sets (float: pose 0.7666 / 0.5827 box / OKS, yolov8n-seg 0.3674 / 0.3085 box / mask on the
164 val2017 images, yolov8n 0.3698 box), seeds 0 / 1 / 2, computed by onnxruntime:

* yolo11n-pose: box 0.7631 / 0.7638 / 0.7639, OKS 0.5772 / 0.5723 / 0.5751 (-0.27 to -0.35 box, -0.55 to -1.04 OKS
  points; spread 0.08 / 0.49);
* yolov8n-seg: box 0.3658 / 0.3655 / 0.3647, mask 0.3051 / 0.3051 / 0.3033 (-0.16 to -0.27, -0.34 to -0.52);
* yolov8n (seed 0): box 0.3626 (-0.72).

Bias correction (``--bias-correction``, on quantize_static's weight grid) moves pose to box 0.7622 / 0.7630 / 0.7608,
OKS 0.5795 / 0.5776 / 0.5775 (OKS -0.32 to -0.52: better than the spread; box -0.36 to -0.58), yolov8n to 0.3646, but
yolov8n-seg's masks to 0.3029 / 0.3003 / 0.3016 (-0.56 to -0.82, worse on every seed); corrected in the body only,
the masks lose as much (0.3022 / 0.3014 / 0.3009). It stays an option. Where the time goes
(``python bench/ort_profile.py``): QLinearConv about a third, the float keypoint / mask-coefficient branches a fifth
(their first convs run at P3), QLinearSigmoid + QLinearMul a fifth. Speed against onnxruntime float inference
(``bench/latency.py --baseline``, batch 1, 640): yolo11n-pose 1.63x, yolov8n-seg 2.06x.

OpenVINO target (the default). Recipe comparison (yolo11n-pose, real float weights; calibration on
../shared/coco/train2017, 256 images, seed 0 unless stated; person box / keypoint OKS mAP50-95 on the 495 images of
../shared/coco/val2017-pose with ``tools/eval_coco.py --engine openvino``; float 0.7666 / 0.5827; OpenVINO latency at
batch 1, 640, on a 2-vCPU AMD EPYC with AVX-512 VNNI, relative to NNCF's file in alternating rounds):

=============================================================================  ======  ======  =========
recipe                                                                          box     OKS    latency
=============================================================================  ======  ======  =========
conv-input QDQ (a quantizer on each conv input), pc, u8 asym, bc, the head's   0.7687  0.5858  1.25-1.3x
  branches float (the previous default)
quantizers where activations are computed, one scale per concat (the layout    0.7665  0.5634  0.95x
  of tools/qdq.py), every conv int8
  + the keypoint branches float                                                0.7665  0.5782  1.05-1.1x
  + the box, class and keypoint branches float                                 0.7680  0.5801
  + only each keypoint branch's last conv float                                0.7665  0.5662
  + only its first conv float                                                  0.7665  0.5654
  + its first two convs float                                                  0.7665  0.5803
  + its last two convs float (default; seeds 0 / 1 / 2)                        0.7665  0.5780  1.0-1.05x
                                                                               0.7662  0.5776
                                                                               0.7653  0.5786
  same, concat inputs with their own scales (concats requantize)               0.7668  0.5805  1.2-1.3x
  same, minmax ranges instead of the mean of per-image min / max               0.7639  0.5762
NNCF INT8 via Ultralytics' OpenVINO export (all 318 train2017 images)          0.7628  0.5665  1.0x
=============================================================================  ======  ======  =========

The default over seeds 0-2 loses 0.01-0.13 box points and 0.41-0.51 OKS points (a spread of 0.12 / 0.10), and
is 0.25-0.37 box / 1.1-1.2 OKS points above NNCF. What decides the accuracy is the input of each keypoint branch's
middle conv: rounding it costs 1.4 OKS points (first-two vs last-conv rows), rounding the other keypoint tensors
almost nothing; the box and class branches quantize for free. What decides the speed is where the quantizers sit:
on conv inputs, OpenVINO keeps the C2f splits and concats in bf16 and adds about 80 reorders and 35 standalone
quantizers (1.25x slower); on the computed tensors, with one scale per concat, everything between two convs runs
in int8, as in NNCF's file. The two remaining float convs per level (bf16) cost about 5%. On the int8-grid
checkpoints (val2017 subset, 164 images; float through onnxruntime / W8A8 through OpenVINO, seeds 0 / 1 / 2):
yolov8n box 0.3698 -> 0.3664 / 0.3695 / 0.3721; yolov8n-seg box 0.3674 -> 0.3687 / 0.3699 / 0.3708, mask 0.3085 ->
0.3095 / 0.3067 / 0.3077 (164 images move mAP by +-0.3-0.5 points between draws). s8 symmetric activations cost 1.3
box points on yolov8n in the previous layout, u8 asymmetric none.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # `python tools/quantize.py` puts tools/ first on sys.path: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.calibration import CalibrationImages, load_or_calibrate, preprocess_image, select_images
from tools.quant_model import (ModelInfo, QuantizeError, conv_groups, finalize_model, head_nodes, inspect_float_model,
                               prepare_model)
from tools.recipe import (DEFAULT_RECIPE, Recipe, add_recipe_arguments, calibrate_model, quantization_settings,
                          recipe_from_args)

LOGGER = logging.getLogger("quantize")

__all__ = ["CalibrationImages", "DEFAULT_RECIPE", "ModelInfo", "QuantizeError", "QuantizeResult", "Recipe",
           "calibrate_model", "conv_groups", "head_nodes", "inspect_float_model", "load_or_calibrate", "main",
           "prepare_model", "preprocess_image", "quantize_model", "select_images"]


@dataclass
class QuantizeResult:
    output: Path
    recipe: Recipe  # with the auto-excluded nodes added to ``exclude``
    settings: dict[str, Any]
    calibration_images: list[Path]
    held_back_images: list[Path]
    sensitivity: Any = None
    report: dict[str, Any] | None = None


def quantize_model(float_path: str | Path, calib_dir: str | Path, out_path: str | Path, recipe: Recipe = DEFAULT_RECIPE,
                   *, cache_dir: str | Path | None = None, report_dir: str | Path | None = None,
                   sensitivity: bool = False, sensitivity_images: int = 6, report_images: int = 8,
                   threads: int | None = 1, top: int = 10, log=print) -> QuantizeResult:
    """Quantize ``float_path`` with ``recipe`` and write ``out_path`` (atomically). Returns what was done.

    ``recipe.auto_exclude`` (or ``sensitivity``) runs the per-group sensitivity analysis on held-back images with the
    same statistics; the K most sensitive Conv+SiLU groups stay float. ``report_dir`` writes report.md/.json.
    ``cache_dir`` keeps calibration statistics across runs (keyed by model, method, images and size).
    """
    recipe.validate()
    info = inspect_float_model(float_path)
    out = Path(out_path)
    if out.resolve() == info.path.resolve():
        raise QuantizeError(f"{out}: output would overwrite the float model")
    chosen, held = select_images(calib_dir, recipe.num, recipe.seed)
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        ws = Path(tmp)
        LOGGER.info("%s: %d calibration images (seed %d), %d held back; recipe %s", info.path, len(chosen),
                    recipe.seed, len(held), recipe.label())
        calibrated = calibrate_model(info, chosen, recipe, ws, cache_dir)
        # images for measuring errors: held back from calibration (fall back to calibration images if none)
        eval_pool = held or chosen
        if not held:
            LOGGER.warning("no held-back images (all %d used for calibration): errors are measured on calibration "
                           "images", len(chosen))
        sens = None
        k = recipe.auto_exclude
        if sensitivity or k:
            from tools.sensitivity import run_sensitivity

            sens = run_sensitivity(calibrated, recipe, info, eval_pool[:max(1, sensitivity_images)], ws,
                                   threads=threads, log=log)
            if log:
                log(sens.format_table(top))
            if k:
                extra = [n for g in sens.top_groups(k) for n in g.nodes if n not in recipe.exclude]
                if log:
                    log(f"auto-exclude: keeping float {', '.join(g.name for g in sens.top_groups(k))}")
                recipe = replace(recipe, exclude=tuple(recipe.exclude) + tuple(extra))
        qdq = calibrated.build(recipe, ws / "qdq.onnx")
        settings = quantization_settings(recipe, info, len(chosen), calibrated.model_path)
        if sens is not None and k:
            settings["auto_exclude"] = {"k": k, "groups": [g.name for g in sens.top_groups(k)]}
        report = None
        if report_dir:
            # build the final model into the workspace, measure, then move both into place
            staged = finalize_model(qdq, info, settings, ws / "final.onnx")
            from tools.quant_report import build_report, write_report

            report = build_report(info.path, staged, calibrated.model_path, eval_pool[:max(1, report_images)], info,
                                  settings=settings, threads=threads, sensitivity=sens, auto_exclude=k,
                                  baseline_qdq=sens.baseline_model if (sens is not None and k) else None)
            report["quantized_model"] = str(out)
            finalize_model(staged, info, settings, out)
            write_report(report, report_dir)
            if log:
                log(f"report: {Path(report_dir) / 'report.md'}")
        else:
            finalize_model(qdq, info, settings, out)
    return QuantizeResult(out, recipe, settings, chosen, held, sens, report)


# ----------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quantize.py",
        description="W8A8 post-training quantization (static calibration, QDQ ONNX) of a truncated-head YOLO ONNX.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="float truncated-head ONNX written by tools/export.py")
    p.add_argument("--calib", required=True, help="folder of calibration images (never the evaluation images)")
    add_recipe_arguments(p)
    p.add_argument("--sensitivity", action="store_true",
                   help="per-group sensitivity analysis: how much the outputs improve when one group stays float")
    p.add_argument("--sensitivity-images", type=int, default=6, help="held-back images used by the sensitivity analysis")
    p.add_argument("--top", type=int, default=10, help="groups to print from the sensitivity analysis")
    p.add_argument("-o", "--output", help="output path (default: FLOAT-w8a8.onnx next to the input)")
    p.add_argument("--report", metavar="DIR",
                   help="write report.md + report.json (task metrics, per-branch and per-tensor errors, speed)")
    p.add_argument("--report-images", type=int, default=8, help="held-back images used by the report")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime threads for the measurements (1: stable timings on a shared machine)")
    p.add_argument("--cache-dir", help="keep / reuse calibration statistics here (keyed by model, method, images)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    LOGGER.setLevel(logging.INFO)
    if not LOGGER.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(h)
        LOGGER.propagate = False
    try:
        return _run(args)
    except QuantizeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    model = Path(args.model)
    out = Path(args.output) if args.output else model.with_name(model.stem + "-w8a8.onnx")
    recipe = recipe_from_args(args, args.exclude)
    res = quantize_model(model, args.calib, out, recipe, cache_dir=args.cache_dir, report_dir=args.report,
                         sensitivity=args.sensitivity, sensitivity_images=args.sensitivity_images,
                         report_images=args.report_images, threads=args.threads, top=args.top)
    size_f, size_q = model.stat().st_size, out.stat().st_size
    print(f"{out} ({size_q / 1e6:.1f} MB, {100 * size_q / size_f:.0f}% of float): {res.recipe.label()}, "
          f"{len(res.calibration_images)} calibration images, {len(res.settings['excluded_nodes'])} nodes float")
    print(f"made for {recipe.target} (the engine Predictor and the CLI pick for it by default); run it with:\n"
          f"  python -m runtime.infer IMAGES --model {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
