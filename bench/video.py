"""Frame latency on a video file: ``bench/latency.py --video FILE`` dispatches here.

Our ``Predictor.stream(FILE)`` (decode, letterbox, inference and postprocess pipelined on three
threads) is timed over the whole clip: end-to-end frames/s (frames / wall time of the loop), the
latency of each frame from the start of its decoding to its Result (p50 / p90 / p99), and each
stage's share of the per-frame stage times (read = decode, preprocess, inference, decode = head
decoding, nms, masks). With ``--compare-ultralytics PT_OR_ONNX`` Ultralytics'
``YOLO(onnx).predict(source=FILE, stream=True)`` runs on the same clip in the same process: the clip
is cut into segments of ``--segment-frames`` frames (default 30, re-encoded with the same codec) and
each segment is run by both sides back to back, alternating which goes first, so load from other
processes hits both alike; a ``.pt`` is first exported by Ultralytics itself to ONNX (in a temporary
folder), so both sides run onnxruntime. Ultralytics reads, infers and postprocesses one frame after
the other, so its per-frame latency is the interval between its Results.

``--live-fps F`` then replays the file as a live source delivering F frames/s (frame n is due n/F s
after the first; frames nobody took in time are dropped by the runtime's latest-frame buffer of
``--stream-buffer`` frames) and reports the capture-to-Result latency, the frames dropped and the
deepest the buffer got.

Targets (issue 16): frames/s >= 0.95 x 1 / inference p50; >= 1.2 x Ultralytics' frames/s; live at
a rate faster than the model: capture-to-Result p99 <= 2.5 x inference p50, no growing queue.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import format_machine, format_table, machine_facts, ratio, runtime_facts, summarize
from bench.predictors import make_predictor

SCHEMA_VERSION = 1
STAGES = ("read", "preprocess", "inference", "decode", "nms", "masks")
TRACKED_STAGES = STAGES + ("track",)
THEIR_STAGES = ("preprocess", "inference", "postprocess")
SETTINGS = dict(conf=0.25, iou=0.7, max_det=300)  # Ultralytics' predict defaults, letterbox-resolution masks


def _shares(means: dict[str, float]) -> dict[str, float]:
    total = sum(means.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in means.items()}


def _our_pass(predictor, source, tracker: str | None = None, **options) -> dict:
    """One pass of ``predictor.stream(source)`` (``predictor.track`` with ``tracker``): per-frame latency,
    stage times, wall time."""
    names = TRACKED_STAGES if tracker else STAGES
    latencies, stages = [], {k: [] for k in names}
    frames = 0
    t0 = time.perf_counter()
    stream = predictor.track(source, tracker, **options) if tracker else predictor.stream(source, **options)
    with stream:
        for result in stream:
            latencies.append((time.perf_counter() - result.frame.read_start) * 1e3)
            for k in names:
                stages[k].append(float(result.speed_ms.get(k, 0.0)))
            frames += 1
    wall = time.perf_counter() - t0
    live = {s.name: {"captured": s.captured, "dropped": s.dropped, "max_queued": s.max_queued}
            for s in stream.stats.streams}
    return {"frames": frames, "wall_s": wall, "latency": latencies, "stages": stages, "live": live,
            "skipped": [s.message for s in stream.skipped]}


def _their_pass(yolo, video: Path, kw: dict) -> dict:
    intervals, stages = [], {k: [] for k in THEIR_STAGES}
    t0 = last = time.perf_counter()
    frames = 0
    for res in yolo.predict(source=str(video), stream=True, **kw):
        now = time.perf_counter()
        intervals.append((now - last) * 1e3)
        last = now
        for k in THEIR_STAGES:
            stages[k].append(float(res.speed.get(k, 0.0)))
        frames += 1
    return {"frames": frames, "wall_s": time.perf_counter() - t0, "latency": intervals, "stages": stages}


def _merge(passes: list[dict], stage_names) -> dict:
    frames = sum(p["frames"] for p in passes)
    wall = sum(p["wall_s"] for p in passes)
    stages = {k: summarize([v for p in passes for v in p["stages"][k]]) for k in stage_names}
    means = {k: stages[k]["mean"] for k in stage_names}
    per_frame_wall_ms = wall * 1e3 / frames if frames else 0.0
    return {
        "passes": len(passes),
        "frames": frames,
        "wall_s": wall,
        "fps": frames / wall if wall > 0 else None,
        "fps_per_pass": [p["frames"] / p["wall_s"] if p["wall_s"] > 0 else None for p in passes],
        "latency_ms": summarize([v for p in passes for v in p["latency"]]),
        "stages_ms": stages,
        "stage_share": _shares(means),
        "stage_sum_ms": sum(means.values()),
        "wall_per_frame_ms": per_frame_wall_ms,
        # how much of the per-frame stage work the pipeline hid behind other stages (0: none; sequential)
        "overlap": 1 - per_frame_wall_ms / sum(means.values()) if sum(means.values()) > 0 else None,
    }


def split_video(video: Path, frames_per_segment: int, work: Path) -> list[Path]:
    """The video cut into files of ``frames_per_segment`` frames (same codec, size and fps) in ``work``,
    so both sides can be timed segment by segment, interleaved; the whole file when it is no longer."""
    import cv2

    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if frames_per_segment <= 0 or count <= frames_per_segment:
        cap.release()
        return [video]
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    code = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
    if code.lower() in ("fmp4", "divx", "xvid", "dx50", "\x00\x00\x00\x00"):  # MPEG-4 part 2: OpenCV writes it as mp4v
        code = "mp4v"
    fourcc = cv2.VideoWriter_fourcc(*code)
    segments: list[Path] = []
    writer = None
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if n % frames_per_segment == 0:
            if writer is not None:
                writer.release()
            segments.append(work / f"segment{len(segments):03d}{video.suffix}")
            writer = cv2.VideoWriter(str(segments[-1]), fourcc, fps, (frame.shape[1], frame.shape[0]))
            if not writer.isOpened():  # a codec this build reads but cannot write: fall back to mp4v
                writer = cv2.VideoWriter(str(segments[-1].with_suffix(".mp4")), cv2.VideoWriter_fourcc(*"mp4v"),
                                         fps, (frame.shape[1], frame.shape[0]))
                segments[-1] = segments[-1].with_suffix(".mp4")
        writer.write(frame)
        n += 1
    if writer is not None:
        writer.release()
    cap.release()
    return segments


def _ultralytics_model(reference: Path, imgsz: int, work: Path) -> Path:
    """Ultralytics' own ONNX export of ``reference`` (a .pt), made in ``work``; an .onnx is used as is."""
    if reference.suffix.lower() == ".onnx":
        return reference
    from ultralytics import YOLO

    copy = work / reference.name
    shutil.copy(reference, copy)
    out = YOLO(str(copy)).export(format="onnx", imgsz=imgsz, dynamic=False, verbose=False)
    return Path(out)


def _print_side(label: str, block: dict, stage_names) -> None:
    lat = block["latency_ms"]
    print(f"{label}: {block['frames']} frames in {block['wall_s']:.2f} s = {block['fps']:.2f} frames/s; "
          f"latency p50 {lat['p50']:.1f} / p90 {lat['p90']:.1f} / p99 {lat['p99']:.1f} ms")
    rows = [[k, block["stages_ms"][k]["p50"], block["stages_ms"][k]["mean"], 100 * block["stage_share"][k]]
            for k in stage_names]
    print(format_table(["stage", "p50 ms", "mean ms", "share %"], rows))


def run_video(args) -> int:
    """``bench/latency.py --video FILE [--compare-ultralytics PT] [--live-fps F]``; returns the exit code."""
    import cv2

    from runtime.errors import YoloRuntimeError
    from runtime.io.sources import StreamInput

    video: Path = args.video
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    ok = cap.isOpened()
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
    fps_file = cap.get(cv2.CAP_PROP_FPS) if ok else 0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) if ok else (0, 0)
    first = cap.read()[1] if ok else None
    cap.release()
    if first is None:
        print(f"error: {video}: cannot be read as a video", file=sys.stderr)
        return 2
    if args.live_fps is not None and not args.live_fps > 0:
        print(f"error: --live-fps must be > 0, got {args.live_fps}", file=sys.stderr)
        return 2
    facts = machine_facts()
    print(format_machine(facts))
    settings = dict(SETTINGS, retina_masks=False, rle_masks=False)
    engine = args.engine[0]
    batch = args.batch[0]
    try:
        predictor = make_predictor(args.model, settings, args.threads, batch, engine, args.device)
    except YoloRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for _ in range(max(args.warmup, 1)):
        predictor.predict_batch([first] * predictor.batch)
    print(f"\nvideo {video}: {size[0]}x{size[1]}, {fps_file:g} fps, {n_frames} frames; model {args.model} "
          f"(input {predictor.imgsz[0]}x{predictor.imgsz[1]}), batch {predictor.batch}, "
          f"engine {predictor.engine.settings.get('engine')}, threads {args.threads or 'default'}")

    yolo = kw = their_model = None
    work = Path(tempfile.mkdtemp(prefix="bench-video-"))
    try:
        if args.compare_ultralytics is not None:
            from ultralytics import YOLO

            their_model = _ultralytics_model(args.compare_ultralytics, predictor.imgsz[0], work)
            yolo = YOLO(str(their_model), task=predictor.spec.task)
            kw = dict(SETTINGS, imgsz=list(predictor.imgsz), device="cpu", verbose=False, save=False, batch=1)
            for _ in range(max(args.warmup, 1)):
                yolo.predict(first, **kw)
        segments = split_video(video, args.segment_frames, work) if yolo is not None else [video]
        if args.track is not None and yolo is None:
            segments = split_video(video, args.segment_frames, work)
        ours_passes, theirs_passes, tracked_passes = [], [], []
        sides = ["ours"] + (["theirs"] if yolo is not None else []) + (["tracked"] if args.track else [])
        # segment by segment, rotating which side goes first, so drifting load hits all alike
        for r in range(max(args.repeat, 1)):
            for i, segment in enumerate(segments):
                for side in sides[(r + i) % len(sides):] + sides[:(r + i) % len(sides)]:
                    if side == "ours":
                        ours_passes.append(_our_pass(predictor, str(segment)))
                    elif side == "theirs":
                        theirs_passes.append(_their_pass(yolo, segment, kw))
                    else:  # the same segment through the same predictor, tracked
                        tracked_passes.append(_our_pass(predictor, str(segment), args.track))
        live = None
        if args.live_fps is not None:
            replay = StreamInput(str(video), f"{video.name} replayed at {args.live_fps:g} fps", args.live_fps)
            live = _our_pass(predictor, replay, stream_buffer=args.stream_buffer)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ours = _merge(ours_passes, STAGES)
    inf_p50 = ours["stages_ms"]["inference"]["p50"]
    inf_mean = ours["stages_ms"]["inference"]["mean"]
    ours["fps_over_inference_bound"] = ratio(ours["fps"] or 0.0, 1e3 / inf_p50 if inf_p50 > 0 else 0.0)
    ours["fps_over_inference_mean_bound"] = ratio(ours["fps"] or 0.0, 1e3 / inf_mean if inf_mean > 0 else 0.0)
    # the fraction of the loop's wall time the engine was running: 1.0 = everything else hidden behind it
    ours["engine_busy"] = inf_mean * ours["frames"] / (ours["wall_s"] * 1e3) if ours["wall_s"] > 0 else None
    print()
    _print_side("ours", ours, STAGES)
    print(f"  frames/s x inference p50 = {ours['fps_over_inference_bound']:.3f} (target >= 0.95: decode and "
          f"postprocess hidden behind inference); x inference mean = {ours['fps_over_inference_mean_bound']:.3f}; "
          f"engine busy {100 * (ours['engine_busy'] or 0):.1f}% of the wall time")
    targets = {"fps_over_inference_bound": {"value": ours["fps_over_inference_bound"], "target": 0.95}}
    theirs = None
    if theirs_passes:
        theirs = _merge(theirs_passes, THEIR_STAGES)
        theirs.update(reference=str(args.compare_ultralytics), model=str(their_model))
        import ultralytics

        theirs["ultralytics"] = ultralytics.__version__
        theirs["settings"] = {k: v for k, v in kw.items() if k not in ("verbose", "save")}
        print()
        _print_side(f"Ultralytics {ultralytics.__version__} predict(stream=True) on its ONNX export", theirs,
                    THEIR_STAGES)
        speedup = ratio(ours["fps"] or 0.0, theirs["fps"] or 0.0)
        pairs = [ratio(t["wall_s"] / t["frames"], o["wall_s"] / o["frames"])
                 for o, t in zip(ours_passes, theirs_passes) if o["frames"] and t["frames"]]
        theirs["segments"] = len(segments)
        theirs["ratio_fps_ours_over_theirs_per_segment"] = summarize([p for p in pairs if p is not None])
        targets["fps_vs_ultralytics"] = {"value": speedup, "target": 1.2}
        seg = theirs["ratio_fps_ours_over_theirs_per_segment"]
        print(f"  ours / theirs frames/s = {speedup:.2f} (target >= 1.2); per segment of {args.segment_frames} frames, "
              f"timed back to back: p50 {seg['p50']:.2f} (min {seg['min']:.2f}, max {seg['max']:.2f}) over "
              f"{seg['count']} segments")
    tracked = None
    if tracked_passes:
        tracked = _merge(tracked_passes, TRACKED_STAGES)
        tracked["tracker"] = args.track
        pairs = [ratio(t["wall_s"] / t["frames"], o["wall_s"] / o["frames"])
                 for o, t in zip(ours_passes, tracked_passes) if o["frames"] and t["frames"]]
        tracked["ratio_frame_time_tracked_over_untracked_per_segment"] = summarize([p for p in pairs if p is not None])
        added = tracked["ratio_frame_time_tracked_over_untracked_per_segment"]["p50"] - 1
        targets["track_added_frame_time"] = {"value": added, "target_max": 0.02}
        print()
        _print_side(f"ours, tracked ({args.track})", tracked, TRACKED_STAGES)
        print(f"  tracked / untracked time per frame, per segment back to back: p50 {1 + added:.3f} (tracking adds "
              f"{100 * added:+.1f}%, target <= 2%); tracker p50 {tracked['stages_ms']['track']['p50']:.2f} ms per frame")
    live_block = None
    if live is not None:
        live_block = _merge([live], STAGES)
        (name, counts), = live["live"].items()
        lat = live_block["latency_ms"]
        half = len(live["latency"]) // 2
        live_inf = live_block["stages_ms"]["inference"]["p50"]
        live_block.update(source=name, replay_fps=args.live_fps, stream_buffer=args.stream_buffer, **counts,
                          latency_over_inference_p99=ratio(lat["p99"], live_inf),
                          latency_p50_first_half=float(np.median(live["latency"][:half])) if half else None,
                          latency_p50_second_half=float(np.median(live["latency"][half:])) if half else None)
        targets["live_latency_p99_over_inference"] = {"value": live_block["latency_over_inference_p99"],
                                                      "target_max": 2.5}
        print(f"\nlive replay at {args.live_fps:g} fps (buffer {args.stream_buffer}): {live_block['frames']} Results "
              f"of {counts['captured']} frames captured, {counts['dropped']} dropped, deepest queue "
              f"{counts['max_queued']}; capture-to-Result p50 {lat['p50']:.1f} / p90 {lat['p90']:.1f} / "
              f"p99 {lat['p99']:.1f} ms = {live_block['latency_over_inference_p99']:.2f} x inference p50 "
              f"{live_inf:.1f} ms (target <= 2.5); latency p50 first / second half "
              f"{live_block['latency_p50_first_half']:.1f} / {live_block['latency_p50_second_half']:.1f} ms")
    report = {
        "tool": "bench/latency.py --video",
        "schema": SCHEMA_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {"model": str(args.model), "video": str(video), "video_frames": n_frames, "video_fps": fps_file,
                     "segment_frames": args.segment_frames,
                     "video_size": list(size), "batch": predictor.batch, "threads": args.threads,
                     "warmup": args.warmup, "repeat": max(args.repeat, 1), **SETTINGS,
                     "compare_ultralytics": str(args.compare_ultralytics) if args.compare_ultralytics else None,
                     "live_fps": args.live_fps, "stream_buffer": args.stream_buffer,
                     "engine": predictor.engine.settings},
        "machine": facts,
        "runtime": runtime_facts(),
        "ours": ours,
        "ultralytics": theirs,
        "tracked": tracked,
        "live": live_block,
        "targets": targets,
    }
    if args.json is not None:
        from runtime.io.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0
