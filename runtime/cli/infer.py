"""Command line: ``python -m runtime.infer SOURCE... --model M.onnx``.

Sources are images, folders (images and videos), globs, video files, camera indices, stream URLs or
``.txt`` / ``.streams`` lists of these. Prints one line per image (file, size, detections per class,
ms per stage) and a progress bar per video; saves annotated images and videos; optionally writes
COCO-style JSON (images) and a JSONL log of every image and frame. Inputs that cannot be read are
skipped and listed at the end. Exit status: 0 when every input ran, 1 when some were skipped or a
stream broke, 2 for usage and model errors, 130 when interrupted (Ctrl-C: outputs are closed and kept).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import cv2

from runtime.engines import DEFAULT_ENGINE, ENGINES, EXPORT_HINT
from runtime.errors import InputError, ModelError, YoloRuntimeError
from runtime.cli.outputs import Outputs
from runtime.predictor import Predictor
from runtime.io.video_writer import DEFAULT_CODEC, check_codec
from runtime.track import DEFAULT_TRACKER, TRACKERS

EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.infer",
        description="Detect (and segment) objects in images, videos and streams with a YOLOv8 ONNX model.",
    )
    parser.add_argument("paths", nargs="+", metavar="SOURCE",
                        help="images, videos, folders (images and videos), globs, camera indices (0, /dev/video0), "
                             "rtsp:// rtmp:// http(s):// URLs, or .txt/.streams files listing sources")
    parser.add_argument("--model", "-m", type=Path,
                        help="ONNX model (float or W8A8); default: the only *.onnx in the current folder")
    parser.add_argument("--conf", type=float, default=None,
                        help="score threshold, keep score > conf (default 0.25; 0.1 with --track, as Ultralytics)")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    parser.add_argument("--imgsz", type=int, nargs="+", metavar="N",
                        help="input size, N or H W (default: the model's own size)")
    parser.add_argument("--classes", type=int, nargs="+", metavar="ID", help="keep only these class ids")
    parser.add_argument("--max-det", type=int, default=300, help="most detections per image (default 300)")
    parser.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--batch", type=int, default=None, help="images per inference call (dynamic-batch models)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    parser.add_argument("--engine", choices=list(ENGINES), default=None,
                        help=f"inference engine (default: the one a W8A8 file was quantized for when installed, "
                             f"else {DEFAULT_ENGINE}; openvino needs `pip install \"yolo-edge-runtime[openvino]\"`)")
    parser.add_argument("--precision", default=None, metavar="P",
                        help="inference precision: f32, bf16 or f16 (default: the engine's own; OpenVINO picks "
                             "bf16 on CPUs that have it, onnxruntime runs f32)")
    parser.add_argument("--device", default=None,
                        help="OpenVINO device: CPU (default), GPU, NPU or AUTO")
    parser.add_argument("--save-dir", type=Path, default=Path("runs/infer"),
                        help="folder for annotated images and JSON (default runs/infer)")
    parser.add_argument("--no-save", action="store_true", help="do not write annotated images")
    parser.add_argument("--json", nargs="?", const="predictions.json", default=None, metavar="FILE",
                        help="also write COCO-style results of the images (boxes xywh, RLE masks) to FILE, "
                             "relative to --save-dir (default name predictions.json); video frames go to --jsonl")
    parser.add_argument("--jsonl", default=None, metavar="FILE",
                        help="write one JSON line per image or frame (source, frame, timestamp_ms, detections with "
                             "COCO boxes, RLE masks, keypoints) to FILE, relative to --save-dir, flushed as it goes")
    parser.add_argument("--vid-stride", type=int, default=1, metavar="N",
                        help="run every N-th frame of videos and streams (default 1)")
    parser.add_argument("--stream-buffer", type=int, default=1, metavar="N",
                        help="frames a live stream may queue; older ones are dropped (default 1: the latest)")
    parser.add_argument("--reconnect", type=int, default=None, metavar="N",
                        help="give a live stream that stops up to N reconnect attempts (backoff 0.5 s doubling to "
                             "30 s); default: reconnect until the run is stopped")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="run at most N frames of each video or stream")
    parser.add_argument("--track", nargs="?", const=DEFAULT_TRACKER, default=None, metavar="TRACKER",
                        help=f"track objects across frames: {', '.join(TRACKERS)} or an Ultralytics tracker YAML "
                             f"(default {DEFAULT_TRACKER}); ids go into labels and --jsonl")
    parser.add_argument("--trails", type=int, default=0, metavar="N",
                        help="with --track: draw the last N centres of each track on annotated videos")
    parser.add_argument("--video-codec", default=DEFAULT_CODEC, metavar="FOURCC",
                        help=f"codec of annotated videos (default {DEFAULT_CODEC}, in .mp4; MJPG/XVID write .avi)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="one line per video frame instead of a progress bar, and OpenCV's own logs")
    return parser


def find_model(model: Path | None) -> Path:
    """The model to use: the one given, or the only .onnx in the current folder."""
    if model is not None:
        if not model.is_file():
            raise ModelError(f"{model}: model file not found; {EXPORT_HINT}")
        return model
    candidates = sorted(Path.cwd().glob("*.onnx"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelError(f"no --model given and no .onnx file in {Path.cwd()}; {EXPORT_HINT}")
    raise ModelError(f"no --model given and several .onnx files here ({', '.join(p.name for p in candidates)}); "
                     "pick one with --model")


@contextmanager
def stop_on_sigint(on_first: Callable[[], None] = lambda: None) -> Iterator[threading.Event]:
    """While active, a first Ctrl-C (SIGINT) sets the yielded event and calls ``on_first`` (which stops the
    stream, also one still waiting for a camera), so the run ends after the current frame and closes its
    outputs; a second one raises KeyboardInterrupt as usual."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        on_first()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def quiet_opencv() -> None:
    """Silence OpenCV's and FFmpeg's own console logs (pages of C++ context for a missing camera or a corrupt
    file); the runtime reports every unreadable input itself, naming it."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg is first used
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        quiet_opencv()
    try:
        model = find_model(args.model)
        if not args.no_save:
            check_codec(args.video_codec)
        predictor = Predictor(model, conf=args.conf, iou=args.iou, max_det=args.max_det, classes=args.classes,
                              agnostic=args.agnostic, imgsz=args.imgsz, threads=args.threads, batch=args.batch,
                              retina_masks=True, engine=args.engine, precision=args.precision, device=args.device)
        if args.trails < 0:
            raise InputError(f"--trails takes N >= 0, got {args.trails}")
        options = dict(vid_stride=args.vid_stride, stream_buffer=args.stream_buffer, max_frames=args.max_frames,
                       reconnect=args.reconnect)
        if args.track is not None:
            pairs = predictor.track_with_images(args.paths, args.track, **options)
        else:
            pairs = predictor.stream_with_images(args.paths, **options)
        outputs = Outputs(args.save_dir, save=not args.no_save, json_name=args.json, jsonl=args.jsonl,
                          codec=args.video_codec, verbose=args.verbose, trails=args.trails)
    except (YoloRuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    code, broke = EXIT_OK, None
    interrupted = False
    with stop_on_sigint(pairs.stop) as stop:
        try:
            for result, image in pairs:
                outputs.add(result, image)
                if stop.is_set():
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
        except InputError as exc:  # a stream that broke for good: what ran so far stands
            broke = exc
        except YoloRuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = EXIT_USAGE
        finally:
            interrupted = interrupted or stop.is_set()  # also stopped while no frame had come yet
            pairs.close()
            outputs.close(interrupted=interrupted or broke is not None)
    skipped = pairs.skipped
    if skipped or broke is not None:
        lines = [s.message for s in skipped] + ([str(broke)] if broke is not None else [])
        print(f"skipped {len(lines)} input{'s' if len(lines) != 1 else ''}:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        code = max(code, EXIT_SKIPPED)
    outages = {k: v for k, v in pairs.stats.outages.items() if v[0]}
    if outages:
        print("outages: " + ", ".join(f"{k} {n}x, {s:.1f} s in all" for k, (n, s) in outages.items()), file=sys.stderr)
    dropped = {k: v for k, v in pairs.dropped.items() if v}
    if dropped:
        print("dropped stale frames (inference slower than the stream): "
              + ", ".join(f"{k} {v}" for k, v in dropped.items()), file=sys.stderr)
    if interrupted:
        print("interrupted: outputs so far are closed and kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
