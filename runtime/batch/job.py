"""A batch job: what it runs (:class:`BatchJob`), how its outcomes become shards and a skipped list
(:func:`write_outcomes`, shared by both runners), and what it did (:class:`JobReport`)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from runtime.batch.inputs import BatchInput
from runtime.batch.run import Outcome
from runtime.batch.shards import OutputFolder
from runtime.io.files import file_sha256

LOST = "no result came back for it (the run lost it); a rerun runs it again"


@dataclass(frozen=True)
class BatchJob:
    """A job: ``source`` (folder, glob, list file, file, fsspec URL) through ``model`` into ``out`` as
    ``format`` shards of about ``shard_size`` records (whole inputs only), every ``vid_stride``-th video frame;
    ``options``: Predictor options (:data:`runtime.batch.run.PREDICTOR_OPTIONS`); ``threads``: inference
    threads per process (None: all cores here, 1 per Ray worker); ``workers``: Ray workers (None: the
    cluster's CPUs / threads)."""

    source: str
    model: Path
    out: Path
    format: str = "parquet"
    vid_stride: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    shard_size: int = 1000
    threads: int | None = None
    workers: int | None = None

    def description(self) -> dict[str, Any]:
        """What makes two runs' records comparable: the model's bytes, the options, the frame stride."""
        return {"model_sha256": file_sha256(self.model), "options": dict(sorted(self.options.items())),
                "vid_stride": self.vid_stride}


@dataclass
class JobReport:
    """What a run did: ``inputs`` the source names, ``done_before`` of them already written by earlier runs,
    ``ran`` this run, ``records`` written, ``shards`` written, ``skipped`` (the skipped file's entries),
    ``seconds`` from the first outcome awaited to the last written, ``interrupted``."""

    inputs: int = 0
    done_before: int = 0
    ran: int = 0
    records: int = 0
    shards: list[Path] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def images_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.ran} inputs run ({self.done_before} of {self.inputs} were done before), {self.records} "
                f"images and frames in {len(self.shards)} shards, {self.seconds:.1f} s, {self.images_per_s:.1f} "
                f"images/s, {len(self.skipped)} skipped")


def write_outcomes(outcomes: Iterable[Outcome], out: OutputFolder, todo: Sequence[BatchInput], report: JobReport,
                   shard_size: int, progress: bool = True,
                   on_outcome: Callable[[Outcome], None] | None = None,
                   stop: threading.Event | None = None) -> JobReport:
    """Write the outcomes of ``todo`` into shards as they come, each input whole and once (an outcome for an
    input already written, as a retried task may send, is dropped); then the skipped list: this run's skips
    and the earlier ones of inputs already written. ``stop`` set (after an input) or a KeyboardInterrupt ends the
    run early: the open shard is closed, as it holds complete inputs only (one that an interrupt or an error hit
    while an input was being added is removed instead: its inputs run again next time). ``on_outcome`` is called
    after each input."""
    from tqdm import tqdm

    wanted = {inp.source for inp in todo}
    seen: set[str] = set()
    skips: list[dict] = []
    writer = None
    adding = False  # an input is being added to the open shard
    bar = tqdm(total=None, unit="img", desc="batch", dynamic_ncols=True, mininterval=0.5, disable=not progress)
    t0 = time.perf_counter()
    try:
        for outcome in outcomes:
            if outcome.source in seen or outcome.source not in wanted:
                continue
            seen.add(outcome.source)
            report.ran += 1
            if outcome.records:
                writer = writer or out.new_shard()
                adding = True
                writer.add(outcome.records)
                adding = False
                report.records += len(outcome.records)
                if writer.records >= shard_size:
                    full, writer = writer, None
                    report.shards.append(full.close())
            if outcome.skipped is not None:
                skips.append({"source": outcome.source, "reason": outcome.skipped})
            bar.update(len(outcome.records))
            bar.set_postfix_str(f"inputs {report.done_before + report.ran}/{report.inputs}, {len(skips)} skipped",
                                refresh=False)
            if on_outcome is not None:
                on_outcome(outcome)
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
    except BaseException as exc:
        if adding:  # the shard holds part of an input: it goes, and its inputs run again next time
            writer.abort()
            writer = None
        if not isinstance(exc, KeyboardInterrupt):
            raise
        report.interrupted = True
    finally:
        if writer is not None:
            report.shards.append(writer.close())
        report.seconds = time.perf_counter() - t0
        bar.close()
    if not report.interrupted:
        skips += [{"source": s, "reason": LOST} for s in sorted(wanted - seen)]
    attempted = {s["source"] for s in skips} | seen
    earlier = [e for e in out.previous_skips() if e["source"] in out.done and e["source"] not in attempted]
    report.skipped = earlier + skips
    out.write_skipped(report.skipped)
    return report
