"""COCO mAP of one or more exported models (and optionally Ultralytics' own predict of a .pt), in one table.

Usage::

    python tools/eval_coco.py --model A.onnx [--model B.onnx ...] --images DIR --ann ANNOTATIONS.json
        [--imgsz 640] [--batch N] [--reference-pt M.pt] [--out report.json] [--save-results DIR]
        [--multi-label] [--limit N] [--skip-missing] [--threads N] [--engine E] [--precision P]
    python tools/eval_coco.py --fidelity-to FLOAT.onnx --model W8A8.onnx [...] --images DIR [--gt-conf 0.25]

Every model runs through ``runtime.Predictor`` with validation settings (conf 0.001, iou 0.7,
max_det 300, single-label NMS unless ``--multi-label``; segment masks as RLE at original
resolution; ``--engine`` / ``--precision`` passed on when given). Model classes are mapped to the
annotation file's categories by name. Results are scored with pycocotools' COCOeval over exactly
the evaluated image ids: bbox for every model, segm for segment models, and for pose models
keypoints by OKS with COCO's sigmas against a ``person_keypoints_*.json`` file (result records
carry ``keypoints`` [x, y, visibility score, ...] as Ultralytics' validator writes them). The
output says when every evaluated image holds a single annotated object (e.g. single-person
keypoint sets, which score higher than full val2017). ``--reference-pt`` adds a row from
``ultralytics.YOLO(pt).predict`` with the same settings and the same letterbox as the first model,
timed the same way.

``--fidelity-to REF.onnx`` needs no labels: each ``--model`` is scored against REF's own
detections (score >= ``--gt-conf``) on every image of ``--images``, and REF's own row, the
control, reads 1.0 (see :mod:`tools.fidelity` for how the ground truth is built).

Library (used by the tests and the quantization tool)::

    from tools.eval_coco import make_predictor, evaluate_predictor, score_results, coco_ground_truth
    ann = load_annotations("instances_val2017.json")
    sel = select_images(ann, "val2017", limit=50)
    pred = make_predictor("yolov8n-seg.onnx")
    run = evaluate_predictor(pred, sel.images, category_map(pred.names, ann.categories))
    scores = score_results(coco_ground_truth(ann), run.records, sel.image_ids, run.iou_types)

Scoring lives in :mod:`tools.coco_score`, the label-free score in :mod:`tools.fidelity`.
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
    keypoint_count,
    load_annotations,
    select_images,
    single_instance_category,
)
from tools.coco_score import (  # noqa: E402
    IOU_TYPES,
    STAT_NAMES,
    VAL_CONF,
    VAL_IOU,
    VAL_MAX_DET,
    CocoScores,
    coco_ground_truth,
    oks_sigmas,
    predict_records,
    records_from_arrays,
    score_results,
)
from tools.fidelity import DEFAULT_GT_CONF, check_compatible, task_iou_types  # noqa: E402

__all__ = [
    "VAL_CONF", "VAL_IOU", "VAL_MAX_DET", "CocoScores", "ModelRun", "ProgressBar", "STAT_NAMES", "category_map",
    "coco_ground_truth", "evaluate_predictor", "evaluate_reference", "format_table", "main", "make_predictor",
    "records_from_arrays", "score_results",
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
    with str counts][, keypoints x, y, visibility score, ...]); ``seconds`` is the time spent inside the predict loop (after one untimed
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
        return task_iou_types(self.task)


def make_predictor(model: str | Path, *, imgsz: int | Sequence[int] | None = None, batch: int | None = None,
                   threads: int | None = None, multi_label: bool = False, providers: Sequence[str] | None = None,
                   engine: str | None = None, precision: str | None = None):
    """A runtime.Predictor with validation settings: conf 0.001, iou 0.7, max_det 300, RLE masks at original size.

    ``engine`` and ``precision`` are passed to the Predictor only when given. Raises
    runtime.ModelError for a missing or unusable model file, EvalError when this runtime's
    Predictor has no such option.
    """
    from runtime import Predictor

    extra = {k: v for k, v in (("engine", engine), ("precision", precision)) if v is not None}
    try:
        return Predictor(model, conf=VAL_CONF, iou=VAL_IOU, max_det=VAL_MAX_DET, imgsz=imgsz, threads=threads,
                         providers=providers, batch=batch, multi_label=multi_label, rle_masks=True, **extra)
    except TypeError as exc:
        unknown = [k for k in extra if repr(k) in str(exc) or k in str(exc).split()]
        if not unknown:
            raise
        raise EvalError(f"--{unknown[0]} is not supported by this runtime's Predictor ({_first_line(exc)})") from exc


def _model_info(predictor) -> dict[str, Any]:
    spec = predictor.spec
    info = {
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
    if spec.kpt_shape:
        info["kpt_shape"] = list(spec.kpt_shape)
    engine = getattr(predictor, "engine", None)  # a name, or an engine object with a settings dict
    settings = engine if isinstance(engine, str) else getattr(engine, "settings", None)
    if isinstance(settings, (str, dict)):
        info["engine"] = json.loads(json.dumps(settings, default=str))
    return info


def evaluate_predictor(predictor, images: Sequence[ImageRecord], category_ids: Sequence[int], *,
                       label: str | None = None, progress: bool | ProgressBar = False,
                       warmup: bool = True) -> ModelRun:
    """Run ``predictor`` over ``images`` and convert each Result to COCO result records.

    ``category_ids[class_index]`` is the COCO category id of each model class (see
    :func:`tools.coco_data.category_map`). Segment models must produce native-resolution masks
    (``rle_masks=True`` or ``retina_masks=True``, as :func:`make_predictor` does); pose records
    carry ``keypoints`` [x, y, visibility score, ...]. ``warmup`` runs the first image once,
    untimed, so that one-off session costs do not count in images/s.
    """
    spec = predictor.spec
    label = label or Path(spec.path).name
    paths = [rec.path for rec in images]
    bar = progress if isinstance(progress, ProgressBar) else ProgressBar(len(paths), label, enabled=bool(progress))
    run = predict_records(predictor, paths, [rec.image_id for rec in images], category_ids, on_image=bar.update,
                          warmup=warmup, label=label)
    bar.close()
    return ModelRun(label, "onnx", spec.task, run.records, run.num_images, run.seconds, list(category_ids),
                    _model_info(predictor), run.speed_ms)


def _letterbox_mode(rect: bool) -> str:
    return "rect (minimal padding to a stride multiple)" if rect else "square (padded to the full input size)"


# ------------------------------------------------------------------------------------------ Ultralytics reference
def load_reference(pt_path: str | Path, categories: Sequence[dict]):
    """Load ``YOLO(pt_path)`` (imports ultralytics here only) and map its classes; returns (model, category_ids).

    Anything Ultralytics loads works: a ``.pt``, or one of its exports (an ``.onnx``, or an OpenVINO folder such as
    its NNCF INT8 export, the int8 peer of our W8A8 files).
    """
    pt = Path(pt_path)
    if not (pt.is_file() or pt.is_dir()):
        raise EvalError(f"{pt}: reference model not found")
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise EvalError(f"--reference-pt needs ultralytics (pip install ultralytics): {exc}") from exc
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = YOLO(str(pt))
    except Exception as exc:  # ultralytics raises many kinds for a bad checkpoint
        raise EvalError(f"{pt}: cannot be loaded by ultralytics ({type(exc).__name__}: {_first_line(exc)})") from exc
    if model.task not in ("detect", "segment", "pose"):
        raise EvalError(f"{pt}: task '{model.task}' cannot be scored against COCO annotations "
                        "(detect, segment or pose only)")
    return model, category_map(model.names, categories, model_label=str(pt))


def _folder_sha256(folder: Path) -> str:
    """One digest of an export folder: its files' names and digests, in name order."""
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(x for x in folder.rglob("*") if x.is_file()):
        digest.update(f"{f.relative_to(folder)}\0{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def reference_kpt_shape(model, path: str | Path) -> list[int] | None:
    """The keypoint shape of an Ultralytics model: from the checkpoint, or from an export's own metadata."""
    net = model.model
    if not isinstance(net, (str, Path)):  # a loaded .pt
        return getattr(net, "kpt_shape", None) or net.yaml.get("kpt_shape")
    path = Path(path)
    if path.is_dir():  # OpenVINO (and other folder) exports keep metadata.yaml beside the weights
        import yaml

        meta = path / "metadata.yaml"
        return yaml.safe_load(meta.read_text(encoding="utf-8")).get("kpt_shape") if meta.is_file() else None
    import ast

    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return ast.literal_eval(props["kpt_shape"]) if "kpt_shape" in props else None


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

    conf 0.001, iou 0.7, max_det 300, retina masks (original resolution), keypoints as its
    validator writes them (x, y, visibility score, unrounded), on CPU in float32, with
    ``rect`` and ``imgsz`` as given (pass the first model's letterbox mode). Timed like
    :func:`evaluate_predictor`: one untimed warm-up image, then the predict loop.
    """
    import numpy as np
    import torch

    from runtime.records.coco import rle_of_masks

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
                keypoints = None
                if model.task == "pose" and len(xyxy):
                    keypoints = res.keypoints.data.cpu().numpy().astype(np.float32)
                records.extend(records_from_arrays(rec.image_id, xyxy, scores, classes, category_ids, rles,
                                                   keypoints))
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
        "sha256": file_sha256(pt) if pt.is_file() else _folder_sha256(pt),
        "classes": len(model.names),
        "imgsz": list(imgsz),
        "rect": rect,
        "letterbox": _letterbox_mode(rect),
        "batch": batch or 1,
        "torch_threads": threads or torch.get_num_threads(),
        "multi_label": multi_label,
    }
    return ModelRun(label, "ultralytics", model.task, records, count, clock[0], list(category_ids), model_info)


# ------------------------------------------------------------------------------------------------------------ table
GROUPS = ("box", "mask", "pose")  # report groups of the "bbox", "segm" and "keypoints" scores
METRICS = ("mAP50-95", "mAP50")


def _groups(rows: Sequence[dict]) -> list[str]:
    """The score groups a table shows: box always, mask and pose when some row has them."""
    return [g for g in GROUPS if g == "box" or any(row.get(g) for row in rows)]


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_table(rows: Sequence[dict]) -> str:
    """One markdown table of report rows: mAP50-95 and mAP50 per group, images/s, deltas against the first row.

    Each row is a report row (``label``, ``box``/``mask``/``pose`` {metric: value} or None,
    ``images_per_s``, ``delta``). Box columns are always shown, mask and pose columns when some row
    has them. Deltas of mAPs are absolute; the images/s delta is relative (percent).
    """
    keys = [(g, m) for g in _groups(rows) for m in METRICS]
    columns = ["model", *(f"{g} {m}" for g, m in keys), "images/s", *(f"Δ {g} {m}" for g, m in keys), "Δ images/s"]
    body = []
    for row in rows:
        cells = [row["label"]]
        for group, key in keys:
            cells.append(_fmt(row[group][key] if row.get(group) else None))
        cells.append(f"{row['images_per_s']:.2f}")
        delta = row.get("delta")
        if delta is None:
            cells += [""] * (len(keys) + 1)
        else:
            for group, key in keys:
                cells.append(_fmt(delta.get(f"{group} {key}"), signed=True))
            rel = delta.get("images/s %")
            cells.append("-" if rel is None else f"{rel:+.1f}%")
        body.append(cells)
    widths = [max(len(columns[i]), *(len(r[i]) for r in body)) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ("-" if i == 0 else ":")) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(columns), sep] + [line(r) for r in body])


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
        for group, key in ((g, m) for g in GROUPS for m in METRICS):
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
        description="COCO box / mask / keypoint mAP of exported YOLOv8 and YOLO11 ONNX models through "
                    f"runtime.Predictor (conf {VAL_CONF}, iou {VAL_IOU}, max_det {VAL_MAX_DET}), in one table: "
                    "against a COCO annotation file (--ann, optionally beside Ultralytics' own predict of a .pt), "
                    "or, with no labels, against a reference model's own detections (--fidelity-to).")
    p.add_argument("--model", action="append", required=True, metavar="ONNX",
                   help="model to evaluate (repeat for several; the first is the baseline of the deltas)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the images")
    p.add_argument("--ann", default=None, metavar="JSON",
                   help="COCO annotation file: instances_*.json (box, mask) or person_keypoints_*.json (box, OKS)")
    p.add_argument("--fidelity-to", default=None, metavar="REF",
                   help="label-free: score each --model against REF.onnx's own detections on every image in "
                        "--images (no --ann); REF's own row is the control and reads 1.0")
    p.add_argument("--gt-conf", type=float, default=None, metavar="C",
                   help=f"with --fidelity-to: REF's detections with score >= C are the ground truth "
                        f"(default {DEFAULT_GT_CONF})")
    p.add_argument("--imgsz", type=int, nargs="+", default=None, metavar="N",
                   help="letterbox size N or H W (default: the model's own; a fixed-input model only takes its size)")
    p.add_argument("--batch", type=int, default=None, help="images per inference call (dynamic-batch models)")
    p.add_argument("--engine", default=None,
                   help="inference engine for every model (default: each model's own: the engine a W8A8 file was "
                        "quantized for, onnxruntime for float files)")
    p.add_argument("--precision", default=None, help="precision passed to runtime.Predictor (default: its own)")
    p.add_argument("--reference-pt", default=None, metavar="PT",
                   help="with --ann: add a row from ultralytics YOLO(PT).predict with the same settings and letterbox "
                        "(PT: a .pt, or an Ultralytics export such as its OpenVINO INT8 folder)")
    p.add_argument("--out", default=None, metavar="JSON", help="write the report here (atomically)")
    p.add_argument("--save-results", default=None, metavar="DIR", help="write each row's COCO results JSON here")
    p.add_argument("--multi-label", action="store_true", help="multi-label NMS (Ultralytics' validator mode)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate the first N images only (by image id with --ann, by file name otherwise)")
    p.add_argument("--skip-missing", action="store_true",
                   help="with --ann: evaluate the annotated images present on disk instead of failing on missing ones")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (onnxruntime, and torch for the reference)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.ann is None and args.fidelity_to is None:
        raise EvalError("give --ann JSON (score against COCO labels) or --fidelity-to REF.onnx (label-free: score "
                        "against REF's own detections)")
    if args.ann is not None and args.fidelity_to is not None:
        raise EvalError("--ann and --fidelity-to are two different evaluations; give one of them")
    if args.fidelity_to is None:
        if args.gt_conf is not None:
            raise EvalError("--gt-conf only applies with --fidelity-to")
    else:
        for flag, value in (("--reference-pt", args.reference_pt), ("--skip-missing", args.skip_missing)):
            if value:
                raise EvalError(f"{flag} only applies with --ann")
        if args.gt_conf is not None and not 0.0 < args.gt_conf <= 1.0:
            raise EvalError(f"--gt-conf must be within (0, 1], got {args.gt_conf}")
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
    if args.fidelity_to and str(Path(args.fidelity_to).resolve()) in {str(Path(m).resolve()) for m in args.model}:
        raise EvalError(f"{args.fidelity_to} is the --fidelity-to reference; its control row is printed anyway, "
                        "leave it out of --model")


def _labels(models: Sequence[str]) -> list[str]:
    names = [Path(m).name for m in models]
    return [str(m) if names.count(n) > 1 else n for m, n in zip(models, names)]


def _imgsz(args: argparse.Namespace):
    return None if args.imgsz is None else (args.imgsz[0] if len(args.imgsz) == 1 else tuple(args.imgsz))


def _predictor(args: argparse.Namespace, model_path: str):
    return make_predictor(model_path, imgsz=_imgsz(args), batch=args.batch, threads=args.threads,
                          multi_label=args.multi_label, engine=args.engine, precision=args.precision)


def _settings_line(args: argparse.Namespace, tasks: Sequence[str], num_keypoints: int | None) -> str:
    nms_mode = "multi-label" if args.multi_label else "single-label"
    parts = [f"conf {VAL_CONF}, iou {VAL_IOU}, max_det {VAL_MAX_DET}, {nms_mode} NMS"]
    if "segment" in tasks:
        parts.append("masks as RLE at original resolution")
    if "pose" in tasks:
        sigmas = "COCO's 17 sigmas (pycocotools' kpt_oks_sigmas)" if num_keypoints in (None, 17) else \
            f"sigmas 1/{num_keypoints} (not COCO's 17 keypoints)"
        parts.append(f"keypoints by OKS with {sigmas}")
    parts.append(f"batch {args.batch or 1}, threads {args.threads or 'default'}")
    if args.engine or args.precision:
        parts.append(f"engine {args.engine or 'default'}, precision {args.precision or 'default'}")
    return "settings: " + ", ".join(parts)


def _settings_report(args: argparse.Namespace) -> dict[str, Any]:
    return {"conf": VAL_CONF, "iou": VAL_IOU, "max_det": VAL_MAX_DET, "multi_label": args.multi_label,
            "agnostic": False, "masks": "RLE at original resolution", "imgsz_arg": args.imgsz,
            "batch": args.batch, "threads": args.threads, "engine": args.engine, "precision": args.precision,
            "timing": "images/s = evaluated images / seconds spent producing results in the predict loop "
                      "(image reading included, COCO conversion excluded), after one untimed warm-up image"}


def _write_outputs(args: argparse.Namespace, out: TextIO, runs: Sequence[ModelRun], rows: list[dict],
                   report: dict, extra_files: Sequence[tuple[str, Any]] = ()) -> None:
    """Write the results files and the report (each atomically), after the table is printed."""
    from runtime.io.files import atomic_write_json, atomic_write_text

    results_files = []
    if args.save_results:
        for name, obj in extra_files:
            path = Path(args.save_results) / name
            atomic_write_text(path, json.dumps(obj, separators=(",", ":")))
            results_files.append(path)
        for k, (model_run, row) in enumerate(zip(runs, rows)):
            path = Path(args.save_results) / f"{k + 1}-{_safe_name(model_run.label)}.results.json"
            atomic_write_text(path, json.dumps(model_run.records, separators=(",", ":")))
            row["results_file"] = str(path)
            results_files.append(path)
    if args.out:
        atomic_write_json(args.out, report)
    if results_files:
        print(f"results: {', '.join(str(p) for p in results_files)}", file=out)
    if args.out:
        print(f"report: {args.out}", file=out)


def _report_head(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    return {"tool": "tools/eval_coco.py", "mode": mode,
            "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": ["tools/eval_coco.py", *args.argv] if hasattr(args, "argv") else None}


def _single_instance_note(annotations: CocoAnnotations, image_ids: Sequence[Any]) -> str | None:
    name = single_instance_category(annotations, image_ids)
    if name is None:
        return None
    return (f"note: single-{name} images only (every evaluated image holds exactly one non-crowd {name} "
            "annotation): figures run higher than on full val2017")


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The CLI's work once arguments are parsed; raises EvalError / runtime errors for bad inputs."""
    _check_args(args)
    return _run_label_free(args, out, err) if args.fidelity_to else _run_annotated(args, out, err)


def _run_annotated(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    progress = not args.no_progress

    # 1. Check every input before running anything: annotations, images, models, class names, keypoints.
    annotations = load_annotations(args.ann)
    selection: ImageSelection = select_images(annotations, args.images, limit=args.limit,
                                              skip_missing=args.skip_missing)
    predictors, cat_maps = [], []
    num_keypoints = None
    for model_path in args.model:
        predictor = _predictor(args, model_path)
        task = predictor.spec.task
        if task not in ("detect", "segment", "pose"):
            raise EvalError(f"{model_path}: task '{task}' cannot be scored against COCO annotations "
                            "(detect, segment or pose only)")
        if task == "segment" and not annotations.has_segmentation:
            raise EvalError(f"{args.ann}: some annotations lack 'segmentation'; cannot score the masks of {model_path}")
        cat_ids = category_map(predictor.names, annotations.categories, model_label=str(model_path))
        if task == "pose":
            num_keypoints = _check_keypoints(annotations, cat_ids, predictor.spec.kpt_shape, str(model_path))
        cat_maps.append(cat_ids)
        predictors.append(predictor)
    reference = None
    first = predictors[0]
    ref_rect = first.spec.input_hw is None and first.rect
    if args.reference_pt:
        reference = load_reference(args.reference_pt, annotations.categories)
        ref_model, ref_cat_ids = reference
        if ref_model.task == "segment" and not annotations.has_segmentation:
            raise EvalError(f"{args.ann}: some annotations lack 'segmentation'; cannot score the masks of "
                            f"{args.reference_pt}")
        if ref_model.task == "pose":
            kpt_shape = reference_kpt_shape(ref_model, args.reference_pt)
            num_keypoints = _check_keypoints(annotations, ref_cat_ids, kpt_shape, str(args.reference_pt))

    tasks = [p.spec.task for p in predictors] + ([reference[0].task] if reference else [])
    print(f"annotations: {annotations.path} ({len(annotations.images)} images, {annotations.num_annotations} "
          f"instances, {len(annotations.categories)} categories)", file=out)
    print(selection.statement(), file=out)
    note = _single_instance_note(annotations, selection.image_ids)
    if note:
        print(note, file=out)
    print(_settings_line(args, tasks, num_keypoints), file=out)
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
    settings = _settings_report(args)
    settings.update({
        "reference_letterbox": _letterbox_mode(ref_rect) if reference is not None else None,
        "categories": "model classes mapped to annotation categories by name; COCOeval restricted "
                      "to each model's categories and to the evaluated image ids"})
    if num_keypoints is not None:
        settings["keypoints"] = {"num_keypoints": num_keypoints, "oks_sigmas": oks_sigmas(num_keypoints).tolist(),
                                 "max_dets": 20, "records": "keypoints [x, y, visibility score, ...] unrounded"}
    report = {
        **_report_head(args, "annotations"),
        "annotations": {"path": str(annotations.path.resolve()), "sha256": annotations.sha256,
                        "images": len(annotations.images), "instances": annotations.num_annotations,
                        "categories": len(annotations.categories)},
        "images": {"dir": str(Path(args.images).resolve()), "annotated": selection.annotated,
                   "evaluated": len(selection.images), "missing_on_disk": len(selection.missing),
                   "missing_files": list(selection.missing), "skip_missing": selection.skipped_missing,
                   "limit": selection.limit, "unannotated_on_disk": selection.unannotated_on_disk,
                   "image_ids": selection.image_ids},
        "statement": selection.statement(),
        "notes": [note] if note else [],
        "settings": settings,
        "rows": rows,
        "versions": _versions(reference is not None),
    }
    _write_outputs(args, out, runs, rows, report)
    return 0


def _check_keypoints(annotations: CocoAnnotations, cat_ids: Sequence[int], kpt_shape: Sequence[int] | None,
                     model_label: str) -> int:
    """Keypoints per object in both the annotations and the model; EvalError naming the file when they differ."""
    k = keypoint_count(annotations, cat_ids, model_label=model_label)
    model_k = int(kpt_shape[0]) if kpt_shape else None
    if model_k != k:
        raise EvalError(f"{model_label}: the model predicts {model_k} keypoints per object, {annotations.path} "
                        f"annotates {k}")
    return k


def _run_label_free(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from runtime.io.sources import list_images
    from tools.fidelity import candidate_run, reference_run

    progress = not args.no_progress
    gt_conf = DEFAULT_GT_CONF if args.gt_conf is None else args.gt_conf

    # 1. Check every input before running anything: images, reference, candidates.
    images_dir = Path(args.images)
    if not images_dir.is_dir():
        raise EvalError(f"{images_dir}: image folder not found")
    from runtime import InputError

    try:
        all_paths = list_images(images_dir)
    except InputError as exc:
        raise EvalError(str(exc)) from None
    paths = all_paths[:args.limit] if args.limit else all_paths
    reference = _predictor(args, args.fidelity_to)
    if reference.spec.task not in ("detect", "segment", "pose"):
        raise EvalError(f"{args.fidelity_to}: task '{reference.spec.task}' has no label-free score "
                        "(detect, segment or pose only)")
    candidates = []
    for model_path in args.model:
        candidate = _predictor(args, model_path)
        check_compatible(reference, candidate)
        candidates.append(candidate)
    ref_label = Path(args.fidelity_to).name
    task = reference.spec.task
    num_keypoints = reference.spec.kpt_shape[0] if task == "pose" and reference.spec.kpt_shape else None

    statement = f"images: {images_dir} ({len(paths)} of {len(all_paths)} images" + (
        f"; --limit {args.limit}: first by file name)" if len(paths) < len(all_paths) else ")")
    print(f"label-free fidelity: each model scored against {ref_label}'s own detections with score >= {gt_conf:g} "
          "as ground truth (no labels)", file=out)
    print(statement, file=out)
    print(_settings_line(args, [task], num_keypoints) + f", up to {VAL_MAX_DET} detections per image scored",
          file=out)
    out.flush()

    # 2. Reference once (ground truth and control row), then every candidate; nothing is written until done.
    bar = ProgressBar(len(paths), f"{ref_label} (reference)", stream=err, enabled=progress)
    pgt, ref_records, control = reference_run(reference, paths, gt_conf=gt_conf, on_image=bar.update)
    bar.close()
    runs = [ModelRun(f"{ref_label} (control: itself)", "onnx", task, ref_records.records, ref_records.num_images,
                     ref_records.seconds, pgt.category_ids, _model_info(reference), ref_records.speed_ms)]
    all_scores = [control]
    for candidate, label in zip(candidates, _labels(args.model)):
        bar = ProgressBar(len(paths), label, stream=err, enabled=progress)
        cand_records, scores = candidate_run(pgt, candidate, paths, on_image=bar.update)
        bar.close()
        runs.append(ModelRun(label, "onnx", task, cand_records.records, cand_records.num_images, cand_records.seconds,
                             pgt.category_ids, _model_info(candidate), cand_records.speed_ms))
        all_scores.append(scores)
    rows = [_row_report(model_run, scores) for model_run, scores in zip(runs, all_scores)]
    _add_deltas(rows)

    # 3. Print the table, then write the files.
    kpt_note = ""
    if task == "pose":
        labelled = sum(a["num_keypoints"] for a in pgt.datasets["keypoints"]["annotations"])
        kpt_note = f", {labelled} keypoints with visibility > 0.5"
    print(f"ground truth: {pgt.num_objects} objects of {ref_label} in {len(paths)} images{kpt_note}", file=out)
    print(format_table(rows), file=out)
    print("1.0 = the same detections as the reference; the control row checks the scoring and reads 1.0", file=out)
    settings = _settings_report(args)
    settings.update({
        "gt_conf": gt_conf, "max_dets_scored": VAL_MAX_DET,
        "ground_truth": f"{ref_label}'s detections with score >= {gt_conf:g}; categories = its classes; areas: "
                        "mask area (segment), 0.53 x box area (pose), box area (detect); keypoints with "
                        "visibility > 0.5 labelled (v=2), others unlabelled (v=0)",
    })
    report = {
        **_report_head(args, "label-free"),
        "reference": {**_model_info(reference), "ground_truth_objects": pgt.num_objects},
        "images": {"dir": str(images_dir.resolve()), "on_disk": len(all_paths), "evaluated": len(paths),
                   "limit": args.limit, "files": [p.name for p in paths]},
        "statement": statement,
        "settings": settings,
        "rows": rows,
        "versions": _versions(False),
    }
    _write_outputs(args, out, runs, rows, report,
                   extra_files=[(f"0-{_safe_name(ref_label)}.pseudo-gt.json", pgt.datasets["bbox"])])
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
