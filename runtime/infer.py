"""Command line: ``python -m runtime.infer PATH... --model M.onnx``.

Prints one line per image (file, size, detections per class, ms per stage), saves annotated
images, and optionally writes the results as COCO-style JSON with RLE masks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from .coco import result_to_coco
from .draw import annotate
from .engine import DEFAULT_ENGINE, ENGINES, EXPORT_HINT
from .errors import InputError, ModelError, YoloRuntimeError
from .files import atomic_write_bytes, atomic_write_json
from .predictor import Predictor

STAGES = (("preprocess", "pre"), ("inference", "infer"), ("decode", "decode"), ("nms", "nms"), ("masks", "masks"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.infer",
        description="Detect (and segment) objects in images with a YOLOv8 ONNX model.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders of images")
    parser.add_argument("--model", "-m", type=Path,
                        help="ONNX model (float or W8A8); default: the only *.onnx in the current folder")
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold, keep score > conf (default 0.25)")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    parser.add_argument("--imgsz", type=int, nargs="+", metavar="N",
                        help="letterbox size, N or H W (default: the model's own size)")
    parser.add_argument("--classes", type=int, nargs="+", metavar="ID", help="keep only these class ids")
    parser.add_argument("--max-det", type=int, default=300, help="most detections per image (default 300)")
    parser.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--batch", type=int, default=None, help="images per inference call (dynamic-batch models)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    parser.add_argument("--engine", choices=list(ENGINES), default=DEFAULT_ENGINE,
                        help=f"inference engine (default {DEFAULT_ENGINE}; openvino needs "
                             '`pip install "yolo-edge-runtime[openvino]"`)')
    parser.add_argument("--precision", default=None, metavar="P",
                        help="inference precision: f32, bf16 or f16 (default: the engine's own; OpenVINO picks "
                             "bf16 on CPUs that have it, onnxruntime runs f32)")
    parser.add_argument("--device", default=None,
                        help="OpenVINO device: CPU (default), GPU, NPU or AUTO")
    parser.add_argument("--save-dir", type=Path, default=Path("runs/infer"),
                        help="folder for annotated images and JSON (default runs/infer)")
    parser.add_argument("--no-save", action="store_true", help="do not write annotated images")
    parser.add_argument("--json", nargs="?", const="predictions.json", default=None, metavar="FILE",
                        help="also write COCO-style results (boxes xywh, RLE masks) to FILE, "
                             "relative to --save-dir (default name predictions.json)")
    return parser


def find_model(model: Path | None) -> Path:
    """The model to use: the one given, or the only .onnx in the current folder."""
    if model is not None:
        if not model.is_file():
            raise ModelError(f"{model}: model file not found; {EXPORT_HINT}")
        return model
    candidates = sorted(Path.cwd().glob("*.onnx"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelError(f"no --model given and no .onnx file in {Path.cwd()}; {EXPORT_HINT}")
    raise ModelError(f"no --model given and several .onnx files here ({', '.join(p.name for p in candidates)}); "
                     "pick one with --model")


def format_line(result, name: str) -> str:
    h, w = result.orig_hw
    counts = ", ".join(f"{n} {c}" for c, n in result.counts().items()) or "no detections"
    stages = ", ".join(f"{short} {result.speed_ms[key]:.1f}" for key, short in STAGES if key in result.speed_ms)
    return f"{name} {w}x{h}: {counts} | ms: {stages}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = find_model(args.model)
        predictor = Predictor(model, conf=args.conf, iou=args.iou, max_det=args.max_det, classes=args.classes,
                              agnostic=args.agnostic, imgsz=args.imgsz, threads=args.threads, batch=args.batch,
                              retina_masks=True, engine=args.engine, precision=args.precision, device=args.device)
        records = []
        names_seen: set[str] = set()
        for index, (result, image) in enumerate(predictor.stream_with_images(args.paths)):
            name = Path(result.path).name if result.path else f"image{index}"
            print(format_line(result, name), flush=True)
            if not args.no_save:
                stem, suffix = Path(name).stem, Path(name).suffix or ".jpg"
                if name in names_seen:
                    stem = f"{stem}_{index}"
                names_seen.add(name)
                ok, encoded = cv2.imencode(suffix, annotate(image, result))
                if not ok:
                    raise InputError(f"{name}: cannot encode annotated image as {suffix}")
                atomic_write_bytes(args.save_dir / f"{stem}{suffix}", encoded.tobytes())
            if args.json:
                records.extend(result_to_coco(result, name, with_names=True))
        if args.json:
            out = atomic_write_json(args.save_dir / args.json, records)
            print(f"wrote {len(records)} detections to {out}")
        if not args.no_save:
            print(f"annotated images in {args.save_dir}")
        return 0
    except YoloRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
