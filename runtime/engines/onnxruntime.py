"""The onnxruntime engine (the default): one InferenceSession per model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.engines.base import Engine, EngineOptions, TensorInfo, first_line
from runtime.errors import InputError, ModelError


def _session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Worker threads spin between the operators of a run (fast hand-offs, and the cores stay awake)
    # but stop when the run ends: spinning on after it steals the cores that preprocessing, decode
    # and mask assembly (and the caller's own threads) need between inferences.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def _tensor_info(arg: Any) -> TensorInfo:
    return TensorInfo(arg.name, tuple(arg.shape), arg.type)


class OnnxRuntimeEngine(Engine):
    """An onnxruntime InferenceSession on the CPU execution provider (or the ``providers`` asked for).

    Float models run at float32: ``precision`` may only be None or "f32". The device is chosen
    through ``providers``; ``device`` may only be None or "CPU". ``session.run`` is thread-safe and
    returns fresh arrays, so :meth:`run` needs no lock.
    """

    name = "onnxruntime"

    def __init__(self, path: Path, options: EngineOptions) -> None:
        if options.precision not in (None, "f32"):
            raise InputError(f"the onnxruntime engine runs float models at f32 only, not {options.precision}; "
                             "reduced precision needs engine='openvino'")
        if options.device is not None and options.device.upper() != "CPU":
            raise InputError(f"the onnxruntime engine picks its device through providers, not device="
                             f"{options.device!r} (available providers: {ort.get_available_providers()})")
        available = ort.get_available_providers()
        chosen = list(options.providers) if options.providers else ["CPUExecutionProvider"]
        unknown = [p for p in chosen if p not in available]
        if unknown:
            raise ModelError(f"execution providers {unknown} are not available here (available: {available})")
        try:
            self.session = ort.InferenceSession(str(path), _session_options(options.threads), providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise ModelError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from exc
        self._threads = options.threads
        self._input_name = self.session.get_inputs()[0].name
        self._output_names = [o.name for o in self.session.get_outputs()]
        super().__init__(path, [_tensor_info(a) for a in self.session.get_inputs()],
                         [_tensor_info(a) for a in self.session.get_outputs()],
                         self.session.get_modelmeta().custom_metadata_map)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        try:
            outputs = self.session.run(self._output_names, {self._input_name: batch})
        except Exception as exc:
            raise ModelError(f"{self.path}: onnxruntime could not run a {batch.dtype} batch of shape "
                             f"{list(batch.shape)} ({first_line(exc)})") from exc
        return dict(zip(self._output_names, outputs))

    @property
    def settings(self) -> dict[str, Any]:
        return {"engine": self.name, "version": ort.__version__, "providers": self.session.get_providers(),
                "device": "CPU", "precision": "f32", "threads": self._threads}


ENGINE = OnnxRuntimeEngine
