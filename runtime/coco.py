"""COCO-style records of Results: xywh boxes and compressed RLE masks."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .result import Result


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


def result_to_coco(result: Result, image_id: Any, category_ids: Sequence[int] | None = None,
                   with_names: bool = False) -> list[dict]:
    """One COCO result dict per detection: image_id, category_id, bbox [x, y, w, h], score, segmentation.

    ``category_ids[class_id]`` maps model classes to dataset categories (identity when None).
    """
    rles = result_rles(result)
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
        records.append(record)
    return records


def frame_record(result: Result) -> dict:
    """One JSON-ready record of an image or video frame: where it came from and its detections as COCO-style
    dicts (category, bbox [x, y, w, h], score, RLE ``segmentation`` for segment models, flat ``keypoints``
    [x1, y1, v1, ...] for pose models)."""
    detections = result_to_coco(result, None, with_names=True)
    for det in detections:
        del det["image_id"]
    if result.keypoints is not None and len(result):
        flat = np.round(result.keypoints.reshape(len(result), -1).astype(np.float64), 2).tolist()
        for det, points in zip(detections, flat):
            det["keypoints"] = points
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
    }
