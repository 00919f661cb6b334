"""Where onnxruntime spends a model's inference time: its own profiler, summed by operator type and by node.

Usage::

    python bench/ort_profile.py MODEL.onnx [--runs 20] [--threads 2] [--top 12]

Runs the model on a random 640x640 (or the model's fixed size) input, after 5 untimed runs, with onnxruntime's
``enable_profiling``; prints the median wall time per run, the kernel time per run by operator type (after
onnxruntime's own fusions: QLinearConv, QLinearSigmoid, ...) and the costliest nodes. Used to see what keeps a W8A8
file from running as int8 kernels (float Conv, DequantizeLinear, requantizing QLinearConcat).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

WARMUP = 5


def profile(model: Path, runs: int, threads: int | None) -> tuple[float, dict[str, float], dict[str, float]]:
    """(median ms per run, {op type: ms per run}, {node (op type): ms per run}) over ``runs`` timed runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else (1 if i == 0 else 640) for i, d in enumerate(spec.shape)]
        rng = np.random.default_rng(0)
        x = (rng.integers(0, 256, shape, dtype=np.uint8) if "uint8" in spec.type
             else rng.random(shape, dtype=np.float32))
        for _ in range(WARMUP):
            session.run(None, {spec.name: x})
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, {spec.name: x})
            times.append(time.perf_counter() - start)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_type: collections.Counter = collections.Counter()
    by_node: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            by_type[op] += event["dur"]
            by_node[f"{event['name'][:-len('_kernel_time')]} ({op})"] += event["dur"]
    per_run = 1e-3 / (runs + WARMUP)  # microseconds over every profiled run -> ms per run
    return (float(np.median(times)) * 1e3, {k: v * per_run for k, v in by_type.most_common()},
            {k: v * per_run for k, v in by_node.most_common()})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--runs", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime's)")
    p.add_argument("--top", type=int, default=12, help="rows of each table (default 12)")
    args = p.parse_args(argv)
    if not args.model.is_file():
        print(f"error: {args.model}: model file not found", file=sys.stderr)
        return 2
    print(f"load average {os.getloadavg()[0]:.2f}")
    median, by_type, by_node = profile(args.model, args.runs, args.threads)
    total = sum(by_type.values())
    print(f"{args.model}: median {median:.1f} ms per run; kernel time {total:.1f} ms per run")
    print(f"{'operator':<28} {'ms/run':>8} {'share':>6}")
    for op, ms in list(by_type.items())[:args.top]:
        print(f"{op:<28} {ms:8.2f} {100 * ms / total:5.1f}%")
    print(f"\n{'node':<70} {'ms/run':>8}")
    for node, ms in list(by_node.items())[:args.top]:
        print(f"{node:<70} {ms:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
