"""COCO-style records of Results: xywh boxes, compressed RLE masks and flat keypoints."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from runtime.records.probs import top5_entries
from runtime.records.result import Result


def rle_of_masks(masks: np.ndarray) -> list[dict]:
    """COCO compressed RLE of (n, H, W) bool masks (pycocotools' own encoder)."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def result_rles(result: Result) -> list[dict] | None:
    """The masks of a Result as COCO RLE at original-image resolution, or None for a box-only model.

    Letterbox-form bitmaps cannot be turned into original-resolution RLE; ask the Predictor for
    ``retina_masks`` or ``rle_masks``.
    """
    if result.masks_rle is not None:
        return result.masks_rle
    if result.masks is None:
        return None
    if result.mask_form != "native":
        raise ValueError("COCO RLE needs masks at original resolution; use retina_masks=True or rle_masks=True")
    return rle_of_masks(result.masks)


def keypoints_to_flat(keypoints: np.ndarray) -> list[list[float]]:
    """(n, K, 3|2) float keypoints -> n flat COCO lists [x1, y1, v1, ...] (v = the model's visibility score).

    Unrounded float32 values, as Ultralytics' validator writes them; (n, K, 2) keypoints get v = 1.
    """
    kpts = np.asarray(keypoints, dtype=np.float32)
    if kpts.ndim != 3 or kpts.shape[2] not in (2, 3):
        raise ValueError(f"keypoints must be (n, K, 2|3), got shape {kpts.shape}")
    if kpts.shape[2] == 2:
        kpts = np.concatenate([kpts, np.ones(kpts.shape[:2] + (1,), np.float32)], axis=2)
    return kpts.reshape(len(kpts), kpts.shape[1] * kpts.shape[2]).tolist()  # (0, K, 3) too


def result_to_coco(result: Result, image_id: Any, category_ids: Sequence[int] | None = None,
                   with_names: bool = False, keypoint_decimals: int | None = None) -> list[dict]:
    """One COCO result dict per detection: image_id, category_id, bbox [x, y, w, h], score, segmentation (segment
    models), keypoints [x1, y1, v1, ...] (pose models; unrounded unless ``keypoint_decimals``), rbox [cx, cy, w, h,
    angle] and poly [x1, y1, ..., x4, y4] (obb models; bbox is then the hull), track_id (tracked Results).

    ``category_ids[class_id]`` maps model classes to dataset categories (identity when None). A classifier's Result
    gives one record: image_id, its best class (category_id, score) and ``top5`` (:func:`top5_entries`).
    """
    if result.probs is not None:
        best = top5_entries(result, category_ids)
        return [{"image_id": image_id, "category_id": best[0]["category_id"], "score": best[0]["score"],
                 **({"category_name": best[0]["category_name"]} if with_names else {}), "top5": best}]
    rles = result_rles(result)
    flat = keypoints_to_flat(result.keypoints) if result.keypoints is not None else None
    if flat is not None and keypoint_decimals is not None:
        flat = [[round(v, keypoint_decimals) for v in points] for points in flat]
    records = []
    for k, (box, score, cls) in enumerate(zip(result.xywh.tolist(), result.scores.tolist(), result.class_ids.tolist())):
        record = {
            "image_id": image_id,
            "category_id": int(category_ids[cls]) if category_ids is not None else int(cls),
            "bbox": [round(v, 3) for v in box],
            "score": round(score, 5),
        }
        if with_names:
            record["category_name"] = result.names[cls]
        if rles is not None:
            counts = rles[k]["counts"]
            record["segmentation"] = {"size": list(rles[k]["size"]),
                                      "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        if flat is not None:
            record["keypoints"] = flat[k]
        if result.xywhr is not None:  # oriented boxes: the rotated box and its DOTA-style polygon
            record["rbox"] = [round(v, 3) for v in result.xywhr[k].tolist()]
            record["poly"] = [round(v, 3) for v in result.corners[k].reshape(8).tolist()]
        if result.track_ids is not None:
            record["track_id"] = int(result.track_ids[k])
        records.append(record)
    return records


def frame_record(result: Result) -> dict:
    """One JSON-ready record of an image or video frame: where it came from and its detections as COCO-style
    dicts (category, bbox [x, y, w, h], score, RLE ``segmentation`` for segment models, flat ``keypoints``
    [x1, y1, v1, ...] for pose models, ``rbox`` and ``poly`` for obb models, ``track_id`` for tracked Results); a
    classifier's ``top5`` instead."""
    detections = [] if result.probs is not None else result_to_coco(result, None, with_names=True,
                                                                      keypoint_decimals=2)
    for det in detections:
        del det["image_id"]
    frame = result.frame
    h, w = result.orig_hw
    return {
        "source": frame.source if frame else result.path,
        "kind": frame.kind if frame else "image",
        "frame": frame.index if frame else 0,
        "timestamp_ms": None if frame is None or frame.timestamp_ms is None else round(frame.timestamp_ms, 3),
        "width": int(w),
        "height": int(h),
        "detections": detections,
        **({"top5": top5_entries(result)} if result.probs is not None else {}),
    }
