"""Export an Ultralytics classifier (YOLOv8-cls, YOLO11-cls) to ONNX ending at the class logits.

The graph is the checkpoint's own up to the head's final Linear; the softmax is left to the runtime
(:mod:`runtime.heads.classify`), so a quantized graph is calibrated on logits rather than on probabilities squashed
towards 0 and 1. One output, ``logits`` (batch, nc); input ``images`` as in every file of the layout (uint8 RGB by
default, divided by 255 inside the graph). The metadata carries the task, the class names and the input size (224
unless asked otherwise). Called by :func:`tools.export.export_truncated` for classify checkpoints.
"""

from __future__ import annotations

import types
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tools.layout import INPUT_NAME, LOGITS_NAME, finish_graph

CLASSIFY_IMGSZ = (224, 224)
CLASSIFY_STRIDE = 32  # Ultralytics' predict rounds a classifier's imgsz up to a multiple of 32


def is_classifier(model: Any) -> bool:
    """Whether an Ultralytics model ends in a Classify head (exactly: not a subclass such as a YOLOE one)."""
    from ultralytics.nn.modules.head import Classify

    seq = getattr(model, "model", None)
    return seq is not None and len(seq) > 0 and type(seq[-1]) is Classify


def _logits_forward(self, x):
    """The Classify head's forward without its final softmax: conv, global average pool, Linear."""
    import torch

    features = torch.cat(x, 1) if isinstance(x, list) else x
    return self.linear(self.drop(self.pool(self.conv(features)).flatten(1)))


@contextmanager
def logits_head(head) -> Iterator[None]:
    """Temporarily make ``head`` (a Classify instance) return its logits."""
    head.forward = types.MethodType(_logits_forward, head)
    try:
        yield
    finally:
        del head.forward


def export_classifier(yolo: Any, pt: Path, out: Path, sha256: str, imgsz: tuple[int, int] | None,
                      batch: int | None, dynamic_hw: bool, opset: int, simplify: bool, input_dtype: str,
                      error: type[Exception], argument_error: type[Exception]) -> Path:
    """Write the logits graph of the loaded classifier ``yolo`` (an ``ultralytics.YOLO`` of ``pt``) to ``out``.

    ``imgsz`` None means 224x224; sizes must be multiples of 32 (what Ultralytics' predict would use).
    Errors raise ``argument_error`` (bad sizes) or ``error`` with one line starting with ``pt``.
    """
    import onnx
    import torch

    from runtime.io.files import atomic_output

    h, w = imgsz or CLASSIFY_IMGSZ
    if h % CLASSIFY_STRIDE or w % CLASSIFY_STRIDE:
        raise argument_error(f"{pt}: imgsz {h}x{w} (HxW) must be multiples of {CLASSIFY_STRIDE}, as Ultralytics' "
                             f"predict rounds a classifier's size (e.g. {-(-h // 32) * 32}x{-(-w // 32) * 32})")
    model = yolo.model
    names = getattr(model, "names", None) or {}
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else names
    names = {int(k): str(v) for k, v in names.items()}
    head = model.model[-1]
    nc = int(head.linear.out_features)
    if sorted(names) != list(range(nc)):
        raise error(f"{pt}: class names {sorted(names)[:5]}... do not match the {nc} outputs of the Classify head")
    model = model.fuse(verbose=False).float().cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.model[-1]

    in_axes = ({0: "batch"} if batch is None else {}) | ({2: "height", 3: "width"} if dynamic_hw else {})
    dynamic_axes = {INPUT_NAME: in_axes, LOGITS_NAME: {0: "batch"}} if in_axes else None
    with atomic_output(out) as tmp:
        with logits_head(head), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(model, torch.zeros(batch or 1, 3, h, w), str(tmp), opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[LOGITS_NAME], dynamic_axes=dynamic_axes,
                                  do_constant_folding=True, dynamo=False)
            except Exception as e:
                first = (str(e).strip() or type(e).__name__).splitlines()[0]
                raise error(f"{pt}: torch.onnx.export failed ({type(e).__name__}: {first})") from e
        import ultralytics

        metadata = dict(task="classify", names=names, strides=[], reg_max=None, nm=None, kpt_shape=None,
                        dfl_bins=None, imgsz=(h, w), batch=batch, dynamic_hw=dynamic_hw, source=pt.name,
                        source_sha256=sha256, ultralytics_version=str(ultralytics.__version__))
        model_onnx = finish_graph(onnx.load(str(tmp)), [LOGITS_NAME], metadata, input_dtype=input_dtype,
                                  simplify=simplify, where=str(pt), graph="exported", error=error)
        onnx.save(model_onnx, str(tmp))
    return out
