"""Exact, fast CPU inference for Ultralytics YOLOv8 detect, segment and pose models exported to ONNX,
through onnxruntime (the default) or OpenVINO.

>>> from runtime import Predictor
>>> results = Predictor("yolov8n-seg.onnx").predict("bus.jpg")
"""

from .errors import EngineNotInstalledError, InputError, ModelError, StreamError, YoloRuntimeError
from .letterbox import Letterbox
from .predictor import Predictor
from .frames import FrameInfo, Skipped
from .result import Result
from .sources import StreamInput
from .spec import ModelSpec

__all__ = ["Predictor", "Result", "FrameInfo", "Skipped", "StreamInput", "Letterbox", "ModelSpec", "YoloRuntimeError",
           "ModelError", "InputError", "StreamError", "EngineNotInstalledError"]
__version__ = "0.1.0"
