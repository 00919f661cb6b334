"""The Predictor a benchmark times: which engine (``--engine E[:P],...``) and how it is built.

Shared by ``bench/latency.py`` and ``bench/video.py`` (which latency.py dispatches ``--video`` to), so neither
imports the other for it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from runtime.engines import DEFAULT_ENGINE, normalize_precision


@dataclass(frozen=True)
class EngineChoice:
    """One engine to time: its registry name and the precision asked of it (None: its default)."""

    name: str
    precision: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.precision is None else f"{self.name}:{self.precision}"


def engine_list(text: str) -> list[EngineChoice]:
    """argparse type: comma-separated ENGINE[:PRECISION], e.g. "onnxruntime,openvino:f32"."""
    from runtime.engines import ENGINES
    from runtime.errors import InputError

    choices = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, precision = item.partition(":")
        if name not in ENGINES:
            raise argparse.ArgumentTypeError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
        try:
            choices.append(EngineChoice(name, normalize_precision(precision or None)))
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not choices:
        raise argparse.ArgumentTypeError(f"expected comma-separated engine names, got {text!r}")
    labels = [c.label for c in choices]
    if len(set(labels)) != len(labels):
        raise argparse.ArgumentTypeError(f"an engine is named twice in {text!r}")
    return choices


def make_predictor(model: Path, settings: dict, threads: int | None, batch: int | None,
                   engine: EngineChoice = EngineChoice(DEFAULT_ENGINE), device: str | None = None):
    """Our Predictor on ``model`` with a benchmark's ``settings`` (conf, iou, max_det, retina_masks, rle_masks)."""
    from runtime import Predictor

    return Predictor(model, conf=settings["conf"], iou=settings["iou"], max_det=settings["max_det"],
                     threads=threads, batch=batch, retina_masks=settings["retina_masks"],
                     rle_masks=settings["rle_masks"], engine=engine.name,
                     precision=engine.precision, device=device)
