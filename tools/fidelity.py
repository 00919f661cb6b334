"""Label-free fidelity: a candidate model's detections scored against a reference model's own detections.

For users who have images but no labels (most people who quantize a custom model): the W8A8 file
is scored with pycocotools against what its float model finds on the same images, as if those
were the labels. Box mAP50-95 for every task, mask mAP (mask IoU) for segment models and keypoint
mAP (OKS) for pose models. 1.0 means the candidate finds the same objects, ranked the same way
and placed the same; the loss below 1.0 is what quantization changed.

How the pseudo ground truth is built, and why a float-vs-float control scores 1.0:

* Ground truth = the reference's detections with score >= ``gt_conf`` (default 0.25, Ultralytics'
  predict default: what a user of the model calls its detections). Every reference class is a
  category (id = class index + 1).
* The candidate runs at validation settings (conf 0.001, iou 0.7, max_det 300; see
  ``tools.eval_coco.make_predictor``), as in any mAP evaluation: its full ranked list is scored.
* Control: the reference itself at conf 0.001 holds every ground-truth object exactly (NMS keeps
  a box of a given score whatever lower-scored boxes exist, so the boxes >= 0.25 are the same) and
  the rest of its detections score below every one of them. Precision is 1 up to full recall, so
  every AP is 1.0. A float-vs-float control therefore scores 1.0, and the CLI prints it.
* Up to ``max_dets`` (300, the predictor's max_det) detections per image count, instead of COCO's
  100 (boxes, masks) or 20 (keypoints): a crowded image's reference objects can all be matched,
  which the control's 1.0 needs.
* Areas: mask area for segment models, 0.53 x box area for pose models (Ultralytics' validator's
  OKS scale for objects without a mask), box area otherwise. They set the OKS tolerance and the
  small/medium/large split only.
* Keypoints: a reference keypoint with visibility score > 0.5 is a labelled (v=2) point, else
  unlabelled (v=0, coordinates 0); ``num_keypoints`` counts the labelled ones and objects without
  any are ignored, as in COCO. Sigmas: COCO's 17 (pycocotools' ``kpt_oks_sigmas``), else 1/K each.
* Masks: a reference object whose mask is empty is left out of the mask scoring (an empty mask
  overlaps nothing, not even itself), and so is a candidate detection with an empty mask.
* Not seen: classes the reference never detects have no ground truth, so COCOeval skips them and
  the candidate's detections of those classes cost nothing.

Library::

    from tools.eval_coco import make_predictor
    from tools.fidelity import label_free_scores
    scores = label_free_scores(make_predictor("float.onnx"), make_predictor("w8a8.onnx"), image_paths)
    scores["box"]["mAP50-95"], scores["pose"] and scores["mask"] (None when the task has none)

CLI: ``python tools/eval_coco.py --fidelity-to float.onnx --model w8a8.onnx --images DIR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tools.coco_data import EvalError
from tools.coco_score import (
    IOU_TYPES,
    VAL_MAX_DET,
    CocoScores,
    oks_sigmas,
    predict_records,
    score_results,
)

DEFAULT_GT_CONF = 0.25  # reference detections at or above this score are the pseudo ground truth
KPT_VISIBLE = 0.5  # reference keypoint visibility above this is a labelled point (v=2)
POSE_AREA_FACTOR = 0.53  # Ultralytics' validator: OKS area of a box-only object = 0.53 * w * h

__all__ = [
    "DEFAULT_GT_CONF", "FidelityError", "PseudoGroundTruth", "candidate_run", "check_compatible",
    "label_free_scores", "pseudo_ground_truth", "reference_run", "score_fidelity", "task_iou_types",
]


class FidelityError(EvalError):
    """The candidate cannot be compared with the reference (task, classes or keypoints differ)."""


def task_iou_types(task: str) -> tuple[str, ...]:
    """COCOeval iou types scored for a task: bbox, plus segm (segment) or keypoints (pose)."""
    return {"segment": ("bbox", "segm"), "pose": ("bbox", "keypoints")}.get(task, ("bbox",))


@dataclass(frozen=True)
class PseudoGroundTruth:
    """A reference model's detections as COCO ground truth, one dataset per iou type.

    ``datasets[iou_type]`` is a COCO dataset dict (images, annotations, categories); ``image_ids``
    the evaluated images (ids 1..N in the order given); ``category_ids[class_index]`` = class + 1.
    """

    datasets: dict[str, dict]
    task: str
    names: tuple[str, ...]
    image_ids: tuple[int, ...]
    gt_conf: float
    num_keypoints: int | None = None

    @property
    def iou_types(self) -> tuple[str, ...]:
        return tuple(self.datasets)

    @property
    def category_ids(self) -> list[int]:
        return list(range(1, len(self.names) + 1))

    @property
    def num_objects(self) -> int:
        return len(self.datasets["bbox"]["annotations"])


def _mask_areas(records: Sequence[dict]) -> np.ndarray:
    """(n,) float64 pixel areas of the records' RLE masks."""
    from pycocotools import mask as mask_utils

    rles = [r["segmentation"] for r in records]
    # 255 at a time: pycocotools 2.0.x sizes area()'s output with a uint8 array, which numpy 2 refuses for n > 255.
    chunks = [np.asarray(mask_utils.area(rles[i:i + 255]), dtype=np.float64).reshape(-1)
              for i in range(0, len(rles), 255)]
    return np.concatenate(chunks) if chunks else np.zeros(0)


def pseudo_ground_truth(reference_records: Sequence[dict], images: Sequence[dict], names: Sequence[str], *,
                        task: str, gt_conf: float = DEFAULT_GT_CONF,
                        num_keypoints: int | None = None) -> PseudoGroundTruth:
    """Turn a reference model's COCO result records into ground truth (see the module docstring).

    ``reference_records`` carry image ids from ``images`` (COCO image entries: id, file_name,
    height, width) and category ids ``class + 1``; segment records need ``segmentation`` (RLE),
    pose records ``keypoints`` (flat x, y, visibility score). Records with score < ``gt_conf`` are
    dropped.
    """
    if not 0.0 <= gt_conf <= 1.0:
        raise ValueError(f"gt_conf must be within [0, 1], got {gt_conf}")
    kept = [r for r in reference_records if r["score"] >= gt_conf]
    if task == "segment":
        areas = _mask_areas(kept)
    else:
        factor = POSE_AREA_FACTOR if task == "pose" else 1.0
        areas = np.array([factor * r["bbox"][2] * r["bbox"][3] for r in kept], dtype=np.float64)
    annotations = []
    for k, (rec, area) in enumerate(zip(kept, areas.tolist())):
        ann = {"id": k + 1, "image_id": rec["image_id"], "category_id": rec["category_id"],
               "bbox": list(rec["bbox"]), "area": float(area), "iscrowd": 0}
        if task == "segment":
            ann["segmentation"] = rec["segmentation"]
        if task == "pose":
            kpts = np.asarray(rec["keypoints"], dtype=np.float64).reshape(-1, 3)
            visible = kpts[:, 2] > KPT_VISIBLE
            flat = np.where(visible[:, None], np.column_stack([kpts[:, :2], np.full(len(kpts), 2.0)]), 0.0)
            ann["keypoints"] = flat.reshape(-1).tolist()
            ann["num_keypoints"] = int(visible.sum())
            num_keypoints = num_keypoints or len(kpts)
        annotations.append(ann)
    categories = [{"id": k + 1, "name": str(n)} for k, n in enumerate(names)]
    base = {"images": [dict(img) for img in images], "categories": categories}
    datasets = {"bbox": {**base, "annotations": annotations}}
    if task == "segment":
        datasets["segm"] = {**base, "annotations": [a for a, area in zip(annotations, areas) if area > 0]}
    if task == "pose":
        datasets["keypoints"] = datasets["bbox"]
    return PseudoGroundTruth(datasets, task, tuple(str(n) for n in names), tuple(int(img["id"]) for img in images),
                             float(gt_conf), num_keypoints)


def score_fidelity(pgt: PseudoGroundTruth, records: Sequence[dict], *,
                   max_dets: int = VAL_MAX_DET) -> dict[str, CocoScores]:
    """Score a candidate's COCO result records against the pseudo ground truth: ``{iou_type: CocoScores}``.

    Up to ``max_dets`` detections per image count (see the module docstring); candidate detections
    with an empty mask are left out of the mask scoring.
    """
    from tools.coco_score import coco_ground_truth

    scores: dict[str, CocoScores] = {}
    for iou_type, dataset in pgt.datasets.items():
        dt = records
        if iou_type == "segm":
            dt = [r for r, area in zip(records, _mask_areas(records)) if area > 0]
        sigmas = oks_sigmas(pgt.num_keypoints) if iou_type == "keypoints" and pgt.num_keypoints else None
        scores.update(score_results(coco_ground_truth(dataset), dt, list(pgt.image_ids), (iou_type,),
                                    max_dets=max_dets, kpt_sigmas=sigmas))
    return scores


def check_compatible(reference, candidate) -> None:
    """Raise FidelityError unless two predictors share task, class names and keypoint shape."""
    ref, cand = reference.spec, candidate.spec
    a = Path(ref.path).name
    if ref.task != cand.task:
        raise FidelityError(f"{cand.path}: a {cand.task} model cannot be scored against the {ref.task} model {a}")
    if tuple(ref.names) != tuple(cand.names):
        diff = next((i for i, (x, y) in enumerate(zip(ref.names, cand.names)) if x != y), min(len(ref.names),
                                                                                              len(cand.names)))
        raise FidelityError(f"{cand.path}: class names differ from {a}'s ({len(cand.names)} vs {len(ref.names)} "
                            f"classes; first difference at class {diff})")
    if ref.task == "pose" and tuple(ref.kpt_shape or ()) != tuple(cand.kpt_shape or ()):
        raise FidelityError(f"{cand.path}: keypoint shape {cand.kpt_shape} differs from {a}'s {ref.kpt_shape}")


def reference_run(reference, image_paths: Sequence[str | Path], *, gt_conf: float = DEFAULT_GT_CONF,
                  on_image: Callable[[], None] | None = None, warmup: bool = True):
    """Run the reference once: (PseudoGroundTruth, its own PredictedRecords, the control's scores or None).

    Images get ids 1..N in the order given. When the reference predictor runs at conf <= 0.001 its
    own records are also a candidate run (the float-vs-float control), scored here; otherwise the
    third item is None. Raises FidelityError when no reference detection reaches ``gt_conf``.
    """
    paths = [str(p) for p in image_paths]
    if not paths:
        raise EvalError("no images to score")
    spec = reference.spec
    ids = list(range(1, len(paths) + 1))
    cats = list(range(1, len(spec.names) + 1))
    run = predict_records(reference, paths, ids, cats, on_image=on_image, warmup=warmup)
    images = [{"id": i, "file_name": Path(p).name, "height": h, "width": w}
              for i, p, (h, w) in zip(ids, paths, run.image_hw)]
    kpt = spec.kpt_shape[0] if spec.task == "pose" and spec.kpt_shape else None
    pgt = pseudo_ground_truth(run.records, images, spec.names, task=spec.task, gt_conf=gt_conf, num_keypoints=kpt)
    if pgt.num_objects == 0:
        raise FidelityError(f"{spec.path}: the reference finds no object with score >= {gt_conf:g} on the "
                            f"{len(paths)} images, so there is nothing to score against (lower the threshold)")
    conf = getattr(getattr(reference, "settings", None), "conf", None)
    control = score_fidelity(pgt, run.records) if conf is not None and conf <= 0.001 + 1e-12 else None
    return pgt, run, control


def candidate_run(pgt: PseudoGroundTruth, candidate, image_paths: Sequence[str | Path], *,
                  on_image: Callable[[], None] | None = None, warmup: bool = True):
    """Run a candidate over the same images: (its PredictedRecords, ``{iou_type: CocoScores}``)."""
    paths = [str(p) for p in image_paths]
    if len(paths) != len(pgt.image_ids):
        raise ValueError(f"{len(paths)} images for a ground truth of {len(pgt.image_ids)}")
    run = predict_records(candidate, paths, list(pgt.image_ids), pgt.category_ids, on_image=on_image, warmup=warmup)
    return run, score_fidelity(pgt, run.records)


def _as_groups(scores: dict[str, CocoScores], task: str) -> dict[str, Any]:
    out: dict[str, Any] = {group: None for group in IOU_TYPES.values()}
    for iou_type in task_iou_types(task):
        out[IOU_TYPES[iou_type]] = scores[iou_type].as_dict() if iou_type in scores else None
    return out


def label_free_scores(reference_predictor, candidate_predictor, image_paths: Sequence[str | Path], *,
                      gt_conf: float = DEFAULT_GT_CONF, warmup: bool = False) -> dict[str, Any]:
    """Score ``candidate_predictor`` against ``reference_predictor``'s own detections on unlabelled images.

    Both are ``runtime.Predictor``s of the same task and classes; build the candidate with
    validation settings (``tools.eval_coco.make_predictor``: conf 0.001, RLE masks). The reference's
    detections >= ``gt_conf`` are the ground truth, whatever conf it was built with. Returns
    ``{"box": {stat: value}, "mask": ... | None, "pose": ... | None, "images", "gt_objects",
    "candidate_detections", "gt_conf", "reference", "candidate"}`` where the stats are COCOeval's
    (``"mAP50-95"``, ``"mAP50"``, ...). The same predictor may be passed twice (the control: 1.0).
    """
    check_compatible(reference_predictor, candidate_predictor)
    paths = [str(p) for p in image_paths]
    pgt, ref_run, control = reference_run(reference_predictor, paths, gt_conf=gt_conf, warmup=warmup)
    if candidate_predictor is reference_predictor and control is not None:
        cand_run, scores = ref_run, control
    else:
        cand_run, scores = candidate_run(pgt, candidate_predictor, paths, warmup=warmup)
    return {
        **_as_groups(scores, pgt.task),
        "images": len(paths),
        "gt_objects": pgt.num_objects,
        "candidate_detections": len(cand_run.records),
        "gt_conf": pgt.gt_conf,
        "reference": str(reference_predictor.spec.path),
        "candidate": str(candidate_predictor.spec.path),
    }
