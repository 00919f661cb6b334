"""Exceptions raised by the runtime: one base class, one subclass per kind of bad input."""


class YoloRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""


class ModelError(YoloRuntimeError):
    """The model file is missing, unreadable, or not a YOLOv8 ONNX the runtime understands."""


class InputError(YoloRuntimeError):
    """An image, folder or argument passed by the caller is unusable."""


class StreamError(InputError):
    """A live stream stopped and could not be reopened; the message names the source."""


class EngineNotInstalledError(YoloRuntimeError, ImportError):
    """The inference engine asked for is not installed; the message says how to install it."""
