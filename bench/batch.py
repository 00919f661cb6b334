"""Images/s of a batch job (``python -m runtime.batch``) on Ray Data against the same job in one process, in
the same run: by default 2 Ray workers x 1 inference thread against 1 process x 2 threads, over the shared COCO
val images, Parquet output. The modes alternate ``--repeat`` times; each run writes to a fresh folder.

Reported per run: ``wall_s`` (the whole job call: model load, Ray's actors started and the model shipped to
them, reading, inference, writing; the cluster's own start is not in it), ``images_per_s`` (records / wall_s)
and ``first_result_s`` (until the first input's records came back: what the job pays before it runs at full
speed). The cluster's start-up (``ray.init``) is timed separately. ``--copies K`` links every
image K times under other names, for a job long enough that the fixed costs weigh less.

    python bench/batch.py --model /tmp/yolov8n.onnx --json batch.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import format_machine, format_table, machine_facts  # noqa: E402
from runtime.batch.job import BatchJob  # noqa: E402
from runtime.io.sources import IMAGE_SUFFIXES  # noqa: E402

MODES = ("local", "ray")


def default_images() -> Path:
    import os

    shared = os.environ.get("YOLO_SHARED_DIR")
    root = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared"
    return root / "coco" / "val2017"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/batch.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, default=None, help="image folder (default <shared>/coco/val2017)")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--copies", type=int, default=1, help="link every image K times (a longer job)")
    parser.add_argument("--modes", default="local,ray", help="local, ray or both (default both)")
    parser.add_argument("--local-threads", type=int, default=2, help="threads of the one process (default 2)")
    parser.add_argument("--ray-workers", type=int, default=2, help="Ray workers (default 2)")
    parser.add_argument("--ray-threads", type=int, default=1, help="threads per Ray worker (default 1)")
    parser.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local cluster (default: all)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each mode, alternating (default 2)")
    parser.add_argument("--format", default="parquet", choices=("parquet", "jsonl"))
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    return parser


def _stage_images(images: Path, limit: int | None, copies: int, folder: Path) -> int:
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise SystemExit(f"{images}: no images")
    for k in range(copies):
        for path in files:
            (folder / f"{path.stem}-{k}{path.suffix}").symlink_to(path.resolve())
    return len(files) * copies


def _run(mode: str, job: BatchJob) -> dict:
    arrivals: list[float] = []

    def note(outcome) -> None:
        arrivals.append(time.perf_counter())

    t0 = time.perf_counter()
    if mode == "local":
        from runtime.batch.local import run_local

        report = run_local(job, progress=False, on_outcome=note)
    else:
        from runtime.batch.ray_job import run_on_ray

        report = run_on_ray(job, progress=False, on_outcome=note)
    wall = time.perf_counter() - t0
    return {"mode": mode, "records": report.records, "wall_s": wall, "images_per_s": report.records / wall,
            "first_result_s": arrivals[0] - t0, "skipped": len(report.skipped)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        raise SystemExit(f"--modes takes {', '.join(MODES)}")
    facts = machine_facts()
    print(format_machine(facts))
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    report: dict = {"machine": facts, "model": str(args.model), "runs": []}
    try:
        images = work / "images"
        images.mkdir()
        n = _stage_images(args.images or default_images(), args.limit, args.copies, images)
        report["images"] = n
        if "ray" in modes:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            report["ray_cluster_start_s"] = time.perf_counter() - t0
            print(f"ray cluster start-up: {report['ray_cluster_start_s']:.2f} s (not in the job times below)")
        for k in range(args.repeat):
            for mode in modes:
                threads = args.local_threads if mode == "local" else args.ray_threads
                workers = args.ray_workers if mode == "ray" else None
                job = BatchJob(str(images), args.model, work / f"out-{mode}-{k}", args.format, threads=threads,
                               workers=workers)
                run = _run(mode, job)
                run["setup"] = (f"1 process x {threads} threads" if mode == "local"
                                else f"{workers} workers x {threads} threads")
                report["runs"].append(run)
                print(f"{mode} run {k + 1}: {run['images_per_s']:.2f} images/s ({run['wall_s']:.1f} s, first result "
                      f"after {run['first_result_s']:.1f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for mode in modes:
        runs = [r for r in report["runs"] if r["mode"] == mode]
        summary[mode] = {"setup": runs[0]["setup"],
                         "images_per_s": statistics.median(r["images_per_s"] for r in runs),
                         "first_result_s": statistics.median(r["first_result_s"] for r in runs)}
    report["summary"] = summary
    if set(modes) == set(MODES):
        report["ray_vs_local"] = summary["ray"]["images_per_s"] / summary["local"]["images_per_s"]
    rows = [[m, s["setup"], f"{s['images_per_s']:.2f}", f"{s['first_result_s']:.2f}"] for m, s in summary.items()]
    print(format_table(["mode", "setup", "images/s (whole job)", "first result s"], rows))
    if "ray_vs_local" in report:
        print(f"ray / local: {report['ray_vs_local']:.2f}x (median of {args.repeat} runs each, {n} images)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
