"""A batch job on this machine: one Predictor (the threaded Pipeline) over the inputs not yet written."""

from __future__ import annotations

import threading
from typing import Callable, Iterator, Sequence

from runtime.batch.inputs import BatchInput, resolve_batch_inputs
from runtime.batch.job import BatchJob, JobReport, write_outcomes
from runtime.batch.run import Outcome, make_predictor, run_inputs
from runtime.batch.shards import OutputFolder
from runtime.predictor import Predictor

CHUNK = 256  # inputs per stream: URLs of one chunk are fetched to temporary files, then run, then removed


def run_local(job: BatchJob, *, progress: bool = True, on_outcome: Callable[[Outcome], None] | None = None,
              stop: threading.Event | None = None) -> JobReport:
    """Run ``job`` here and return what it did (see :func:`runtime.batch.job.write_outcomes`)."""
    inputs = resolve_batch_inputs(job.source)
    predictor = make_predictor(job.model, job.options, job.threads)
    out = OutputFolder(job.out, job.format, job.description())
    todo = [inp for inp in inputs if inp.source not in out.done]
    report = JobReport(inputs=len(inputs), done_before=len(inputs) - len(todo))
    return write_outcomes(_chunked(predictor, todo, job.vid_stride), out, todo, report, job.shard_size,
                          progress=progress, on_outcome=on_outcome, stop=stop)


def _chunked(predictor: Predictor, todo: Sequence[BatchInput], vid_stride: int) -> Iterator[Outcome]:
    if not any(inp.is_url for inp in todo):
        yield from run_inputs(predictor, todo, vid_stride)  # one stream: the pipeline never drains between chunks
        return
    for start in range(0, len(todo), CHUNK):
        yield from run_inputs(predictor, todo[start:start + CHUNK], vid_stride)
