"""Inference engines: the one interface a Predictor runs a model file through, and how one is chosen.

An engine opens an ONNX file, reports its inputs and outputs (name, shape, onnxruntime-style type
string such as ``tensor(uint8)``) and its ONNX metadata map, and runs one input batch, returning
every output by name. Everything before (letterbox) and after (decode, NMS, masks, Results) is the
same for all engines, so nothing outside the engine modules knows which one runs.

Implementations live in their own modules, listed in :data:`ENGINES`, and are imported only when
asked for, so ``import runtime`` loads no inference library:

* ``onnxruntime`` (the default): :mod:`runtime.engines.onnxruntime`, a hard dependency;
* ``openvino``: :mod:`runtime.engines.openvino`, the optional extra
  ``pip install "yolo-edge-runtime[openvino]"``.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from runtime.errors import EngineNotInstalledError, InputError, ModelError

DEFAULT_ENGINE = "onnxruntime"
EXPORT_HINT = "export one with: python tools/export.py MODEL.pt -o MODEL.onnx"

# Accepted spellings of an inference precision, to the canonical name.
_PRECISIONS = {"f32": "f32", "fp32": "f32", "float32": "f32",
               "bf16": "bf16", "bfloat16": "bf16",
               "f16": "f16", "fp16": "f16", "float16": "f16"}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a model: ``shape`` holds ints for fixed dimensions and a name or None for
    dynamic ones; ``type`` is onnxruntime's spelling (``tensor(float)``, ``tensor(uint8)``, ...)."""

    name: str
    shape: tuple[int | str | None, ...]
    type: str


@dataclass(frozen=True)
class EngineOptions:
    """What the caller asked of an engine; each engine refuses what it cannot honour.

    ``threads``: inference threads (None: the library's default). ``providers``: onnxruntime execution
    providers. ``precision``: canonical inference precision ("f32", "bf16", "f16") or None for the
    engine's default. ``device``: the engine's device name (OpenVINO: CPU, GPU, NPU, AUTO) or None.
    ``cache_dir``: where an engine that compiles the model keeps the compiled blob (None: its default).
    """

    threads: int | None = None
    providers: tuple[str, ...] | None = None
    precision: str | None = None
    device: str | None = None
    cache_dir: Path | None = None


class Engine(ABC):
    """A model file opened by one inference library, ready to run batches.

    Subclasses fill ``inputs``, ``outputs`` and ``metadata`` when they open the file and implement
    :meth:`run`, which must be safe to call from several threads at once and return float32 arrays
    that stay valid for as long as the caller holds them.
    """

    name: ClassVar[str]

    def __init__(self, path: Path, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo],
                 metadata: Mapping[str, str]) -> None:
        self.path = path
        self.inputs: tuple[TensorInfo, ...] = tuple(inputs)
        self.outputs: tuple[TensorInfo, ...] = tuple(outputs)
        self.metadata: dict[str, str] = dict(metadata)

    @abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch fed to the model's (single) input: (B, 3, H, W) of the input's dtype.

        Returns every output by name, each a C-contiguous array of the output's type."""

    @property
    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What the engine actually runs with (library version, device, precision, threads), JSON-ready."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} {self.settings}>"


@dataclass(frozen=True)
class _Entry:
    """Where an engine lives: ``module`` defines ``ENGINE`` (an Engine subclass); ``package`` is the
    library it imports, ``install`` how to get it."""

    module: str
    package: str
    install: str


ENGINES: dict[str, _Entry] = {
    "onnxruntime": _Entry("runtime.engines.onnxruntime", "onnxruntime", 'pip install onnxruntime'),
    "openvino": _Entry("runtime.engines.openvino", "openvino",
                       'pip install "yolo-edge-runtime[openvino]" (or: pip install openvino)'),
}


def engine_class(engine: str) -> type[Engine]:
    """The Engine subclass registered as ``engine``; InputError for an unknown name,
    EngineNotInstalledError when its library cannot be imported."""
    entry = ENGINES.get(engine)
    if entry is None:
        raise InputError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        if missing == entry.package:
            what = f"the {engine} engine needs the {entry.package} package, which cannot be imported here ({exc})"
        else:  # installed but broken (a missing library of its own, a version clash)
            what = f"the {engine} engine cannot be loaded: importing it failed with {type(exc).__name__}: {exc}"
        raise EngineNotInstalledError(f"{what}; install it with: {entry.install}") from exc
    return module.ENGINE


def normalize_precision(precision: str | None) -> str | None:
    """The canonical name ("f32", "bf16", "f16") of a precision spelling; None stays None."""
    if precision is None:
        return None
    canonical = _PRECISIONS.get(str(precision).strip().lower())
    if canonical is None:
        raise InputError(f"unknown precision {precision!r}; choose one of: f32, bf16, f16 (or leave it unset "
                         "for the engine's default)")
    return canonical


def engine_for_file(path: str | Path) -> str:
    """The engine to run ``path`` on when the caller names none: the engine a W8A8 file was quantized for
    (its ``quantization.target_engine`` metadata) when that engine is installed, else :data:`DEFAULT_ENGINE`
    (float files, and W8A8 files whose engine is missing: the Model then warns that they run slower)."""
    from runtime.engines.onnx_metadata import read_onnx_metadata

    try:
        target = json.loads(read_onnx_metadata(path).get("quantization", "{}")).get("target_engine")
    except (ValueError, AttributeError):  # not JSON, or not a JSON object: a file with no engine of its own
        return DEFAULT_ENGINE
    if not isinstance(target, str) or target not in ENGINES:
        return DEFAULT_ENGINE
    try:
        engine_class(target)
    except EngineNotInstalledError:
        return DEFAULT_ENGINE
    return target


def open_engine(path: str | Path, engine: str | None = None, *, threads: int | None = None,
                providers: Sequence[str] | None = None, precision: str | None = None, device: str | None = None,
                cache_dir: str | Path | None = None) -> Engine:
    """Open the ONNX file ``path`` with the engine named ``engine`` (see :data:`ENGINES`; None: the one
    :func:`engine_for_file` picks).

    Options an engine cannot honour (providers on OpenVINO, a bf16 precision on onnxruntime) are
    refused with InputError. A missing or unloadable file raises ModelError naming it.
    """
    path = Path(path)
    if engine is None:
        engine = engine_for_file(path) if path.is_file() else DEFAULT_ENGINE
    cls = engine_class(engine)
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    options = EngineOptions(None if threads is None else int(threads),
                            tuple(providers) if providers else None, normalize_precision(precision),
                            str(device) if device else None,
                            None if cache_dir is None else Path(cache_dir).expanduser())
    if not path.is_file():
        raise ModelError(f"{path}: model file not found; {EXPORT_HINT}")
    return cls(path, options)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries raise pages of C++ context), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
