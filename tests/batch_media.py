"""A small batch job's inputs and how to read its outputs back, for tests/test_batch*.py: pictures of a few
sizes, a corrupt image, a whole video and one cut short."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from scenes import clip_frames, scene, write_video

IMAGES = 10
CLIP_FRAMES = 6
CUT_FRAMES = 12  # frames of the video before it is cut in half


def write_media(folder: Path) -> Path:
    """``folder`` with IMAGES pictures, ``broken.jpg`` (not an image), ``clip.mp4`` (CLIP_FRAMES frames) and
    ``cut.avi`` (a video cut in half: it opens and stops early)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(IMAGES):
        assert cv2.imwrite(str(folder / f"img{k:02d}.jpg"), scene(96 + 8 * (k % 3), 128 + 16 * (k % 2), seed=k))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    write_video(folder / "clip.mp4", clip_frames(CLIP_FRAMES))
    noisy = [np.random.default_rng(k).integers(0, 255, (72, 96, 3), dtype=np.uint8) for k in range(CUT_FRAMES)]
    full = write_video(folder.parent / f"{folder.name}-full.avi", noisy, codec="MJPG")
    data = full.read_bytes()
    (folder / "cut.avi").write_bytes(data[:len(data) // 2])
    full.unlink()
    return folder


def shard_records(out: Path) -> list[str]:
    """Every record of a job's shards (Parquet rows turned back into records) as JSON text, sorted."""
    from runtime.batch.rows import row_to_record

    lines = []
    for shard in sorted(out.glob("part-*")):
        if shard.suffix == ".jsonl":
            lines += shard.read_text().splitlines()
        else:
            import pyarrow.parquet as pq

            lines += [json.dumps(row_to_record(row)) for row in pq.read_table(shard).to_pylist()]
    return sorted(lines)


def skipped_sources(out: Path) -> list[str]:
    return sorted(json.loads(line)["source"] for line in (out / "skipped.jsonl").read_text().splitlines())
