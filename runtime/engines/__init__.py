"""Inference engines: the one interface a Model runs a file through (:mod:`runtime.engines.base`), and
one module per library, imported only when asked for (:mod:`runtime.engines.onnxruntime`,
:mod:`runtime.engines.openvino`)."""

from runtime.engines.base import (DEFAULT_ENGINE, ENGINES, EXPORT_HINT, Engine, EngineOptions, TensorInfo,
                                  engine_class, engine_for_file, first_line, normalize_precision, open_engine)

__all__ = ["DEFAULT_ENGINE", "ENGINES", "EXPORT_HINT", "Engine", "EngineOptions", "TensorInfo", "engine_class",
           "engine_for_file", "first_line", "normalize_precision", "open_engine"]
