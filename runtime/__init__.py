"""Exact, fast CPU inference for Ultralytics YOLOv8 detect, segment and pose models exported to ONNX,
through onnxruntime (the default) or OpenVINO.

>>> from runtime import Predictor
>>> results = Predictor("yolov8n-seg.onnx").predict("bus.jpg")
"""

from .errors import EngineNotInstalledError, InputError, ModelError, YoloRuntimeError
from .letterbox import Letterbox
from .predictor import Predictor
from .result import Result
from .spec import ModelSpec

__all__ = ["Predictor", "Result", "Letterbox", "ModelSpec", "YoloRuntimeError", "ModelError", "InputError",
           "EngineNotInstalledError"]
__version__ = "0.1.0"
