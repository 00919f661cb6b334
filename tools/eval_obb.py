"""Rotated-box mAP50-95 / mAP50 of oriented-box (obb) models, scored as Ultralytics' OBB validator scores them.

Usage::

    python tools/eval_obb.py --model A.onnx [--model B.onnx ...] --images DIR [--labels DIR]
        [--imgsz 640] [--reference-pt M.pt] [--engine E] [--precision P] [--limit N] [--out report.json]
    python tools/eval_obb.py --fidelity-to FLOAT.onnx --model W8A8.onnx --images DIR [--gt-conf 0.25]

Labels are Ultralytics' OBB format, one ``LABELS/<stem>.txt`` per image (default: the ``labels`` folder beside
an ``images`` folder, as in Ultralytics datasets), one object per line: ``class x1 y1 x2 y2 x3 y3 x4 y4`` with
coordinates normalised to the image size; an image without a file has no objects. Each polygon becomes a
rotated box as Ultralytics' ``xyxyxyxy2xywhr`` makes it (OpenCV's minimum-area rectangle, long side first).

Every model runs through ``runtime.Predictor`` with validation settings (conf 0.001, iou 0.7, max_det 300).
Scoring, in original-image pixels: per image, detections in descending score order each claim the unclaimed
ground-truth box of their class with the highest probabilistic IoU (:func:`runtime.kernels.obb.probiou`), at
each IoU threshold 0.50, 0.55, ..., 0.95 (Ultralytics' ``match_predictions``); per class with ground truth, AP
is the 101-point interpolated area under the precision envelope (its ``ap_per_class``); mAP averages the
classes that have ground truth, mAP50 at 0.50, mAP50-95 over the ten thresholds. As in Ultralytics, perfect
predictions score :data:`PERFECT` = 0.995, not 1.0: the envelope is closed with precision 0 at recall 1, so
the last of the 100 trapezoids counts half. ``--reference-pt`` adds a row
of ``ultralytics.YOLO(pt).predict`` on the same images with the same settings, scored the same way.

``--fidelity-to REF.onnx`` needs no labels: REF's own detections scoring at least ``--gt-conf`` are the ground
truth, and REF's own row, the control, reads 1.0.

Errors about the inputs print one line to stderr and return exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as `python tools/eval_obb.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from runtime.kernels.obb import probiou  # noqa: E402

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0, 1, 101)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VAL_CONF, VAL_IOU, VAL_MAX_DET = 0.001, 0.7, 300
PERFECT = 0.995  # the score of perfect predictions under the 101-point rule
_TRAPEZOID = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz

__all__ = ["EvalError", "ImageBoxes", "evaluate", "main", "match_image", "polygons_to_xywhr", "read_labels",
           "rotated_map"]


class EvalError(Exception):
    """Bad input: a missing folder, an unreadable label line, a model that is not an OBB model."""


@dataclass(frozen=True)
class ImageBoxes:
    """One image's rotated boxes: xywhr (n, 5), class ids (n,), scores (n,) (None for ground truth)."""

    xywhr: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray | None = None

    @classmethod
    def empty(cls) -> "ImageBoxes":
        return cls(np.zeros((0, 5), np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.class_ids)


# ------------------------------------------------------------------------------------------------------ scoring
def polygons_to_xywhr(polygons: np.ndarray) -> np.ndarray:
    """(n, 4, 2) corner points -> (n, 5) rotated boxes: the minimum-area rectangle, width the long side, angle in
    radians within [-pi/4, 3pi/4) (Ultralytics' ``xyxyxyxy2xywhr``)."""
    import cv2

    out = []
    for points in np.asarray(polygons, np.float32).reshape(-1, 4, 2):
        (cx, cy), (w, h), degrees = cv2.minAreaRect(points)
        theta = degrees / 180 * np.pi
        if w < h:
            w, h, theta = h, w, theta + np.pi / 2
        while theta >= 3 * np.pi / 4:
            theta -= np.pi
        while theta < -np.pi / 4:
            theta += np.pi
        out.append([cx, cy, w, h, theta])
    return np.asarray(out, np.float32).reshape(-1, 5)


def match_image(pred: ImageBoxes, truth: ImageBoxes, thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """(n, T) bool: whether each prediction (in the order given: descending score) is a true positive at each
    IoU threshold, each ground-truth box claimed at most once per threshold."""
    correct = np.zeros((len(pred), len(thresholds)), bool)
    if not len(pred) or not len(truth):
        return correct
    iou = probiou(truth.xywhr, pred.xywhr) * (truth.class_ids[:, None] == pred.class_ids[None, :])
    claimed = np.zeros((len(truth), len(thresholds)), bool)
    columns = np.arange(len(thresholds))
    for j in np.flatnonzero((iou >= thresholds.min()).any(0)):
        available = np.where(claimed, 0.0, iou[:, j, None])
        best = available.argmax(0)
        correct[j] = available[best, columns] >= thresholds
        claimed[best, columns] |= correct[j]
    return correct


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """101-point interpolated area under the precision envelope (COCO's rule)."""
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    return float(_TRAPEZOID(np.interp(RECALL_POINTS, mrec, mpre), RECALL_POINTS))


def rotated_map(preds: Sequence[ImageBoxes], truths: Sequence[ImageBoxes]) -> dict:
    """mAP50-95, mAP50, the (classes, 10) AP table and the classes that have ground truth, over paired images."""
    if len(preds) != len(truths):
        raise EvalError(f"{len(preds)} prediction sets for {len(truths)} images")
    tps, confs, pred_cls = [np.zeros((0, len(IOU_THRESHOLDS)), bool)], [np.zeros(0)], [np.zeros(0, np.int64)]
    for pred, truth in zip(preds, truths):
        order = np.argsort(-pred.scores, kind="stable")
        ranked = ImageBoxes(pred.xywhr[order], pred.class_ids[order], pred.scores[order])
        tps.append(match_image(ranked, truth))
        confs.append(ranked.scores.astype(np.float64))
        pred_cls.append(ranked.class_ids.astype(np.int64))
    tp, conf, cls = np.concatenate(tps), np.concatenate(confs), np.concatenate(pred_cls)
    target = np.concatenate([t.class_ids for t in truths] + [np.zeros(0, np.int64)]).astype(np.int64)
    order = np.argsort(-conf)  # as Ultralytics sorts (not stable), so ties fall the same way
    tp, conf, cls = tp[order], conf[order], cls[order]
    classes, counts = np.unique(target, return_counts=True)
    ap = np.zeros((len(classes), len(IOU_THRESHOLDS)))
    for k, (c, n_truth) in enumerate(zip(classes, counts)):
        mine = cls == c
        if not mine.any():
            continue
        true_pos = tp[mine].cumsum(0)
        false_pos = (1 - tp[mine]).cumsum(0)
        recall = true_pos / (n_truth + 1e-16)
        precision = true_pos / (true_pos + false_pos)
        for t in range(len(IOU_THRESHOLDS)):
            ap[k, t] = _average_precision(recall[:, t], precision[:, t])
    return {"map50_95": float(ap.mean()) if len(ap) else 0.0, "map50": float(ap[:, 0].mean()) if len(ap) else 0.0,
            "ap": ap, "classes": classes.tolist(), "images": len(truths), "objects": int(len(target)),
            "detections": int(len(conf))}


# ------------------------------------------------------------------------------------------------------- data
def read_labels(path: Path, hw: tuple[int, int]) -> ImageBoxes:
    """The objects of one label file (missing file: none), in pixels of an image of ``hw``."""
    if not path.is_file():
        return ImageBoxes.empty()
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise EvalError(f"{path}:{n}: not numbers: {line.strip()[:60]!r}") from None
        if len(values) != 9 or values[0] != int(values[0]) or values[0] < 0:
            raise EvalError(f"{path}:{n}: expected 'class x1 y1 x2 y2 x3 y3 x4 y4', got {len(values)} values")
        rows.append(values)
    if not rows:
        return ImageBoxes.empty()
    table = np.asarray(rows, np.float64)
    points = table[:, 1:].reshape(-1, 4, 2) * np.array([hw[1], hw[0]], np.float64)
    return ImageBoxes(polygons_to_xywhr(points), table[:, 0].astype(np.int64))


def list_images(images: Path, limit: int | None) -> list[Path]:
    if not images.is_dir():
        raise EvalError(f"{images}: no such image folder")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EvalError(f"{images}: no images")
    return files[:limit] if limit else files


def default_labels(images: Path) -> Path:
    """``.../images/...`` -> ``.../labels/...`` (Ultralytics' layout), else ``labels`` beside the folder."""
    parts = list(images.resolve().parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        return Path(*parts[:i], "labels", *parts[i + 1:])
    return images.parent / "labels"


# ------------------------------------------------------------------------------------------------------ models
def _ours(model: str, images: list[Path], imgsz, engine: str | None, precision: str | None, conf: float):
    from runtime import Predictor

    options = {k: v for k, v in (("engine", engine), ("precision", precision)) if v is not None}
    predictor = Predictor(model, conf=conf, iou=VAL_IOU, max_det=VAL_MAX_DET, imgsz=imgsz, **options)
    if predictor.model.spec.task != "obb":
        raise EvalError(f"{model}: a {predictor.model.spec.task} model, not an oriented-box (obb) model")
    out, hws = [], []
    for image in images:
        r = predictor.predict(str(image))[0]
        out.append(ImageBoxes(r.xywhr, r.class_ids.astype(np.int64), r.scores))
        hws.append(r.orig_hw)
    spec = predictor.model.spec
    return out, hws, (imgsz or spec.imgsz, spec.input_hw is None)


def _ultralytics(pt: str, images: list[Path], imgsz, rect: bool, conf: float) -> list[ImageBoxes]:
    """Ultralytics' predict with the letterbox the first model used (its size; minimal padding only when the
    model takes any size)."""
    from ultralytics import YOLO

    model = YOLO(pt)
    out = []
    for image in images:
        r = model.predict(str(image), conf=conf, iou=VAL_IOU, max_det=VAL_MAX_DET, imgsz=list(np.atleast_1d(imgsz)),
                          rect=rect, verbose=False)[0]
        out.append(ImageBoxes(r.obb.xywhr.numpy(), r.obb.cls.numpy().astype(np.int64), r.obb.conf.numpy()))
    return out


def evaluate(models: Sequence[str], images: Path, labels: Path | None = None, *, imgsz=None,
             reference_pt: str | None = None, fidelity_to: str | None = None, gt_conf: float = 0.25,
             engine: str | None = None, precision: str | None = None, limit: int | None = None) -> list[dict]:
    """One row per model (and the Ultralytics reference or the fidelity control): name, mAP50-95, mAP50,
    images, objects, detections, seconds."""
    files = list_images(images, limit)
    rows = []
    if fidelity_to:
        reference, _, letterbox = _ours(fidelity_to, files, imgsz, engine, precision, VAL_CONF)
        truths = [ImageBoxes(p.xywhr[p.scores >= gt_conf], p.class_ids[p.scores >= gt_conf]) for p in reference]
        rows.append({"name": f"{Path(fidelity_to).name} (control)", **_row(rotated_map(reference, truths))})
    else:
        labels = labels or default_labels(images)
        truths = None
    for model in models:
        t0 = time.perf_counter()
        preds, hws, letterbox = _ours(model, files, imgsz, engine, precision, VAL_CONF)
        seconds = time.perf_counter() - t0
        if truths is None:
            truths = [read_labels(labels / f"{f.stem}.txt", hw) for f, hw in zip(files, hws)]
        rows.append({"name": Path(model).name, **_row(rotated_map(preds, truths)), "seconds": round(seconds, 2)})
    if reference_pt:
        t0 = time.perf_counter()
        preds = _ultralytics(reference_pt, files, *letterbox, VAL_CONF)
        rows.append({"name": f"{Path(reference_pt).name} (ultralytics)", **_row(rotated_map(preds, truths)),
                     "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def _row(scores: dict) -> dict:
    return {k: scores[k] for k in ("map50_95", "map50", "images", "objects", "detections")}


def format_table(rows: list[dict]) -> str:
    width = max([len("model")] + [len(r["name"]) for r in rows])
    lines = [f"{'model':<{width}} {'mAP50-95':>9} {'mAP50':>7} {'images':>7} {'objects':>8} {'dets':>7}"]
    for r in rows:
        lines.append(f"{r['name']:<{width}} {r['map50_95']:9.4f} {r['map50']:7.4f} {r['images']:7d} {r['objects']:8d} "
                     f"{r['detections']:7d}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/eval_obb.py", description="Rotated-box mAP of oriented-box models "
                                "(probabilistic IoU, as Ultralytics' OBB validator), or label-free fidelity.")
    p.add_argument("--model", action="append", required=True, metavar="ONNX", help="model to score (repeatable)")
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of the images")
    p.add_argument("--labels", type=Path, default=None, metavar="DIR",
                   help="folder of the OBB label files (default: the labels folder beside images)")
    p.add_argument("--fidelity-to", default=None, metavar="REF", help="score against REF's own detections")
    p.add_argument("--gt-conf", type=float, default=0.25, help="REF's detections from this score are ground truth")
    p.add_argument("--imgsz", type=int, nargs="+", default=None, metavar="N", help="letterbox size (default: model's)")
    p.add_argument("--reference-pt", default=None, metavar="PT", help="add a row of Ultralytics' predict of PT")
    p.add_argument("--engine", default=None, help="inference engine for runtime.Predictor")
    p.add_argument("--precision", default=None, help="engine precision for runtime.Predictor")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N images only")
    p.add_argument("--out", type=Path, default=None, metavar="JSON", help="write the rows here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.errors import InputError, ModelError

    imgsz = None if args.imgsz is None else (args.imgsz[0] if len(args.imgsz) == 1 else tuple(args.imgsz))
    try:
        rows = evaluate(args.model, args.images, args.labels, imgsz=imgsz, reference_pt=args.reference_pt,
                        fidelity_to=args.fidelity_to, gt_conf=args.gt_conf, engine=args.engine,
                        precision=args.precision, limit=args.limit)
    except (EvalError, ModelError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
