"""The OpenVINO engine: the same ONNX file read by OpenVINO and compiled for a device (CPU here).

The compiled model is kept in a cache folder (OpenVINO's ``CACHE_DIR``), so a second process loads
the blob instead of compiling again: ``$YOLO_EDGE_OPENVINO_CACHE`` (empty: no cache), else
``$XDG_CACHE_HOME/yolo-edge-runtime/openvino`` (default ``~/.cache/...``); ``cache_dir`` overrides
both. OpenVINO keys each blob by the model, the device and the compile options.

Options: ``PERFORMANCE_HINT`` LATENCY (one stream, every thread on one request at a time);
``INFERENCE_NUM_THREADS`` from ``threads`` (CPU only); ``INFERENCE_PRECISION_HINT`` from
``precision`` (None keeps the device default: bf16 on CPUs with AVX512-BF16 or AMX, f32 on the rest).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import openvino as ov

from runtime.engines.base import Engine, EngineOptions, TensorInfo, first_line
from runtime.errors import InputError, ModelError

LOGGER = logging.getLogger(__name__)
CACHE_ENV = "YOLO_EDGE_OPENVINO_CACHE"
VERSION = ov.__version__.split("-")[0]
# OpenVINO element type names to onnxruntime's type strings (what runtime.records.spec reads).
_TYPES = {"u8": "tensor(uint8)", "i8": "tensor(int8)", "u16": "tensor(uint16)", "i16": "tensor(int16)",
          "u32": "tensor(uint32)", "i32": "tensor(int32)", "u64": "tensor(uint64)", "i64": "tensor(int64)",
          "f16": "tensor(float16)", "bf16": "tensor(bfloat16)", "f32": "tensor(float)", "f64": "tensor(double)",
          "boolean": "tensor(bool)", "string": "tensor(string)"}
_NUMPY = {"tensor(uint8)": np.dtype(np.uint8), "tensor(float)": np.dtype(np.float32)}
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")  # devices made of others

_core: ov.Core | None = None
_core_lock = threading.Lock()


def core() -> ov.Core:
    """The process's OpenVINO Core (one is enough, and creating it loads the plugin registry)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


def default_cache_dir() -> Path | None:
    """Where compiled models are kept when no ``cache_dir`` is given; None: not cached."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "yolo-edge-runtime" / "openvino"


def _tensor_info(port: Any, path: Path, kind: str) -> TensorInfo:
    name = port.get_any_name()
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise ModelError(f"{path}: {kind} '{name}' has a dynamic rank; export it with a fixed number of dimensions")
    type_name = port.get_element_type().get_type_name()
    dims = tuple(d.get_length() if d.is_static else None for d in shape)
    return TensorInfo(name, dims, _TYPES.get(type_name, f"tensor({type_name})"))


def _flatten(values: dict, prefix: str = "") -> dict[str, str]:
    """rt_info entries to strings; OpenVINO nests a key holding spaces ("a b") as a/b."""
    out: dict[str, str] = {}
    for key, value in values.items():
        value = value.value if isinstance(value, ov.OVAny) else value
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key} "))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _metadata(model: ov.Model, path: Path) -> dict[str, str]:
    """The ONNX file's metadata_props: OpenVINO's ONNX reader keeps them in rt_info["framework"]."""
    info = model.get_rt_info()
    if "framework" in info:
        return _flatten(info["framework"])
    from runtime.engines.onnx_metadata import read_onnx_metadata

    return read_onnx_metadata(path)  # the file may simply have none: read them from the file to be sure


def _check_device(device: str) -> None:
    base = device.split(":")[0].split(".")[0].upper()
    if base in _VIRTUAL_DEVICES:
        return
    available = core().available_devices
    if not any(d.split(".")[0].upper() == base for d in available):
        raise InputError(f"OpenVINO device {device!r} is not available here (available: {', '.join(available)}; "
                         "AUTO picks one)")


class _RequestPool:
    """InferRequests to run batches on. A request is lent out together with its output arrays (views
    of its own output memory: no copy) and taken back only once the last of those arrays is freed,
    so outputs stay valid for as long as the caller holds them and a request is never shared by
    two threads. Requests are created as needed: as many as batches in flight at once."""

    def __init__(self, compiled: ov.CompiledModel, keep: int = 4) -> None:
        self._compiled = compiled
        self._free: list[ov.InferRequest] = []
        self._lock = threading.Lock()
        self._keep = keep

    def take(self) -> ov.InferRequest:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._compiled.create_infer_request()

    def give(self, request: ov.InferRequest) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(request)

    def lend(self, request: ov.InferRequest, arrays: Iterable[np.ndarray]) -> None:
        arrays = list(arrays)
        left = [len(arrays)]
        lock = threading.Lock()

        def freed() -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self.give(request)

        for array in arrays:
            weakref.finalize(array, freed).atexit = False


class OpenVinoEngine(Engine):
    """An ONNX file read by OpenVINO and compiled for ``device`` (default CPU) with the latency hint.

    :meth:`run` takes a request from a pool, so it is safe from several threads; it returns float32
    views of that request's output memory, which the request does not reuse while any is alive.
    """

    name = "openvino"

    def __init__(self, path: Path, options: EngineOptions) -> None:
        if options.providers:
            raise InputError("providers are onnxruntime execution providers; the openvino engine takes "
                             "device= instead (CPU, GPU, NPU, AUTO)")
        self._device = options.device or "CPU"
        _check_device(self._device)
        try:
            model = core().read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError with pages of C++ context
            raise ModelError(f"{path}: not a loadable ONNX model (OpenVINO: {first_line(exc)})") from exc
        inputs = [_tensor_info(p, path, "input") for p in model.inputs]
        outputs = [_tensor_info(p, path, "output") for p in model.outputs]
        super().__init__(path, inputs, outputs, _metadata(model, path))

        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if options.threads is not None and self._device.upper().startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = options.threads
        if options.precision is not None:
            config["INFERENCE_PRECISION_HINT"] = options.precision
        self._cache_dir = options.cache_dir if options.cache_dir is not None else default_cache_dir()
        if self._cache_dir is not None:
            try:
                self._cache_dir.mkdir(parents=True, exist_ok=True)
                config["CACHE_DIR"] = str(self._cache_dir)
            except OSError as exc:
                LOGGER.warning("OpenVINO model cache %s cannot be created (%s); compiling without it",
                               self._cache_dir, exc)
                self._cache_dir = None
        try:
            self.compiled = core().compile_model(model, self._device, config)
        except Exception as exc:
            raise ModelError(f"{path}: OpenVINO cannot compile it for {self._device} with {config} "
                             f"({first_line(exc)})") from exc
        self._precision = self._property("INFERENCE_PRECISION_HINT")
        if options.precision is not None and self._precision not in (None, options.precision):
            LOGGER.warning("%s: OpenVINO runs at %s on %s, not the %s asked for", path, self._precision,
                           self._device, options.precision)
        self._threads = self._property("INFERENCE_NUM_THREADS")
        self._input_dtype = _NUMPY.get(inputs[0].type) if len(inputs) == 1 else None
        self._output_names = [o.name for o in outputs]
        self._pool = _RequestPool(self.compiled)

    def _property(self, key: str) -> Any:
        try:
            value = self.compiled.get_property(key)
        except Exception:  # noqa: BLE001 - not every device reports every property
            return None
        if isinstance(value, ov.Type):
            return value.get_type_name()
        return value

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self._input_dtype is not None and batch.dtype != self._input_dtype:
            raise InputError(f"{self.path}: input is {self.inputs[0].type}, got a {batch.dtype} batch")
        batch = np.ascontiguousarray(batch)
        request = self._pool.take()
        try:
            request.infer({0: batch}, share_inputs=True, share_outputs=True)
            outputs = {name: request.get_output_tensor(k).data for k, name in enumerate(self._output_names)}
        except Exception as exc:
            self._pool.give(request)
            raise ModelError(f"{self.path}: OpenVINO could not run a {batch.dtype} batch of shape "
                             f"{list(batch.shape)} ({first_line(exc)})") from exc
        self._pool.lend(request, outputs.values())
        return outputs

    @property
    def settings(self) -> dict[str, Any]:
        return {"engine": self.name, "version": VERSION, "device": self._device,
                "execution_devices": self._property("EXECUTION_DEVICES"), "precision": self._precision,
                "threads": self._threads, "cache_dir": str(self._cache_dir) if self._cache_dir else None}


ENGINE = OpenVinoEngine
