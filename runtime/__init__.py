"""Exact, fast CPU inference for Ultralytics YOLO detect, segment and pose models exported to ONNX,
through onnxruntime (the default) or OpenVINO.

>>> from runtime import Predictor
>>> results = Predictor("yolov8n-seg.onnx").predict("bus.jpg")

The package by stage, each importing only the ones above it (``tests/test_layers.py`` holds it so):

* :mod:`runtime.errors` -- the exceptions;
* :mod:`runtime.kernels` -- the compiled host kernels (decode, NMS, masks, letterbox) and their wrappers;
* :mod:`runtime.records` -- plain records: ModelSpec, Letterbox, FrameInfo, Result (and its COCO form);
* :mod:`runtime.heads` -- raw outputs to detections, one module per head layout;
* :mod:`runtime.engines` -- onnxruntime and OpenVINO behind one interface;
* :mod:`runtime.model` -- Model: letterbox, engine, head, Result, synchronously;
* :mod:`runtime.io` -- sources, reading images, videos and streams, writing files and videos;
* :mod:`runtime.pipeline` -- Pipeline: a Model on threads over sources;
* :mod:`runtime.predictor` -- Predictor, the facade;
* :mod:`runtime.cli` -- ``python -m runtime.infer``: outputs, drawing;
* :mod:`runtime.batch` -- ``python -m runtime.batch``: resumable batch jobs, here or on Ray (imported on demand).
"""

from runtime.errors import EngineNotInstalledError, InputError, ModelError, StreamError, YoloRuntimeError
from runtime.io.sources import StreamInput
from runtime.model import Model
from runtime.predictor import Predictor
from runtime.records.frame import FrameInfo, Skipped
from runtime.records.letterbox import Letterbox
from runtime.records.result import Result
from runtime.records.spec import ModelSpec

__all__ = ["Predictor", "Model", "Result", "FrameInfo", "Skipped", "StreamInput", "Letterbox", "ModelSpec",
           "YoloRuntimeError", "ModelError", "InputError", "StreamError", "EngineNotInstalledError"]
__version__ = "0.1.0"
