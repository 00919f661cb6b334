"""Inputs through a Predictor, one :class:`Outcome` per input: the records of all its images or frames (the
CLI's ``--jsonl`` records, :func:`runtime.records.coco.frame_record`) and why it was skipped, if it was.

Both ways of running a job (this machine, or Ray actors) go through :func:`run_inputs`, so they give the
same records for the same inputs.
"""

from __future__ import annotations

import functools
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from runtime.batch.inputs import BatchInput, fetch
from runtime.errors import InputError
from runtime.predictor import Predictor
from runtime.records.coco import frame_record
from runtime.records.result import Result

FETCHERS = 8  # URLs fetched at once
# Predictor options a job takes (the CLI's names); masks are always at image resolution, as the CLI's.
PREDICTOR_OPTIONS = ("conf", "iou", "imgsz", "classes", "max_det", "agnostic", "batch", "engine", "precision",
                     "device")


@dataclass
class Outcome:
    """What became of one input: its records, in frame order (all of them, or those read before it broke),
    and ``skipped``: the reason it was skipped (None when it ran whole)."""

    source: str
    kind: str
    records: list[dict] = field(default_factory=list)
    skipped: str | None = None


def make_predictor(model: str | Path, options: dict[str, Any], threads: int | None) -> Predictor:
    """The Predictor of a job: ``options`` (see :data:`PREDICTOR_OPTIONS`), ``threads`` inference threads,
    masks at image resolution as ``python -m runtime.infer`` has them."""
    unknown = set(options) - set(PREDICTOR_OPTIONS)
    if unknown:
        raise InputError(f"unknown predictor options {sorted(unknown)}; known: {', '.join(PREDICTOR_OPTIONS)}")
    return Predictor(model, threads=threads, retina_masks=True, **options)


def record_of(result: Result, source: str) -> dict:
    """The record of one image or frame, naming ``source`` (the input's own name, not a temporary copy's)."""
    record = frame_record(result)
    record["source"] = source
    return record


def run_inputs(predictor: Predictor, inputs: Sequence[BatchInput], vid_stride: int = 1) -> Iterator[Outcome]:
    """One Outcome per input, as each finishes; URLs are first fetched to a temporary folder, FETCHERS at a
    time (those that cannot be fetched come first, as skipped)."""
    with tempfile.TemporaryDirectory(prefix="yolo-batch-") as folder:
        urls = [(k, inp) for k, inp in enumerate(inputs) if inp.is_url]
        fetched: dict[int, str | InputError] = {}
        if urls:
            with ThreadPoolExecutor(max_workers=min(FETCHERS, len(urls))) as pool:
                fetched = dict(zip((k for k, _ in urls), pool.map(functools.partial(_try_fetch, folder), urls)))
        by_path: dict[str, BatchInput] = {}
        for k, inp in enumerate(inputs):
            path = fetched.get(k, inp.source)
            if isinstance(path, InputError):
                yield Outcome(inp.source, inp.kind, skipped=str(path))
            else:
                by_path[str(Path(path))] = inp  # as the pipeline names it (``./a.jpg`` is ``a.jpg``)
        if by_path:
            yield from _grouped(predictor, by_path, vid_stride)


def _try_fetch(folder: str, item: tuple[int, BatchInput]) -> str | InputError:
    k, inp = item
    try:
        return fetch(inp, folder, f"input{k}")
    except InputError as exc:
        return exc


def _grouped(predictor: Predictor, by_path: dict[str, BatchInput], vid_stride: int) -> Iterator[Outcome]:
    """The Results of one stream over ``by_path``'s files, gathered per input. The pipeline reads files in
    order and notes an input's skip before it yields anything of a later input, so an input is complete as
    soon as a Result of a later one comes."""
    paths = list(by_path)
    reasons: dict[str, str] = {}
    noted = 0  # entries of stream.skipped already in reasons
    stream = predictor.stream(paths, vid_stride=vid_stride)

    def outcome(path: str, records: list[dict]) -> Outcome:
        nonlocal noted
        for skip in stream.skipped[noted:]:
            reasons.setdefault(skip.source, skip.message)
        noted = len(stream.skipped)
        inp = by_path[path]
        reason = reasons.get(path)
        if reason is not None and path != inp.source:
            reason = reason.replace(path, inp.source)
        return Outcome(inp.source, inp.kind, records, reason)

    with stream:
        k, pending = 0, []
        for result in stream:
            path = result.frame.source
            while paths[k] != path:
                yield outcome(paths[k], pending)
                k, pending = k + 1, []
            pending.append(record_of(result, by_path[path].source))
        for path in paths[k:]:
            yield outcome(path, pending)
            pending = []
