"""Tracker cost per frame on seeded synthetic scenes, against Ultralytics' tracker classes in the same run.

    python bench/track.py [--objects 10,50,200] [--trackers bytetrack,botsort,tracktrack,ocsort] [--frames 120]
                          [--warmup 10] [--seed 0] [--no-baseline] [--json OUT.json]

For each tracker and object count, a scene of that many moving objects (present throughout, half of them occluded
once for 5 or 40 frames, 3% missed detections, some low scores, ~0.5 false positives per frame; :func:`tools.track_scenes.scene`) is fed frame by frame and every
``update`` call is timed after ``--warmup`` untimed frames. No image is passed, so camera-motion compensation (an
image-size dependent cost, the same OpenCV calls as Ultralytics) is not included.

Columns: ``dets`` mean detections per frame, ``tracks`` mean confirmed tracks returned, ``median`` / ``p90`` ms per
frame, and with the baseline (Ultralytics installed) ``ultra`` its median and ``speedup`` = ultra / ours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from bench.machine import format_machine, format_table, int_list, machine_facts, ratio, summarize  # noqa: E402
from runtime.track import Detections, make_tracker  # noqa: E402
from tools.track_scenes import scene  # noqa: E402


def time_ours(name: str, frames, warmup: int) -> tuple[list[float], float]:
    tracker = make_tracker(name)
    inputs = [Detections(f.xyxy, f.scores, f.class_ids) for f in frames]
    times, returned = [], 0
    for k, dets in enumerate(inputs):
        start = time.perf_counter()
        tracks = tracker.update(dets)
        elapsed = (time.perf_counter() - start) * 1e3
        if k >= warmup:
            times.append(elapsed)
            returned += len(tracks)
    return times, returned / max(1, len(times))


def time_ultralytics(name: str, frames, warmup: int) -> list[float] | None:
    try:
        from ultralytics.engine.results import Boxes
        from ultralytics.trackers.track import TRACKER_MAP
        from ultralytics.utils import IterableSimpleNamespace
    except ImportError:
        return None
    config = make_tracker(name).config
    tracker = TRACKER_MAP[name](args=IterableSimpleNamespace(tracker_type=name, **config.settings))
    inputs = [Boxes(np.concatenate([f.xyxy, f.scores[:, None], f.class_ids[:, None].astype(np.float32)], 1)
                    .reshape(-1, 6), (720, 1280)) for f in frames]
    times = []
    for k, boxes in enumerate(inputs):
        start = time.perf_counter()
        tracker.update(boxes)
        if k >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/track.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int_list, default=[10, 50, 200])
    p.add_argument("--trackers", default="bytetrack,botsort,tracktrack,ocsort")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="do not time Ultralytics' trackers")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    rows, records = [], []
    for name in [t for t in args.trackers.split(",") if t]:
        for n in args.objects:
            frames = scene(seed=args.seed, n_frames=args.frames + args.warmup, n_objects=n, gaps=(5, 40),
                           churn=False)
            ours, returned = time_ours(name, frames, args.warmup)
            theirs = None if args.no_baseline else time_ultralytics(name, frames, args.warmup)
            mine = summarize(ours)
            ultra = summarize(theirs)["p50"] if theirs else None
            dets = float(np.mean([len(f.xyxy) for f in frames]))
            rows.append([name, n, dets, returned, mine["p50"], mine["p90"], ultra,
                         ratio(ultra, mine["p50"]) if ultra else None])
            records.append({"tracker": name, "objects": n, "dets_per_frame": dets, "tracks_per_frame": returned,
                            "ours_ms": mine, "ultralytics_median_ms": ultra})
    print(format_machine(machine_facts()))
    print(format_table(["tracker", "objects", "dets", "tracks", "median", "p90", "ultra", "speedup"], rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_facts(), "rows": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
