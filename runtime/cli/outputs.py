"""Where the command line puts each Result: printed lines or a progress bar, annotated images,
annotated videos (one per video file or stream), COCO-style JSON for images, and a JSONL log of
every frame flushed as it comes."""

from __future__ import annotations

import json
import re
import sys
from collections import deque
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from runtime.records.coco import frame_record, result_to_coco
from runtime.records.probs import top5_text
from runtime.cli.draw import annotate
from runtime.errors import InputError
from runtime.io.files import atomic_write_bytes, atomic_write_json
from runtime.records.result import Result
from runtime.io.video_writer import VideoSink, video_suffix

STAGES = (("preprocess", "pre"), ("inference", "infer"), ("decode", "decode"), ("nms", "nms"), ("masks", "masks"))


def _counts(result: Result) -> str:
    """``3 person, 1 bus``, or ``no detections``; a classifier's top 5: ``cat 0.61, dog 0.20, ...``."""
    if result.probs is not None:
        return top5_text(result)
    return ", ".join(f"{n} {c}" for c, n in result.counts().items()) or "no detections"


def format_line(result: Result, name: str) -> str:
    """``name WxH: 3 person, 1 bus | ms: pre 1.2, infer 40.1, ...``"""
    h, w = result.orig_hw
    counts = _counts(result)
    stages = ", ".join(f"{short} {result.speed_ms[key]:.1f}" for key, short in STAGES if key in result.speed_ms)
    return f"{name} {w}x{h}: {counts} | ms: {stages}"


def _file_stem(source: str) -> str:
    """A file name for a source's video: the file's stem, ``camera0``, or the URL made filename-safe."""
    if source.startswith("camera "):
        return "camera" + source.split(" ", 1)[1]
    if "://" in source:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", source.split("://", 1)[1]).strip("._") or "stream"
    return Path(source).stem or "video"


class Outputs:
    """The CLI's outputs for one run; :meth:`close` finishes them all (also after an interrupt)."""

    def __init__(self, save_dir: Path, *, save: bool, json_name: str | None, jsonl: str | None,
                 codec: str, verbose: bool, trails: int = 0, out: IO[str] | None = None,
                 err: IO[str] | None = None) -> None:
        self.save_dir, self.save, self.json_name, self.codec, self.verbose = save_dir, save, json_name, codec, verbose
        self.trails = trails  # how many recent centres of each track the annotated videos draw
        self._paths: dict[str, dict[int, deque]] = {}  # per source: track id -> its recent box centres
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.records: list[dict] = []
        self.names_seen: set[str] = set()
        self.videos: dict[str, VideoSink] = {}
        self.finished: list[tuple[str, VideoSink, Path | None, bool]] = []
        self._bars: dict[str, Any] = {}
        self._seen: dict[str, int] = {}
        self._last_video: str | None = None
        self.images = self.frames = 0
        self._jsonl: IO[str] | None = None
        if jsonl is not None:
            path = save_dir / jsonl
            path.parent.mkdir(parents=True, exist_ok=True)
            self.jsonl_path = path
            self._jsonl = open(path, "w", encoding="utf-8")

    def _unique(self, stem: str, suffix: str) -> Path:
        name, k = f"{stem}{suffix}", 1
        while name in self.names_seen:
            name, k = f"{stem}_{k}{suffix}", k + 1
        self.names_seen.add(name)
        return self.save_dir / name

    def add(self, result: Result, image: np.ndarray) -> None:
        """Print, draw, write and log one Result."""
        frame = result.frame
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(frame_record(result)) + "\n")
            self._jsonl.flush()
        if frame is None or frame.kind == "image":
            self._add_image(result, image)
        else:
            self._add_frame(result, image)

    def _add_image(self, result: Result, image: np.ndarray) -> None:
        self.images += 1
        name = Path(result.path).name if result.path else (result.source or f"image{self.images - 1}")
        self._end_video()
        print(format_line(result, name), file=self.out, flush=True)
        if self.save:
            stem, suffix = Path(name).stem, Path(name).suffix or ".jpg"
            target = self._unique(stem.replace(" ", "").replace("#", ""), suffix)
            ok, encoded = cv2.imencode(suffix, annotate(image, result))
            if not ok:
                raise InputError(f"{name}: cannot encode annotated image as {suffix}")
            atomic_write_bytes(target, encoded.tobytes())
        if self.json_name:
            self.records.extend(result_to_coco(result, name, with_names=True))

    def _add_frame(self, result: Result, image: np.ndarray) -> None:
        self.frames += 1
        frame = result.frame
        source = frame.source
        if frame.kind == "video" and self._last_video not in (None, source):
            self._end_video()
        if frame.kind == "video":
            self._last_video = source
        if self.save:
            sink = self.videos.get(source)
            if sink is None:
                h, w = image.shape[:2]
                target = self._unique(_file_stem(source), video_suffix(self.codec))
                sink = self.videos[source] = VideoSink(target, frame.fps or 30.0, (w, h), self.codec)
            sink.write(annotate(image, result, trails=self._trail(source, result)))
        name = Path(source).name if frame.kind == "video" else source
        if frame.frame_count and not self.verbose:
            bar = self._bars.get(source)
            if bar is None:
                from tqdm import tqdm

                bar = self._bars[source] = tqdm(total=frame.frame_count, desc=name, unit="frame", file=self.err,
                                                dynamic_ncols=True, leave=True)
            bar.update(1)
            bar.set_postfix_str(_counts(result)[:60], refresh=False)
        else:
            seen = self._seen[source] = self._seen.get(source, 0) + 1
            total = f" ({seen}/{frame.frame_count})" if frame.frame_count else ""
            print(format_line(result, f"{name} frame {frame.index}{total}"), file=self.out, flush=True)

    def _trail(self, source: str, result: Result) -> dict[int, deque] | None:
        """The recent centres of each track of ``source``, this frame's included (None: no trails asked for)."""
        if not self.trails or result.track_ids is None:
            return None
        paths = self._paths.setdefault(source, {})
        centres = (result.xyxy[:, :2] + result.xyxy[:, 2:]) / 2
        for track_id, centre in zip(result.track_ids.tolist(), centres.tolist()):
            paths.setdefault(track_id, deque(maxlen=self.trails)).append(tuple(centre))
        return paths

    def _end_video(self) -> None:
        """Finish the video that was being read (files are read one after the other)."""
        source, self._last_video = self._last_video, None
        if source is None:
            return
        bar = self._bars.pop(source, None)
        if bar is not None:
            bar.close()
        sink = self.videos.pop(source, None)
        if sink is not None:
            self.finished.append((source, sink, sink.close(), False))

    def close(self, interrupted: bool = False) -> None:
        """Close progress bars, videos (playable, renamed into place) and the JSONL; write the JSON."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        for source, sink in list(self.videos.items()):
            self.finished.append((source, sink, sink.close(), interrupted))
        self.videos.clear()
        for source, sink, path, partial in self.finished:
            if path is not None:
                what = " (stopped early: it holds the frames run so far, and plays)" if partial else ""
                print(f"{source}: {sink.frames} annotated frames -> {path}{what}", file=self.out)
        self.finished.clear()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
            print(f"wrote one JSON line per image or frame to {self.jsonl_path}", file=self.out)
        if self.json_name:
            out = atomic_write_json(self.save_dir / self.json_name, self.records)
            print(f"wrote {len(self.records)} detections to {out}", file=self.out)
        if self.save and self.images:
            print(f"annotated images in {self.save_dir}", file=self.out)
