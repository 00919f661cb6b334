"""The column form of a record, for Parquet and Ray Data: one row per image or frame, detections as list
columns. It is the CLI's ``--jsonl`` record (:func:`runtime.records.coco.frame_record`) laid out in columns,
and converts back to it exactly (:func:`row_to_record`).

Columns (:data:`COLUMNS`):

* ``source`` (string): the file or URL; ``kind`` (string): "image" or "video"; ``frame`` (int64): the frame's
  index in its video (0 for images); ``timestamp_ms`` (float64, null for images): the frame's time in its
  video; ``width``, ``height`` (int32): the image size;
* per detection, in score order: ``boxes`` (list<list<float64>>: COCO [x, y, w, h] in pixels), ``scores``
  (list<float64>), ``class_ids`` (list<int64>), ``class_names`` (list<string>);
* ``masks`` (list<string>, segment models, else null): each detection's mask as the ``counts`` of COCO
  compressed RLE at (height, width);
* ``keypoints`` (list<list<float64>>, pose models, else null): each detection's flat [x1, y1, v1, ...].
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("source", "kind", "frame", "timestamp_ms", "width", "height", "boxes", "scores", "class_ids",
           "class_names", "masks", "keypoints")


def arrow_schema():
    """The pyarrow schema of :data:`COLUMNS`."""
    import pyarrow as pa

    return pa.schema([
        ("source", pa.string()), ("kind", pa.string()), ("frame", pa.int64()), ("timestamp_ms", pa.float64()),
        ("width", pa.int32()), ("height", pa.int32()),
        ("boxes", pa.list_(pa.list_(pa.float64()))), ("scores", pa.list_(pa.float64())),
        ("class_ids", pa.list_(pa.int64())), ("class_names", pa.list_(pa.string())),
        ("masks", pa.list_(pa.string())), ("keypoints", pa.list_(pa.list_(pa.float64()))),
    ])


def record_to_row(record: dict) -> dict[str, Any]:
    """The column form of a record."""
    dets = record["detections"]
    h, w = record["height"], record["width"]
    masks = None
    if dets and "segmentation" in dets[0]:
        for det in dets:
            if list(det["segmentation"]["size"]) != [h, w]:
                raise ValueError(f"{record['source']}: mask size {det['segmentation']['size']} is not the image's "
                                 f"({h}, {w})")
        masks = [det["segmentation"]["counts"] for det in dets]
    keypoints = [det["keypoints"] for det in dets] if dets and "keypoints" in dets[0] else None
    return {
        "source": record["source"], "kind": record["kind"], "frame": record["frame"],
        "timestamp_ms": record["timestamp_ms"], "width": w, "height": h,
        "boxes": [det["bbox"] for det in dets], "scores": [det["score"] for det in dets],
        "class_ids": [det["category_id"] for det in dets], "class_names": [det["category_name"] for det in dets],
        "masks": masks, "keypoints": keypoints,
    }


def row_to_record(row: dict[str, Any]) -> dict:
    """The record (as ``--jsonl`` writes it) of a row; values read from Parquet or numpy become Python's."""
    h, w = int(row["height"]), int(row["width"])
    masks, keypoints = _listed(row.get("masks")), _listed(row.get("keypoints"))
    detections = []
    for k, (box, score, cls, name) in enumerate(zip(_listed(row["boxes"]), _listed(row["scores"]),
                                                    _listed(row["class_ids"]), _listed(row["class_names"]))):
        det = {"category_id": int(cls), "bbox": [float(v) for v in box], "score": float(score),
               "category_name": str(name)}
        if masks is not None:
            det["segmentation"] = {"size": [h, w], "counts": str(masks[k])}
        if keypoints is not None:
            det["keypoints"] = [float(v) for v in keypoints[k]]
        detections.append(det)
    timestamp = row.get("timestamp_ms")
    return {"source": str(row["source"]), "kind": str(row["kind"]), "frame": int(row["frame"]),
            "timestamp_ms": None if timestamp is None or timestamp != timestamp else float(timestamp),
            "width": w, "height": h, "detections": detections}


def _listed(value: Any) -> list | None:
    """A list column's value as a list (numpy arrays and pyarrow lists alike), None when null."""
    if value is None:
        return None
    return list(value.tolist() if hasattr(value, "tolist") else value)
