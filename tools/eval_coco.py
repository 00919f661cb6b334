"""COCO mAP of one or more exported models (and optionally Ultralytics' own predict of a .pt), in one table.

Usage::

    python tools/eval_coco.py --model A.onnx [--model B.onnx ...] --images DIR --ann INSTANCES.json
        [--imgsz 640] [--batch N] [--reference-pt M.pt] [--out report.json] [--save-results DIR]
        [--multi-label] [--limit N] [--skip-missing] [--threads N]

Every model runs through ``runtime.Predictor`` with validation settings (conf 0.001, iou 0.7,
max_det 300, single-label NMS unless ``--multi-label``; segment masks as RLE at original
resolution). Model classes are mapped to the annotation file's categories by name. Results are
scored with pycocotools' COCOeval (bbox, and segm for segment models) over exactly the evaluated
image ids. ``--reference-pt`` adds a row from ``ultralytics.YOLO(pt).predict`` with the same
settings and the same letterbox as the first model, timed the same way.

Library (used by the tests and the quantization tool)::

    from tools.eval_coco import make_predictor, evaluate_predictor, score_results, coco_ground_truth
    ann = load_annotations("instances_val2017.json")
    sel = select_images(ann, "val2017", limit=50)
    pred = make_predictor("yolov8n-seg.onnx")
    run = evaluate_predictor(pred, sel.images, category_map(pred.names, ann.categories))
    scores = score_results(coco_ground_truth(ann), run.records, sel.image_ids, ("bbox", "segm"))

Errors about the inputs print one line to stderr and return exit code 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

if __package__ in (None, ""):  # run as `python tools/eval_coco.py`: make `tools` and `runtime` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.coco_data import (  # noqa: E402
    CocoAnnotations,
    EvalError,
    ImageRecord,
    ImageSelection,
    category_map,
    file_sha256,
    load_annotations,
    select_images,
)

# Validation settings (Ultralytics' `yolo val` thresholds). Single-label NMS unless asked otherwise.
VAL_CONF = 0.001
VAL_IOU = 0.7
VAL_MAX_DET = 300

# The 12 numbers of COCOeval.summarize(), in order.
STAT_NAMES = ("mAP50-95", "mAP50", "mAP75", "mAP50-95_small", "mAP50-95_medium", "mAP50-95_large",
              "AR1", "AR10", "AR100", "AR100_small", "AR100_medium", "AR100_large")
IOU_TYPES = {"bbox": "box", "segm": "mask"}

__all__ = [
    "VAL_CONF", "VAL_IOU", "VAL_MAX_DET", "CocoScores", "ModelRun", "ProgressBar", "category_map",
    "coco_ground_truth", "evaluate_predictor", "evaluate_reference", "format_table", "main", "make_predictor",
    "score_results",
]


# ----------------------------------------------------------------------------------------------------- progress
class ProgressBar:
    """A small stderr progress bar: redrawn in place on a terminal, a line every ``log_every_s`` otherwise."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool = True,
                 width: int = 28, log_every_s: float = 10.0) -> None:
        self.total, self.label, self.width = max(int(total), 0), label, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval = 0.1 if self.tty else log_every_s
        self.count = 0
        self.start = time.perf_counter()
        self._last_draw = self.start

    def _line(self) -> str:
        frac = self.count / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        elapsed = time.perf_counter() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        return (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {self.count}/{self.total} "
                f"{elapsed:.1f}s {rate:.1f} img/s")

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.perf_counter()
        if self.enabled and now - self._last_draw >= self.min_interval and self.count < self.total:
            self._last_draw = now
            self.stream.write(("\r" + self._line()) if self.tty else self._line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write(("\r" + self._line() + "\n") if self.tty else self._line() + "\n")
            self.stream.flush()


def _timed(iterable: Iterable, clock: list[float]) -> Iterator:
    """Yield from ``iterable``, adding the seconds spent producing each item to ``clock[0]``.

    Only the producer's time counts (reading, preprocessing, inference, postprocessing), not what
    the consumer does with the items (COCO conversion), for our model and the reference alike.
    """
    it = iter(iterable)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            clock[0] += time.perf_counter() - t0
            return
        clock[0] += time.perf_counter() - t0
        yield item


# ----------------------------------------------------------------------------------------------------- model runs
@dataclass
class ModelRun:
    """COCO result records of one model over a set of images, and how long producing them took.

    ``records`` are COCO result dicts (image_id, category_id, bbox xywh, score[, segmentation RLE
    with str counts]); ``seconds`` is the time spent inside the predict loop (after one untimed
    warm-up image); ``speed_ms`` the mean per-image stage times the model reported.
    """

    label: str
    kind: str  # "onnx" or "ultralytics"
    task: str
    records: list[dict]
    num_images: int
    seconds: float
    category_ids: list[int]
    model: dict[str, Any] = field(default_factory=dict)  # file, path, sha256, input size, letterbox mode
    speed_ms: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def iou_types(self) -> tuple[str, ...]:
        return ("bbox", "segm") if self.task == "segment" else ("bbox",)


def make_predictor(model: str | Path, *, imgsz: int | Sequence[int] | None = None, batch: int | None = None,
                   threads: int | None = None, multi_label: bool = False, providers: Sequence[str] | None = None):
    """A runtime.Predictor with validation settings: conf 0.001, iou 0.7, max_det 300, RLE masks at original size.

    Raises runtime.ModelError for a missing or unusable model file.
    """
    from runtime import Predictor

    return Predictor(model, conf=VAL_CONF, iou=VAL_IOU, max_det=VAL_MAX_DET, imgsz=imgsz, threads=threads,
                     providers=providers, batch=batch, multi_label=multi_label, rle_masks=True)


def evaluate_predictor(predictor, images: Sequence[ImageRecord], category_ids: Sequence[int], *,
                       label: str | None = None, progress: bool | ProgressBar = False,
                       warmup: bool = True) -> ModelRun:
    """Run ``predictor`` over ``images`` and convert each Result to COCO result records.

    ``category_ids[class_index]`` is the COCO category id of each model class (see
    :func:`tools.coco_data.category_map`). Segment models must produce native-resolution masks
    (``rle_masks=True`` or ``retina_masks=True``, as :func:`make_predictor` does). ``warmup`` runs
    the first image once, untimed, so that one-off session costs do not count in images/s.
    """
    from runtime.coco import result_to_coco

    spec = predictor.spec
    label = label or Path(spec.path).name
    if len(category_ids) != len(spec.names):
        raise ValueError(f"{label}: {len(category_ids)} category ids for a model with {len(spec.names)} classes")
    paths = [str(rec.path) for rec in images]
    bar = progress if isinstance(progress, ProgressBar) else ProgressBar(len(paths), label, enabled=bool(progress))
    if warmup and paths:
        predictor.predict(paths[0])
    clock = [0.0]
    records: list[dict] = []
    stage_sums: dict[str, float] = {}
    count = 0
    for rec, result in zip(images, _timed(predictor.stream(paths), clock)):
        if result.path is not None and Path(result.path) != rec.path:
            raise RuntimeError(f"{label}: results out of order ({result.path} for {rec.path})")
        records.extend(result_to_coco(result, rec.image_id, category_ids))
        for stage, ms in result.speed_ms.items():
            stage_sums[stage] = stage_sums.get(stage, 0.0) + float(ms)
        count += 1
        bar.update()
    bar.close()
    if count != len(images):
        raise RuntimeError(f"{label}: {count} results for {len(images)} images")
    model_info = {
        "file": Path(spec.path).name,
        "path": str(Path(spec.path).resolve()),
        "sha256": file_sha256(spec.path),
        "layout": spec.layout,
        "exported_from": spec.metadata.get("source"),
        "exported_from_sha256": spec.metadata.get("source_sha256"),
        "classes": len(spec.names),
        "input_hw": list(spec.input_hw) if spec.input_hw else None,
        "imgsz": list(predictor.imgsz),
        "letterbox": _letterbox_mode(spec.input_hw is None and predictor.rect),
        "batch": predictor.batch,
    }
    return ModelRun(label, "onnx", spec.task, records, count, clock[0], list(category_ids), model_info,
                    {k: v / max(count, 1) for k, v in stage_sums.items()})


def _letterbox_mode(rect: bool) -> str:
    return "rect (minimal padding to a stride multiple)" if rect else "square (padded to the full input size)"


# ------------------------------------------------------------------------------------------ Ultralytics reference
def load_reference(pt_path: str | Path, categories: Sequence[dict]):
    """Load ``YOLO(pt_path)`` (imports ultralytics here only) and map its classes; returns (model, category_ids)."""
    pt = Path(pt_path)
    if not pt.is_file():
        raise EvalError(f"{pt}: reference checkpoint not found")
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise EvalError(f"--reference-pt needs ultralytics (pip install ultralytics): {exc}") from exc
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = YOLO(str(pt))
    except Exception as exc:  # ultralytics raises many kinds for a bad checkpoint
        raise EvalError(f"{pt}: cannot be loaded by ultralytics ({type(exc).__name__}: {_first_line(exc)})") from exc
    if model.task not in ("detect", "segment"):
        raise EvalError(f"{pt}: task '{model.task}' cannot be scored against COCO instances (detect or segment only)")
    return model, category_map(model.names, categories, model_label=str(pt))


@contextlib.contextmanager
def _ultralytics_multi_label(enabled: bool) -> Iterator[None]:
    """Make Ultralytics' predict use multi-label NMS (its validator's mode; predict has no switch for it)."""
    if not enabled:
        yield
        return
    from ultralytics.utils import nms as nms_module

    original = nms_module.non_max_suppression

    def multi_label_nms(*args, **kwargs):
        kwargs["multi_label"] = True
        return original(*args, **kwargs)

    nms_module.non_max_suppression = multi_label_nms
    try:
        yield
    finally:
        nms_module.non_max_suppression = original


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate_reference(model, category_ids: Sequence[int], images: Sequence[ImageRecord], *, imgsz: Sequence[int],
                       rect: bool, pt_path: str | Path, multi_label: bool = False, batch: int | None = None,
                       threads: int | None = None, progress: bool | ProgressBar = False) -> ModelRun:
    """Run Ultralytics' own ``YOLO.predict`` over ``images`` with our validation settings; COCO records out.

    conf 0.001, iou 0.7, max_det 300, retina masks (original resolution), on CPU in float32, with
    ``rect`` and ``imgsz`` as given (pass the first model's letterbox mode). Timed like
    :func:`evaluate_predictor`: one untimed warm-up image, then the predict loop.
    """
    import numpy as np
    import torch

    from runtime.coco import rle_of_masks

    pt = Path(pt_path)
    label = f"{pt.name} (ultralytics)"
    kwargs = dict(conf=VAL_CONF, iou=VAL_IOU, max_det=VAL_MAX_DET, imgsz=list(imgsz), rect=rect, retina_masks=True,
                  device="cpu", batch=batch or 1, verbose=False, save=False)
    bar = progress if isinstance(progress, ProgressBar) else ProgressBar(len(images), label, enabled=bool(progress))
    by_path = {str(rec.path.absolute()): rec for rec in images}
    clock = [0.0]
    records: list[dict] = []
    count = 0
    try:
        # A list source would make Ultralytics decode every image up front with PIL; a manifest file takes its
        # usual path instead (files read one batch at a time with OpenCV, as for a folder).
        with tempfile.TemporaryDirectory(prefix="eval_coco_") as tmp, _ultralytics_multi_label(multi_label), \
                _torch_threads(threads), torch.inference_mode():
            manifest = Path(tmp) / "images.txt"
            manifest.write_text("".join(f"{p}\n" for p in by_path), encoding="utf-8")
            if images:
                model.predict(str(images[0].path.absolute()), **kwargs)  # untimed warm-up
            for res in _timed(model.predict(str(manifest), stream=True, **kwargs), clock):
                rec = by_path.pop(str(Path(res.path).absolute()), None)
                if rec is None:
                    raise RuntimeError(f"unexpected or repeated result for {res.path}")
                xyxy = res.boxes.xyxy.cpu().numpy().astype(np.float32)
                scores = res.boxes.conf.cpu().numpy().astype(np.float32)
                classes = res.boxes.cls.cpu().numpy().astype(np.int64)
                rles = None
                if model.task == "segment":
                    masks = res.masks.data.cpu().numpy() > 0.5 if res.masks is not None else np.zeros((0, 1, 1), bool)
                    rles = rle_of_masks(masks)
                records.extend(records_from_arrays(rec.image_id, xyxy, scores, classes, category_ids, rles))
                count += 1
                bar.update()
        if by_path:
            raise RuntimeError(f"no result for {len(by_path)} images, e.g. {next(iter(by_path))}")
    except EvalError:
        raise
    except Exception as exc:
        raise EvalError(f"{pt}: Ultralytics predict failed ({type(exc).__name__}: {_first_line(exc)})") from exc
    bar.close()
    model_info = {
        "file": pt.name,
        "path": str(pt.resolve()),
        "sha256": file_sha256(pt),
        "classes": len(model.names),
        "imgsz": list(imgsz),
        "rect": rect,
        "letterbox": _letterbox_mode(rect),
        "batch": batch or 1,
        "torch_threads": threads or torch.get_num_threads(),
        "multi_label": multi_label,
    }
    return ModelRun(label, "ultralytics", model.task, records, count, clock[0], list(category_ids), model_info)


def records_from_arrays(image_id: Any, xyxy, scores, class_ids, category_ids: Sequence[int],
                        rles: Sequence[dict] | None = None) -> list[dict]:
    """COCO result dicts from (n, 4) xyxy float32, (n,) scores and class ids, rounded like Ultralytics' val."""
    records = []
    for k, (box, score, cls) in enumerate(zip(xyxy.tolist(), scores.tolist(), class_ids.tolist())):
        x1, y1, x2, y2 = box
        record = {"image_id": image_id, "category_id": int(category_ids[int(cls)]),
                  "bbox": [round(v, 3) for v in (x1, y1, x2 - x1, y2 - y1)], "score": round(score, 5)}
        if rles is not None:
            counts = rles[k]["counts"]
            record["segmentation"] = {"size": [int(v) for v in rles[k]["size"]],
                                      "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class CocoScores:
    """COCOeval.summarize() numbers of one IoU type; -1 where COCOeval has nothing to average."""

    stats: tuple[float, ...]

    @property
    def map50_95(self) -> float:
        return self.stats[0]

    @property
    def map50(self) -> float:
        return self.stats[1]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(STAT_NAMES, self.stats))


def coco_ground_truth(annotations: CocoAnnotations | dict):
    """A pycocotools COCO object of the annotations (its chatter on stdout suppressed)."""
    from pycocotools.coco import COCO

    dataset = annotations.dataset if isinstance(annotations, CocoAnnotations) else annotations
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _results_coco(gt, records: Sequence[dict], iou_type: str):
    """Load ``records`` as a COCO results object for ``iou_type``, without touching the caller's dicts.

    For segm the boxes are left out so pycocotools takes each detection's area from its mask (as
    in official segm results files); the area only matters for the small/medium/large breakdown.
    """
    from pycocotools.coco import COCO

    if iou_type == "segm":
        missing = sum(1 for r in records if "segmentation" not in r)
        if missing:
            raise ValueError(f"segm scoring needs a 'segmentation' in every record; {missing} lack one")
        copies = [{k: v for k, v in r.items() if k != "bbox"} for r in records]
    else:
        copies = [{k: v for k, v in r.items() if k != "segmentation"} for r in records]
    with contextlib.redirect_stdout(io.StringIO()):
        if copies:
            return gt.loadRes(copies)
        empty = COCO()  # loadRes cannot take an empty list
        empty.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                         "annotations": []}
        empty.createIndex()
        return empty


def score_results(gt, records: Sequence[dict], image_ids: Sequence[Any] | None = None,
                  iou_types: Sequence[str] = ("bbox",), cat_ids: Sequence[int] | None = None) -> dict[str, CocoScores]:
    """Score COCO result records with pycocotools' COCOeval.

    ``gt`` is a pycocotools COCO (see :func:`coco_ground_truth`) or CocoAnnotations; ``image_ids``
    restricts the evaluation to those images (``params.imgIds``: images without detections count
    with all their objects missed); ``cat_ids`` to those categories (default: all). Returns
    ``{iou_type: CocoScores}`` for "bbox" and/or "segm".
    """
    from pycocotools.cocoeval import COCOeval

    if isinstance(gt, CocoAnnotations):
        gt = coco_ground_truth(gt)
    wanted = set(gt.getImgIds())
    if image_ids is not None:
        unknown = [i for i in image_ids if i not in wanted]
        if unknown:
            raise ValueError(f"image ids not in the annotations: {unknown[:10]}")
    stray = sorted({r["image_id"] for r in records} - (set(image_ids) if image_ids is not None else wanted),
                   key=str)
    if stray:
        raise ValueError(f"results name images outside the evaluated set: {stray[:10]}")
    scores = {}
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou type must be one of {list(IOU_TYPES)}, got {iou_type!r}")
        dt = _results_coco(gt, records, iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = COCOeval(gt, dt, iou_type)
            if image_ids is not None:
                evaluator.params.imgIds = list(image_ids)
            if cat_ids is not None:
                evaluator.params.catIds = sorted(set(int(c) for c in cat_ids))
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        scores[iou_type] = CocoScores(tuple(float(v) for v in evaluator.stats))
    return scores


# ------------------------------------------------------------------------------------------------------------ table
COLUMNS = ("model", "box mAP50-95", "box mAP50", "mask mAP50-95", "mask mAP50", "images/s",
           "Δ box mAP50-95", "Δ box mAP50", "Δ mask mAP50-95", "Δ mask mAP50", "Δ images/s")
METRIC_KEYS = (("box", "mAP50-95"), ("box", "mAP50"), ("mask", "mAP50-95"), ("mask", "mAP50"))


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_table(rows: Sequence[dict]) -> str:
    """One markdown table of report rows: the four mAPs, images/s, and each row's delta against the first.

    Each row is a report row (``label``, ``box``/``mask`` {metric: value} or None, ``images_per_s``,
    ``delta``). Deltas of mAPs are absolute; the images/s delta is relative (percent).
    """
    body = []
    for row in rows:
        cells = [row["label"]]
        for group, key in METRIC_KEYS:
            cells.append(_fmt(row[group][key] if row.get(group) else None))
        cells.append(f"{row['images_per_s']:.2f}")
        delta = row.get("delta")
        if delta is None:
            cells += [""] * 5
        else:
            for group, key in METRIC_KEYS:
                cells.append(_fmt(delta.get(f"{group} {key}"), signed=True))
            rel = delta.get("images/s %")
            cells.append("-" if rel is None else f"{rel:+.1f}%")
        body.append(cells)
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in body)) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ("-" if i == 0 else ":")) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(COLUMNS), sep] + [line(r) for r in body])


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of a table printed by :func:`format_table` as {column: cell text} (for tests and scripts)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    if not lines:
        return []
    header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip().strip("|").split("|")))) for ln in lines[1:]]


# ----------------------------------------------------------------------------------------------------------- report
def _row_report(run: ModelRun, scores: dict[str, CocoScores]) -> dict:
    row: dict[str, Any] = {
        "label": run.label,
        "kind": run.kind,
        "task": run.task,
        "model": run.model,
        "images": run.num_images,
        "seconds": run.seconds,
        "images_per_s": run.images_per_s,
        "detections": len(run.records),
        "categories_evaluated": len(set(run.category_ids)),
    }
    for iou_type, group in IOU_TYPES.items():
        row[group] = scores[iou_type].as_dict() if iou_type in scores else None
    if run.speed_ms:
        row["speed_ms_per_image"] = run.speed_ms
    return row


def _add_deltas(rows: list[dict]) -> None:
    first = rows[0]
    for row in rows[1:]:
        delta: dict[str, float | None] = {}
        for group, key in METRIC_KEYS:
            a, b = first.get(group), row.get(group)
            delta[f"{group} {key}"] = (b[key] - a[key]) if a and b and a[key] >= 0 and b[key] >= 0 else None
        base = first["images_per_s"]
        delta["images/s %"] = (100.0 * (row["images_per_s"] / base - 1.0)) if base and base > 0 else None
        row["delta"] = delta
    first["delta"] = None


def _versions(with_reference: bool) -> dict[str, str]:
    from importlib import metadata

    names = ["numpy", "onnxruntime", "pycocotools", "opencv-python-headless", "opencv-python"]
    if with_reference:
        names += ["torch", "ultralytics"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        import runtime

        out["runtime"] = runtime.__version__
    except Exception:  # the report must not fail on a version lookup
        pass
    return out


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -------------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/eval_coco.py",
        description="COCO box/mask mAP of exported YOLOv8 ONNX models through runtime.Predictor "
                    f"(conf {VAL_CONF}, iou {VAL_IOU}, max_det {VAL_MAX_DET}), optionally against Ultralytics' "
                    "own predict of a .pt, in one table.")
    p.add_argument("--model", action="append", required=True, metavar="ONNX",
                   help="model to evaluate (repeat for several; the first is the baseline of the deltas)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the annotated images")
    p.add_argument("--ann", required=True, metavar="JSON", help="COCO instances annotation file")
    p.add_argument("--imgsz", type=int, nargs="+", default=None, metavar="N",
                   help="letterbox size N or H W (default: the model's own; a fixed-input model only takes its size)")
    p.add_argument("--batch", type=int, default=None, help="images per inference call (dynamic-batch models)")
    p.add_argument("--reference-pt", default=None, metavar="PT",
                   help="add a row from ultralytics YOLO(PT).predict with the same settings and letterbox")
    p.add_argument("--out", default=None, metavar="JSON", help="write the report here (atomically)")
    p.add_argument("--save-results", default=None, metavar="DIR", help="write each row's COCO results JSON here")
    p.add_argument("--multi-label", action="store_true", help="multi-label NMS (Ultralytics' validator mode)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate the first N image ids only")
    p.add_argument("--skip-missing", action="store_true",
                   help="evaluate the annotated images present on disk instead of failing on missing ones")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (onnxruntime, and torch for the reference)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.imgsz is not None and len(args.imgsz) > 2:
        raise EvalError(f"--imgsz takes N or H W, got {args.imgsz}")
    for name in ("batch", "limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise EvalError(f"--{name} must be >= 1, got {value}")
    if args.out and Path(args.out).is_dir():
        raise EvalError(f"--out {args.out} is a folder; give the report's file name")
    if args.save_results and Path(args.save_results).exists() and not Path(args.save_results).is_dir():
        raise EvalError(f"--save-results {args.save_results} exists and is not a folder")
    if len({str(Path(m).resolve()) for m in args.model}) != len(args.model):
        raise EvalError(f"the same model is given twice: {', '.join(args.model)}")


def _labels(models: Sequence[str]) -> list[str]:
    names = [Path(m).name for m in models]
    return [str(m) if names.count(n) > 1 else n for m, n in zip(models, names)]


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The CLI's work once arguments are parsed; raises EvalError / runtime errors for bad inputs."""
    _check_args(args)
    progress = not args.no_progress

    # 1. Check every input before running anything: annotations, images, models, class names.
    annotations = load_annotations(args.ann)
    selection: ImageSelection = select_images(annotations, args.images, limit=args.limit,
                                              skip_missing=args.skip_missing)
    imgsz = None if args.imgsz is None else (args.imgsz[0] if len(args.imgsz) == 1 else tuple(args.imgsz))
    predictors, cat_maps = [], []
    for model_path in args.model:
        predictor = make_predictor(model_path, imgsz=imgsz, batch=args.batch, threads=args.threads,
                                   multi_label=args.multi_label)
        if predictor.spec.task not in ("detect", "segment"):
            raise EvalError(f"{model_path}: task '{predictor.spec.task}' cannot be scored against COCO instances "
                            "(detect or segment only)")
        if predictor.spec.task == "segment" and not annotations.has_segmentation:
            raise EvalError(f"{args.ann}: some annotations lack 'segmentation'; cannot score the masks of {model_path}")
        cat_maps.append(category_map(predictor.names, annotations.categories, model_label=str(model_path)))
        predictors.append(predictor)
    reference = None
    first = predictors[0]
    ref_rect = first.spec.input_hw is None and first.rect
    if args.reference_pt:
        reference = load_reference(args.reference_pt, annotations.categories)

    print(f"annotations: {annotations.path} ({len(annotations.images)} images, {annotations.num_annotations} "
          f"instances, {len(annotations.categories)} categories)", file=out)
    print(selection.statement(), file=out)
    nms_mode = "multi-label" if args.multi_label else "single-label"
    print(f"settings: conf {VAL_CONF}, iou {VAL_IOU}, max_det {VAL_MAX_DET}, {nms_mode} NMS, "
          f"masks as RLE at original resolution, batch {args.batch or 1}, threads {args.threads or 'default'}",
          file=out)
    out.flush()

    # 2. Run and score every model; nothing is written until all rows are done.
    gt = coco_ground_truth(annotations)
    runs: list[ModelRun] = []
    for predictor, cat_ids, label in zip(predictors, cat_maps, _labels(args.model)):
        bar = ProgressBar(len(selection.images), label, stream=err, enabled=progress)
        runs.append(evaluate_predictor(predictor, selection.images, cat_ids, label=label, progress=bar))
    if reference is not None:
        ref_model, ref_cat_ids = reference
        runs.append(evaluate_reference(ref_model, ref_cat_ids, selection.images, imgsz=first.imgsz, rect=ref_rect,
                                       pt_path=args.reference_pt, multi_label=args.multi_label, batch=args.batch,
                                       threads=args.threads,
                                       progress=ProgressBar(len(selection.images), f"{Path(args.reference_pt).name} "
                                                            "(ultralytics)", stream=err, enabled=progress)))
    rows = []
    for model_run in runs:
        scores = score_results(gt, model_run.records, selection.image_ids, model_run.iou_types,
                               cat_ids=model_run.category_ids)
        rows.append(_row_report(model_run, scores))
    _add_deltas(rows)

    # 3. Print the table, then write the files.
    print(format_table(rows), file=out)
    results_files = []
    if args.save_results:
        from runtime.files import atomic_write_text

        for k, (model_run, row) in enumerate(zip(runs, rows)):
            path = Path(args.save_results) / f"{k + 1}-{_safe_name(model_run.label)}.results.json"
            atomic_write_text(path, json.dumps(model_run.records, separators=(",", ":")))
            row["results_file"] = str(path)
            results_files.append(path)
    report = {
        "tool": "tools/eval_coco.py",
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": ["tools/eval_coco.py", *args.argv] if hasattr(args, "argv") else None,
        "annotations": {"path": str(annotations.path.resolve()), "sha256": annotations.sha256,
                        "images": len(annotations.images), "instances": annotations.num_annotations,
                        "categories": len(annotations.categories)},
        "images": {"dir": str(Path(args.images).resolve()), "annotated": selection.annotated,
                   "evaluated": len(selection.images), "missing_on_disk": len(selection.missing),
                   "missing_files": list(selection.missing), "skip_missing": selection.skipped_missing,
                   "limit": selection.limit, "unannotated_on_disk": selection.unannotated_on_disk,
                   "image_ids": selection.image_ids},
        "statement": selection.statement(),
        "settings": {"conf": VAL_CONF, "iou": VAL_IOU, "max_det": VAL_MAX_DET, "multi_label": args.multi_label,
                     "agnostic": False, "masks": "RLE at original resolution", "imgsz_arg": args.imgsz,
                     "batch": args.batch, "threads": args.threads,
                     "reference_letterbox": _letterbox_mode(ref_rect) if reference is not None else None,
                     "timing": "images/s = evaluated images / seconds spent producing results in the predict loop "
                               "(image reading included, COCO conversion excluded), after one untimed warm-up image",
                     "categories": "model classes mapped to annotation categories by name; COCOeval restricted "
                                   "to each model's categories and to the evaluated image ids"},
        "rows": rows,
        "versions": _versions(reference is not None),
    }
    if args.out:
        from runtime.files import atomic_write_json

        atomic_write_json(args.out, report)
    if results_files:
        print(f"results: {', '.join(str(p) for p in results_files)}", file=out)
    if args.out:
        print(f"report: {args.out}", file=out)
    return 0


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """CLI entry point; returns 0, or 2 after one line on stderr for a usage or input error."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = argv
    from runtime import YoloRuntimeError

    try:
        return run(args, out, err)
    except (EvalError, YoloRuntimeError) as exc:
        print(f"error: {_first_line(exc)}", file=err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
