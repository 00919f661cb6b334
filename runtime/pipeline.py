"""The threaded pipeline around a :class:`~runtime.model.Model`: sources in, Results out as they come.

Three stages overlap: a worker reads and letterboxes the next batch, another runs the engine on the batch
before it, and the consuming thread runs the head on the one before that (decoding, resizing, the engines
and the kernels all release the GIL). The images of a batch are split between the consuming thread and one
helper. A live source is read by its own capture thread, and a frame is taken from it only when the engine
is free, so no frame waits for inference. Every stream has its own :class:`StreamStats`; the pipeline keeps
nothing per stream, so several streams may run through one pipeline at once.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Generic, Iterator, Sequence, TypeVar

import numpy as np

from runtime.errors import InputError
from runtime.io.frames import is_live, iter_frames
from runtime.io.sources import Source, resolve_inputs
from runtime.model import InferredBatch, Model, PreparedBatch
from runtime.records.frame import Event, Frame, Skipped
from runtime.records.result import Result

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
_END = object()  # the engine loop has run every batch
_POLL_S = 0.05  # how often a blocked hand-over checks whether the stream was closed


@dataclass
class StreamStats:
    """What a stream has done so far: ``frames`` Results yielded, ``skipped`` inputs that could not be
    read, and its live sources (``streams``), whose dropped frames :attr:`dropped` and lost connections
    :attr:`outages` count per source."""

    frames: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    streams: list = field(default_factory=list)

    @property
    def dropped(self) -> dict[str, int]:
        """Frames each live source captured but replaced with newer ones before inference took them."""
        return {s.name: s.dropped for s in self.streams}

    @property
    def outages(self) -> dict[str, tuple[int, float]]:
        """(times lost, seconds lost in all) of each live source."""
        return {s.name: (s.outages, s.outage_s) for s in self.streams}


class ResultStream(Generic[T]):
    """The iterator a stream returns: Results as they come, with the stream's :class:`StreamStats`
    (``skipped``, ``dropped``, ``outages``) readable at any time. ``close()`` (or leaving a ``with`` block)
    stops the reading threads and releases the sources; :meth:`stop` may be called from any thread (a signal
    handler too) and ends the iteration soon after, also while it waits for a frame."""

    def __init__(self, items: Iterator[T], stats: StreamStats, stop: threading.Event | None = None) -> None:
        self._items = items
        self.stats = stats
        self._stop = stop or threading.Event()

    def __iter__(self) -> "ResultStream[T]":
        return self

    def __next__(self) -> T:
        return next(self._items)

    @property
    def skipped(self) -> list[Skipped]:
        return self.stats.skipped

    @property
    def dropped(self) -> dict[str, int]:
        return self.stats.dropped

    def with_items(self, items: Iterator) -> "ResultStream":
        """A stream of ``items`` (made from this one's) sharing its stats and its :meth:`stop`."""
        return ResultStream(items, self.stats, self._stop)

    def stop(self) -> None:
        """End the stream from any thread: the iteration stops at the next frame or within a poll period."""
        self._stop.set()

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "ResultStream[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class StreamOptions:
    """How a source is read: every ``vid_stride``-th frame of videos and streams, at most ``max_frames``
    of each, a live source's buffer of ``stream_buffer`` frames, ``strict`` (raise InputError at the
    first input that cannot be read instead of skipping it) and ``reconnect`` (a live source's reconnect
    attempts per outage; None: until the stream is closed)."""

    vid_stride: int = 1
    stream_buffer: int = 1
    max_frames: int | None = None
    strict: bool = False
    reconnect: int | None = None

    def __post_init__(self) -> None:
        if self.vid_stride < 1:
            raise InputError(f"vid_stride must be >= 1, got {self.vid_stride}")
        if self.stream_buffer < 1:
            raise InputError(f"stream_buffer must be >= 1, got {self.stream_buffer}")
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.reconnect is not None and self.reconnect < 0:
            raise InputError(f"reconnect must be >= 0 (or None: until stopped), got {self.reconnect}")


class Pipeline:
    """Runs sources through ``model`` (or the model a call names) on threads; ``host_threads`` (1 or 2) is
    how many threads run the head on the images of one batch (2 unless there is one CPU)."""

    def __init__(self, model: Model, host_threads: int = 2) -> None:
        self.model = model
        self._host_pool = None
        if host_threads > 1 and _usable_cpus() > 1:
            self._host_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="yolo-postprocess")

    def stream(self, source: Source, options: StreamOptions = StreamOptions(),
               model: Model | None = None) -> ResultStream[tuple[Result, np.ndarray]]:
        """(Result, BGR image) pairs of ``source`` as they come; see :meth:`runtime.Predictor.stream`.
        ``model``: another Model on the same engine (other head settings) for this stream only."""
        model = model or self.model
        inputs = resolve_inputs(source)
        live = is_live(inputs)
        stats = StreamStats()
        stop = threading.Event()
        frames = iter_frames(inputs, vid_stride=options.vid_stride, max_frames=options.max_frames,
                             stream_buffer=options.stream_buffer, stop=stop, on_stream=stats.streams.append,
                             reconnect=options.reconnect)
        return ResultStream(self._run(model, frames, live, stats, options.strict, stop), stats, stop)

    def run_batch(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None) -> list[Result]:
        """One batch of BGR images through the model, its images' heads split over the host threads."""
        return self.results(self.model.infer(self.model.prepare(images, paths)))

    def results(self, batch: InferredBatch, model: Model | None = None) -> list[Result]:
        """The Results of an inferred batch: two images at a time (one kernel thread each, the second half
        on the helper) when there is a helper, else one at a time with every mask thread."""
        model = model or self.model
        n = len(batch)
        if n == 1 or self._host_pool is None:
            return model.results(batch)
        half = (n + 1) // 2
        later = self._host_pool.submit(model.results, batch, range(half, n), 1)
        try:
            first = model.results(batch, range(half), 1)
        finally:
            wait([later])  # the helper reads the outputs until it is done
        return first + later.result()

    @staticmethod
    def _next_batch(model: Model, frames: Iterator[Event], size: int, stats: StreamStats,
                    strict: bool) -> PreparedBatch | None:
        """Up to ``size`` frames read and letterboxed (None when the source is done); skipped inputs are
        logged and counted, or raised when ``strict``. Called on one thread at a time."""
        picked: list[Frame] = []
        for event in frames:
            if isinstance(event, Skipped):
                LOGGER.warning("skipped %s", event.message)
                stats.skipped.append(event)
                if strict:
                    raise InputError(event.message)
                continue
            picked.append(event)
            if len(picked) == size:
                break
        if not picked:
            return None
        return model.prepare([f.image for f in picked], [f.path for f in picked], [f.info for f in picked],
                             read_ms=sum(f.read_ms for f in picked) / len(picked))

    def _run(self, model: Model, frames: Iterator[Event], live: bool, stats: StreamStats, strict: bool,
             stop: threading.Event) -> Iterator[tuple[Result, np.ndarray]]:
        size = 1 if live else model.batch
        next_batch = functools.partial(self._next_batch, model, frames, size, stats, strict)
        prep_pool = None if live else ThreadPoolExecutor(max_workers=1, thread_name_prefix="yolo-prefetch")
        ran: queue.Queue = queue.Queue(maxsize=1)  # inferred batches waiting for this thread: bounded read-ahead

        def hand_over(item) -> bool:
            while not stop.is_set():
                try:
                    ran.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def engine_loop() -> None:
            """Run batch after batch without waiting for the consumer: files read the next batch meanwhile;
            a live source's frame is taken only once the engine is free, so it is the freshest."""
            try:
                ready = None if live else prep_pool.submit(next_batch)
                while not stop.is_set():
                    batch = next_batch() if live else ready.result()
                    if batch is None:
                        break
                    if not live:
                        ready = prep_pool.submit(next_batch)
                    if not hand_over(model.infer(batch)):
                        return
                hand_over(_END)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the consumer's thread
                hand_over(_Failure(exc))

        worker = threading.Thread(target=engine_loop, name="yolo-inference", daemon=True)
        worker.start()
        try:
            while True:
                try:
                    item = ran.get(timeout=_POLL_S)
                except queue.Empty:
                    if stop.is_set():  # stopped from another thread while nothing came
                        break
                    continue
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                for result, image in zip(self.results(item, model), item.prepared.images):
                    stats.frames += 1
                    yield result, image
        finally:
            stop.set()
            worker.join()
            if prep_pool is not None:
                prep_pool.shutdown(wait=True, cancel_futures=True)
            frames.close()


@dataclass(frozen=True)
class _Failure:
    """An exception of the engine loop, raised again on the consumer's thread."""

    exc: BaseException


def _usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
