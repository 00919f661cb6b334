"""Scoring COCO result records with pycocotools: box, mask and keypoint (OKS) mAP, and the records themselves.

The one place that talks to ``pycocotools.cocoeval``, shared by the annotated evaluation
(:mod:`tools.eval_coco`) and the label-free fidelity score (:mod:`tools.fidelity`); neither of those
is imported here, so the dependencies run one way: ``coco_data`` / ``coco_score`` <- ``fidelity`` <-
``eval_coco``. pycocotools is imported inside the functions only.

* :func:`score_results` runs COCOeval for "bbox", "segm" and/or "keypoints" -> ``{iou_type: CocoScores}``.
* :func:`result_records` / :func:`records_from_arrays` turn detections into COCO result dicts, rounded
  like Ultralytics' validator writes them (bbox to 3 decimals, score to 5, keypoints unrounded).
* :func:`oks_sigmas` gives COCO's 17 keypoint sigmas (pycocotools' ``kpt_oks_sigmas``), or Ultralytics'
  ``1 / K`` for any other keypoint count.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from runtime.records.coco import keypoints_to_flat

__all__ = [
    "COCO_KPT_SIGMAS", "IOU_TYPES", "KPT_STAT_NAMES", "STAT_NAMES", "VAL_CONF", "VAL_IOU", "VAL_MAX_DET", "CocoScores",
    "PredictedRecords", "coco_ground_truth", "keypoints_to_flat", "oks_sigmas", "predict_records",
    "records_from_arrays", "result_records", "score_results",
]

# Validation settings (Ultralytics' `yolo val` thresholds). Single-label NMS unless asked otherwise.
VAL_CONF = 0.001
VAL_IOU = 0.7
VAL_MAX_DET = 300

# The 12 numbers of COCOeval.summarize() for bbox / segm, and the 10 for keypoints, in order.
STAT_NAMES = ("mAP50-95", "mAP50", "mAP75", "mAP50-95_small", "mAP50-95_medium", "mAP50-95_large",
              "AR1", "AR10", "AR100", "AR100_small", "AR100_medium", "AR100_large")
KPT_STAT_NAMES = ("mAP50-95", "mAP50", "mAP75", "mAP50-95_medium", "mAP50-95_large",
                  "AR20", "AR20_50", "AR20_75", "AR20_medium", "AR20_large")
IOU_TYPES = {"bbox": "box", "segm": "mask", "keypoints": "pose"}  # COCOeval iouType -> report group

# pycocotools' Params.kpt_oks_sigmas (the COCO person keypoints; Ultralytics' OKS_SIGMA is the same numbers).
COCO_KPT_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89,
                            .89]) / 10.0


def oks_sigmas(num_keypoints: int) -> np.ndarray:
    """Per-keypoint OKS sigmas (K,) float64: COCO's for K == 17, else ``1 / K`` each (Ultralytics' choice)."""
    if num_keypoints < 1:
        raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
    return COCO_KPT_SIGMAS.copy() if num_keypoints == 17 else np.full(num_keypoints, 1.0 / num_keypoints)


@dataclass(frozen=True)
class CocoScores:
    """COCOeval.summarize() numbers of one IoU type; -1 where COCOeval has nothing to average."""

    stats: tuple[float, ...]
    names: tuple[str, ...] = STAT_NAMES

    @property
    def map50_95(self) -> float:
        return self.stats[0]

    @property
    def map50(self) -> float:
        return self.stats[1]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.stats))


# ------------------------------------------------------------------------------------------------------ records
def records_from_arrays(image_id: Any, xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                        category_ids: Sequence[int], rles: Sequence[dict] | None = None,
                        keypoints: np.ndarray | None = None) -> list[dict]:
    """COCO result dicts from (n, 4) xyxy, (n,) scores, (n,) class ids, optional RLEs and (n, K, 3) keypoints.

    Rounded like Ultralytics' validator: bbox [x, y, w, h] to 3 decimals, score to 5; keypoints as
    :func:`keypoints_to_flat`. ``category_ids[class_id]`` is each class's dataset category id.
    """
    flat = keypoints_to_flat(keypoints) if keypoints is not None else None
    records = []
    for k, (box, score, cls) in enumerate(zip(np.asarray(xyxy).tolist(), np.asarray(scores).tolist(),
                                              np.asarray(class_ids).tolist())):
        x1, y1, x2, y2 = box
        record = {"image_id": image_id, "category_id": int(category_ids[int(cls)]),
                  "bbox": [round(v, 3) for v in (x1, y1, x2 - x1, y2 - y1)], "score": round(score, 5)}
        if rles is not None:
            counts = rles[k]["counts"]
            record["segmentation"] = {"size": [int(v) for v in rles[k]["size"]],
                                      "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        if flat is not None:
            record["keypoints"] = flat[k]
        records.append(record)
    return records


def result_records(result, image_id: Any, category_ids: Sequence[int]) -> list[dict]:
    """COCO result dicts of one ``runtime.Result``: bbox, score, RLE masks (segment), keypoints (pose).

    Segment results must carry native-resolution masks (``rle_masks=True`` or ``retina_masks=True``).
    """
    from runtime.records.coco import result_to_coco

    return result_to_coco(result, image_id, category_ids)


@dataclass
class PredictedRecords:
    """One predictor's COCO result records over a list of images, and what producing them cost.

    ``image_hw[i]`` is image i's (height, width); ``seconds`` the time spent producing results in the
    predict loop (after the optional untimed warm-up); ``speed_ms`` the mean per-image stage times.
    """

    records: list[dict]
    image_hw: list[tuple[int, int]]
    seconds: float
    speed_ms: dict[str, float] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len(self.image_hw)


def predict_records(predictor, paths: Sequence[str | Path], image_ids: Sequence[Any], category_ids: Sequence[int],
                    *, on_image: Callable[[], None] | None = None, warmup: bool = True,
                    label: str | None = None) -> PredictedRecords:
    """Run a ``runtime.Predictor`` over image files and convert each Result with :func:`result_records`.

    ``image_ids[i]`` is the COCO image id of ``paths[i]``; ``category_ids[class_index]`` each model
    class's category id. ``warmup`` runs the first image once, untimed, so that one-off session costs
    do not count; only the time spent producing results counts (not the conversion). ``on_image`` is
    called after each image (a progress bar's ``update``).
    """
    spec = predictor.spec
    label = label or Path(spec.path).name
    if len(category_ids) != len(spec.names):
        raise ValueError(f"{label}: {len(category_ids)} category ids for a model with {len(spec.names)} classes")
    if len(image_ids) != len(paths):
        raise ValueError(f"{label}: {len(image_ids)} image ids for {len(paths)} images")
    paths = [str(p) for p in paths]
    if warmup and paths:
        predictor.predict(paths[0])
    seconds = 0.0
    records: list[dict] = []
    image_hw: list[tuple[int, int]] = []
    stage_sums: dict[str, float] = {}
    results = iter(predictor.stream(paths))
    for path, image_id in zip(paths, image_ids):
        t0 = time.perf_counter()
        result = next(results, None)
        seconds += time.perf_counter() - t0
        if result is None:
            break
        if result.path is not None and Path(result.path) != Path(path):
            raise RuntimeError(f"{label}: results out of order ({result.path} for {path})")
        records.extend(result_records(result, image_id, category_ids))
        image_hw.append(tuple(int(v) for v in result.orig_hw))
        for stage, ms in result.speed_ms.items():
            stage_sums[stage] = stage_sums.get(stage, 0.0) + float(ms)
        if on_image is not None:
            on_image()
    t0 = time.perf_counter()
    extra = next(results, None)
    seconds += time.perf_counter() - t0
    if len(image_hw) != len(paths) or extra is not None:
        raise RuntimeError(f"{label}: {len(image_hw) + (extra is not None)} results for {len(paths)} images")
    count = max(len(image_hw), 1)
    return PredictedRecords(records, image_hw, seconds, {k: v / count for k, v in stage_sums.items()})


# ------------------------------------------------------------------------------------------------------ scoring
def coco_ground_truth(dataset: Any):
    """A pycocotools COCO object of a COCO dataset dict (or anything with ``.dataset``), chatter suppressed."""
    from pycocotools.coco import COCO

    dataset = getattr(dataset, "dataset", dataset)
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


_DROP = {"bbox": ("segmentation", "keypoints"), "segm": ("bbox", "keypoints"), "keypoints": ("segmentation",)}


def _results_coco(gt, records: Sequence[dict], iou_type: str):
    """Load ``records`` as a COCO results object for ``iou_type``, without touching the caller's dicts.

    For segm the boxes are left out so pycocotools takes each detection's area from its mask (as
    in official segm results files); keypoint records keep their box, as Ultralytics' validator
    writes them (pycocotools then takes the area from the box). The area only matters for the
    small/medium/large breakdown.
    """
    from pycocotools.coco import COCO

    need = {"segm": "segmentation", "keypoints": "keypoints"}.get(iou_type)
    if need:
        missing = sum(1 for r in records if need not in r)
        if missing:
            raise ValueError(f"{iou_type} scoring needs a '{need}' in every record; {missing} lack one")
    copies = [{k: v for k, v in r.items() if k not in _DROP[iou_type]} for r in records]
    with contextlib.redirect_stdout(io.StringIO()):
        if copies:
            return gt.loadRes(copies)
        empty = COCO()  # loadRes cannot take an empty list
        empty.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                         "annotations": []}
        empty.createIndex()
        return empty


def _check_keypoints(gt, records: Sequence[dict], num_keypoints: int, cat_ids: Sequence[int] | None) -> None:
    wanted = None if cat_ids is None else {int(c) for c in cat_ids}
    for ann in gt.dataset["annotations"]:
        if wanted is not None and ann["category_id"] not in wanted:
            continue
        kpts = ann.get("keypoints")
        if not isinstance(kpts, list) or len(kpts) != 3 * num_keypoints or "num_keypoints" not in ann:
            raise ValueError(f"keypoint scoring needs 'keypoints' ({3 * num_keypoints} numbers) and 'num_keypoints' "
                             f"in every ground-truth annotation; annotation id {ann.get('id')} has "
                             f"{'no keypoints' if not isinstance(kpts, list) else f'{len(kpts)} numbers'}"
                             f"{'' if 'num_keypoints' in ann else ' and no num_keypoints'}")
    bad = [r for r in records if len(r["keypoints"]) != 3 * num_keypoints]
    if bad:
        raise ValueError(f"{len(bad)} result records hold {len(bad[0]['keypoints'])} keypoint numbers, "
                         f"expected {3 * num_keypoints} ({num_keypoints} keypoints x 3)")


def _summary(evaluator, iou_type: str, max_det: int) -> tuple[float, ...]:
    """COCOeval.summarize()'s numbers with ``max_det`` in place of its 100 (bbox/segm) or 20 (keypoints)."""
    p = evaluator.params

    def stat(ap: bool, iou_thr: float | None = None, area: str = "all", dets: int = max_det) -> float:
        a, m = p.areaRngLbl.index(area), list(p.maxDets).index(dets)
        s = evaluator.eval["precision"] if ap else evaluator.eval["recall"]  # [T,R,K,A,M] / [T,K,A,M]
        if iou_thr is not None:
            s = s[np.where(np.isclose(p.iouThrs, iou_thr))[0]]
        s = s[..., a, m]
        valid = s[s > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    if iou_type == "keypoints":
        return (stat(True), stat(True, .5), stat(True, .75), stat(True, area="medium"), stat(True, area="large"),
                stat(False), stat(False, .5), stat(False, .75), stat(False, area="medium"), stat(False, area="large"))
    return (stat(True), stat(True, .5), stat(True, .75), stat(True, area="small"), stat(True, area="medium"),
            stat(True, area="large"), stat(False, dets=1), stat(False, dets=10), stat(False),
            stat(False, area="small"), stat(False, area="medium"), stat(False, area="large"))


def score_results(gt, records: Sequence[dict], image_ids: Sequence[Any] | None = None,
                  iou_types: Sequence[str] = ("bbox",), cat_ids: Sequence[int] | None = None, *,
                  max_dets: int | None = None, kpt_sigmas: Sequence[float] | None = None) -> dict[str, CocoScores]:
    """Score COCO result records with pycocotools' COCOeval.

    ``gt`` is a pycocotools COCO (see :func:`coco_ground_truth`) or anything with a COCO ``.dataset``;
    ``image_ids`` restricts the evaluation to those images (``params.imgIds``: images without
    detections count with all their objects missed); ``cat_ids`` to those categories (default: all).
    ``iou_types`` are any of "bbox", "segm", "keypoints". Keypoints are scored by OKS with
    ``kpt_sigmas`` (default :func:`oks_sigmas` of the records' keypoint count: COCO's for 17).
    ``max_dets`` replaces COCO's detections-per-image cap for the headline numbers (100 for bbox and
    segm, 20 for keypoints); the default keeps COCO's. Returns ``{iou_type: CocoScores}``.
    Raises ValueError for records or ground truth that cannot be scored.
    """
    from pycocotools.cocoeval import COCOeval

    if not hasattr(gt, "getImgIds"):
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
    if max_dets is not None and max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    scores = {}
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou type must be one of {list(IOU_TYPES)}, got {iou_type!r}")
        dt = _results_coco(gt, records, iou_type)
        sigmas = None
        if iou_type == "keypoints":
            if kpt_sigmas is not None:
                sigmas = np.asarray(kpt_sigmas, dtype=np.float64)
            else:
                k = _keypoint_count(gt, records)
                sigmas = oks_sigmas(k) if k else COCO_KPT_SIGMAS
            _check_keypoints(gt, records, len(sigmas), cat_ids)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = COCOeval(gt, dt, iou_type)
            if sigmas is not None:
                evaluator.params.kpt_oks_sigmas = sigmas
            if image_ids is not None:
                evaluator.params.imgIds = list(image_ids)
            if cat_ids is not None:
                evaluator.params.catIds = sorted(set(int(c) for c in cat_ids))
            if max_dets is not None:
                evaluator.params.maxDets = [max_dets] if iou_type == "keypoints" else sorted({1, 10, max_dets})
            evaluator.evaluate()
            evaluator.accumulate()
            if max_dets is None:
                evaluator.summarize()
                stats = tuple(float(v) for v in evaluator.stats)
            else:
                stats = _summary(evaluator, iou_type, max_dets)
        scores[iou_type] = CocoScores(stats, KPT_STAT_NAMES if iou_type == "keypoints" else STAT_NAMES)
    return scores


def _keypoint_count(gt, records: Sequence[dict]) -> int | None:
    """K of the first record (or ground-truth annotation) that carries keypoints."""
    for source in (records, gt.dataset["annotations"]):
        for r in source:
            if isinstance(r.get("keypoints"), list) and r["keypoints"]:
                return len(r["keypoints"]) // 3
    return None
