"""A batch job on Ray Data: the inputs not yet written, as rows of paths, go through a pool of actors that
each load the model once (:class:`InputRunner`, ``threads`` inference threads on as many CPUs) and send back
one row per input with all its records; the driver writes them into shards as they stream in
(:func:`runtime.batch.job.write_outcomes`, as the local run does).

An input is never split between tasks, so a task lost with its actor (a crash, a node gone) is retried whole
by Ray (Ray Data restarts actors and retries their tasks without limit by default) and its inputs are written
once: the driver drops any second outcome of an input.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from runtime.batch.inputs import BatchInput, resolve_batch_inputs
from runtime.batch.job import BatchJob, JobReport, write_outcomes
from runtime.batch.run import Outcome, make_predictor, run_inputs
from runtime.batch.shards import OutputFolder

INPUTS_PER_TASK = 8  # inputs per map_batches call: small enough to spread a few videos, big enough to keep busy


def start_ray(address: str | None = None) -> bool:
    """Connect to the cluster at ``address`` or start a local one, unless this process is connected already;
    True when this call connected (so the caller disconnects)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    return True


def assigned_cpus(default: int = 1) -> int:
    """The CPUs Ray gave the calling actor or task (rounded up), ``default`` outside Ray."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - not in a Ray worker
        cpus = None
    return max(1, math.ceil(cpus)) if cpus else default


class ModelFile:
    """A model's bytes, put into Ray's object store once by the driver and written to a local temporary file
    where an actor runs, so nodes need no shared disk. (A reference, not the bytes, goes into each actor's
    constructor arguments, which Ray keeps to restart the actor.)"""

    def __init__(self, path: Path) -> None:
        import ray

        self.name, self.ref = Path(path).name, ray.put(Path(path).read_bytes())

    def materialise(self) -> str:
        import ray

        folder = tempfile.mkdtemp(prefix="yolo-model-")
        target = os.path.join(folder, self.name)
        with open(target, "wb") as handle:
            handle.write(ray.get(self.ref))
        return target


class InputRunner:
    """The job's stateful map_batches class: one Predictor per actor with as many inference threads as the
    actor has CPUs; rows ``source``, ``kind`` in, rows ``source``, ``kind``, ``records`` (JSON list of the
    input's records), ``skipped`` (reason or null) out, one per input."""

    def __init__(self, model: ModelFile, options: dict[str, Any], vid_stride: int, threads: int | None) -> None:
        import cv2

        threads = threads or assigned_cpus()
        cv2.setNumThreads(threads)
        self.predictor = make_predictor(model.materialise(), options, threads)
        self.vid_stride = vid_stride

    def __call__(self, batch):
        import pyarrow as pa

        sources, kinds = batch.column("source").to_pylist(), batch.column("kind").to_pylist()
        inputs = [BatchInput(source, kind) for source, kind in zip(sources, kinds)]
        outcomes = list(run_inputs(self.predictor, inputs, self.vid_stride))
        return pa.table({"source": [o.source for o in outcomes], "kind": [o.kind for o in outcomes],
                         "records": [json.dumps(o.records) for o in outcomes],
                         "skipped": pa.array([o.skipped for o in outcomes], pa.string())})


def run_on_ray(job: BatchJob, address: str | None = None, *, progress: bool = True,
               on_outcome: Callable[[Outcome], None] | None = None,
               stop: threading.Event | None = None, inputs_per_task: int = INPUTS_PER_TASK) -> JobReport:
    """Run ``job`` on Ray Data (the cluster at ``address``, a local one, or the one this process is connected
    to) and return what it did. ``job.workers`` actors of ``job.threads`` CPUs (default 1) each, given at most
    ``inputs_per_task`` inputs per call."""
    inputs = resolve_batch_inputs(job.source)
    make_predictor(job.model, job.options, 1)  # a bad model or option is one clear error here, not in every actor
    out = OutputFolder(job.out, job.format, job.description())
    todo = [inp for inp in inputs if inp.source not in out.done]
    report = JobReport(inputs=len(inputs), done_before=len(inputs) - len(todo))
    started = start_ray(address)
    try:
        return write_outcomes(_outcomes(job, todo, inputs_per_task), out, todo, report, job.shard_size,
                              progress=progress, on_outcome=on_outcome, stop=stop)
    finally:
        if started:
            import ray

            ray.shutdown()


def _outcomes(job: BatchJob, todo: list[BatchInput], inputs_per_task: int) -> Iterator[Outcome]:
    if not todo:
        return
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its execution plans and progress lines; errors show
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the job shows its own bar, in images/s
    context.print_on_execution_start = False
    threads = job.threads or 1
    workers = job.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
    per_task = max(1, min(inputs_per_task, math.ceil(len(todo) / workers)))
    rows = [{"source": inp.source, "kind": inp.kind} for inp in todo]
    dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per_task))
    dataset = dataset.map_batches(
        InputRunner, batch_size=per_task, batch_format="pyarrow", compute=ActorPoolStrategy(size=workers),
        num_cpus=threads,
        fn_constructor_kwargs={"model": ModelFile(job.model), "options": job.options, "vid_stride": job.vid_stride,
                               "threads": threads})
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        for row in batch.to_pylist():
            yield Outcome(row["source"], row["kind"], json.loads(row["records"]), row["skipped"])
