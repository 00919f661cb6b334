"""Command line: ``python -m runtime.batch SOURCE --model M.onnx --out DIR [--format parquet|jsonl]
[--ray [ADDRESS]] [--workers N] [--threads T] [predictor options]``.

Runs a model over every image and video frame SOURCE names (folder, glob, list file, file, or fsspec URL of
these), here or on a Ray cluster, into result shards in DIR (see :mod:`runtime.batch.shards`); rerun with the
same DIR to finish a job that stopped. Exit status: 0 when every input ran, 1 when some were skipped (listed
in DIR/skipped.jsonl), 2 for usage and model errors, 130 when interrupted (what was written stands).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from runtime.batch.job import BatchJob, JobReport
from runtime.batch.shards import FORMATS, SKIPPED_FILE
from runtime.cli.infer import find_model, quiet_opencv, stop_on_sigint
from runtime.engines import DEFAULT_ENGINE, ENGINES
from runtime.errors import InputError, YoloRuntimeError

EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
RAY_HINT = '--ray needs Ray Data, which is not installed: pip install "yolo-edge-runtime[ray]"'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.batch",
        description="Run a YOLO ONNX model over a set of images and videos, here or on a Ray cluster, into "
                    "resumable Parquet or JSONL shards.")
    parser.add_argument("source", metavar="SOURCE",
                        help="a folder (images and videos), a glob, a .txt list of files, one file, or an fsspec URL "
                             "of these (s3://, gs://, ... with the filesystem's package installed)")
    parser.add_argument("--model", "-m", type=Path, help="ONNX model; default: the only *.onnx in the current folder")
    parser.add_argument("--out", "-o", type=Path, required=True,
                        help="output folder; a rerun with the same folder runs only the inputs not yet written")
    parser.add_argument("--format", choices=FORMATS, default="parquet",
                        help="shard format (default parquet: list columns; jsonl: the --jsonl records of "
                             "python -m runtime.infer)")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run on Ray Data: a local cluster, or the one at ADDRESS (e.g. auto, ray://host:10001)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="with --ray: model workers (default: the cluster's CPUs / threads)")
    parser.add_argument("--threads", type=int, default=None, metavar="T",
                        help="inference threads per process (default: all cores here; 1 per Ray worker)")
    parser.add_argument("--vid-stride", type=int, default=1, metavar="N", help="run every N-th video frame")
    parser.add_argument("--shard-size", type=int, default=1000, metavar="N",
                        help="records per shard, about (a shard holds whole inputs; default 1000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    predictor = parser.add_argument_group("predictor options (as python -m runtime.infer)")
    predictor.add_argument("--conf", type=float, default=None, help="score threshold (default 0.25)")
    predictor.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    predictor.add_argument("--imgsz", type=int, nargs="+", metavar="N", help="letterbox size, N or H W")
    predictor.add_argument("--classes", type=int, nargs="+", metavar="ID", help="keep only these class ids")
    predictor.add_argument("--max-det", type=int, default=300, help="most detections per image (default 300)")
    predictor.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    predictor.add_argument("--batch", type=int, default=None, help="images per inference call (dynamic-batch models)")
    predictor.add_argument("--engine", choices=list(ENGINES), default=DEFAULT_ENGINE, help="inference engine")
    predictor.add_argument("--precision", default=None, metavar="P", help="f32, bf16 or f16 (default: the engine's)")
    predictor.add_argument("--device", default=None, help="OpenVINO device")
    return parser


def job_of(args: argparse.Namespace) -> BatchJob:
    """The job the arguments describe; InputError for values out of range."""
    for name in ("workers", "threads", "vid_stride", "shard_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} takes N >= 1, got {value}")
    if args.workers is not None and args.ray is None:
        raise InputError("--workers needs --ray (without it one process runs here; --threads sets its threads)")
    options = {"conf": args.conf, "iou": args.iou, "imgsz": args.imgsz, "classes": args.classes,
               "max_det": args.max_det, "agnostic": args.agnostic, "batch": args.batch, "engine": args.engine,
               "precision": args.precision, "device": args.device}
    return BatchJob(args.source, find_model(args.model), args.out, args.format, args.vid_stride, options,
                    args.shard_size, args.threads, args.workers)


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_opencv()
    if args.ray is not None and not ray_installed():
        print(f"error: {RAY_HINT}", file=sys.stderr)
        return EXIT_USAGE
    try:
        job = job_of(args)
        with stop_on_sigint() as stop:
            if args.ray is not None:
                from runtime.batch.ray_job import run_on_ray

                report = run_on_ray(job, address=args.ray or None, progress=not args.no_progress, stop=stop)
            else:
                from runtime.batch.local import run_local

                report = run_local(job, progress=not args.no_progress, stop=stop)
    except (YoloRuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _finish(report, job.out)


def _finish(report: JobReport, out: Path) -> int:
    print(report.summary(), file=sys.stderr)
    if report.skipped:
        print(f"skipped {len(report.skipped)} input{'s' if len(report.skipped) != 1 else ''} "
              f"(listed in {out / SKIPPED_FILE}):", file=sys.stderr)
        for entry in report.skipped[:20]:
            print(f"  {entry['reason']}", file=sys.stderr)
        if len(report.skipped) > 20:
            print(f"  ... and {len(report.skipped) - 20} more", file=sys.stderr)
    if report.interrupted:
        print(f"interrupted: the shards written stand; rerun with --out {out} to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_SKIPPED if report.skipped else EXIT_OK
