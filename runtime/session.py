"""The onnxruntime session of a Predictor: creation with clear errors, and the model's spec."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, ModelError
from .spec import ModelSpec, read_model_spec

LOGGER = logging.getLogger(__name__)
EXPORT_HINT = "export one with: python tools/export.py MODEL.pt -o MODEL.onnx"


def open_session(model: str | Path, threads: int | None = None, providers: Sequence[str] | None = None):
    """Create an onnxruntime InferenceSession for ``model``; ModelError if it cannot be loaded."""
    import onnxruntime as ort

    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found; {EXPORT_HINT}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Worker threads spin between the operators of a run (fast hand-offs, and the cores stay awake)
    # but stop when the run ends: spinning on after it steals the cores that preprocessing, decode
    # and mask assembly (and the caller's own threads) need between inferences.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        if threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    available = ort.get_available_providers()
    chosen = list(providers) if providers else ["CPUExecutionProvider"]
    unknown = [p for p in chosen if p not in available]
    if unknown:
        raise ModelError(f"execution providers {unknown} are not available here (available: {available})")
    try:
        return ort.InferenceSession(str(path), options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a loadable ONNX model ({first_line})") from exc


def session_spec(session, path: str | Path) -> ModelSpec:
    """Read the ModelSpec of an open session."""
    meta = session.get_modelmeta().custom_metadata_map
    return read_model_spec(path, meta, session.get_inputs(), session.get_outputs())


def run_session(session, spec: ModelSpec, batch_chw: np.ndarray) -> dict[str, np.ndarray]:
    """Run one batch (B, 3, H, W) of the model's input dtype (``spec.input_dtype``); returns outputs by name."""
    outputs = session.run(spec.output_names, {spec.input_name: batch_chw})
    return dict(zip(spec.output_names, outputs))
