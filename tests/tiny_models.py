"""Tiny YOLO-shaped ONNX models built with ``onnx.helper``: ``onnx`` and ``numpy`` only, no torch.

They have the interface of a real export, so the runtime cannot tell them apart, but they run in well under a
millisecond and need no checkpoint:

* :func:`tiny_truncated_model` -- our truncated-head layout (``tools/layout.py``): a uint8 (B, 3, H, W) input
  normalised in the graph (``Cast`` + ``Div 255``), per level (strides 8, 16, 32) the raw head convolutions
  ``box_pN`` (4 * reg_max DFL logits), ``cls_pN`` (nc class logits), ``mc_pN`` (nm mask coefficients, segment)
  or ``kpt_pN`` (raw keypoints, pose) or ``ang_pN`` (angle logits, obb), and ``proto`` (nm, H/4, W/4) for segment, with the metadata our exporter
  writes (through :func:`tools.layout.finish_graph`, as ``tools/export.py`` does).
* :func:`tiny_stock_model` -- a stock Ultralytics detect export: float input, ``output0`` (B, 4 + nc, N) of
  decoded centre-size boxes and sigmoid scores.

The "backbone" is one seeded 3x3 convolution + ReLU, average- and max-pooled to each level's grid and normalised
per image (``InstanceNormalization``): the head convolutions see features of unit spread on any image with some
structure, so the class-logit bias alone sets how many anchors pass a threshold -- a few to a few dozen
detections at conf 0.25 on a picture, none on a flat image. DFL bin biases favour short distances, so boxes
span a few cells of their level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

TINY_IMGSZ = 64  # levels of 8x8, 4x4 and 2x2 cells (84 anchors); prototypes of 16x16
STRIDES = (8, 16, 32)
REG_MAX = 16
NM = 32
KPT_SHAPE = (17, 3)
NUMERIC_NAMES = tuple(str(k) for k in range(80))  # as a random-init Ultralytics model names its 80 classes
_FEATURES = 16  # channels of the stem convolution
# class-logit bias per task: about 20-40 candidates above conf 0.25 before NMS on a 64x64 picture
CLASS_BIAS = {"detect": -3.4, "segment": -3.4, "pose": -1.8, "obb": -3.4}
_DFL_DECAY = 0.6  # logit drop per DFL bin: expected distances of about one to two cells


def _conv(rng: np.random.Generator, name: str, x: str, c_in: int, c_out: int, *, scale: float = 1.0,
          bias: np.ndarray | float = 0.0, k: int = 1) -> tuple[list, list, str]:
    """A ``k x k`` Conv of seeded normal weights (spread ``scale`` over the inputs): (nodes, initialisers, out)."""
    from onnx import helper, numpy_helper

    weight = (rng.standard_normal((c_out, c_in, k, k)) * scale / np.sqrt(c_in * k * k)).astype(np.float32)
    bias_array = np.broadcast_to(np.asarray(bias, np.float32), (c_out,)).copy()
    inits = [numpy_helper.from_array(weight, f"{name}.weight"), numpy_helper.from_array(bias_array, f"{name}.bias")]
    pads = [k // 2] * 4
    node = helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name, kernel_shape=[k, k],
                            pads=pads)
    return [node], inits, name


def _features(x: str, stride: int, channels: int, name: str) -> tuple[list, list, str]:
    """Average- and max-pooled ``x`` on a grid of ``stride``, normalised per image and channel: (nodes, inits, out)."""
    from onnx import helper, numpy_helper

    pool = {"kernel_shape": [stride, stride], "strides": [stride, stride]}
    nodes = [
        helper.make_node("AveragePool", [x], [f"{name}.avg"], name=f"{name}.avg", **pool),
        helper.make_node("MaxPool", [x], [f"{name}.max"], name=f"{name}.max", **pool),
        helper.make_node("Concat", [f"{name}.avg", f"{name}.max"], [f"{name}.cat"], name=f"{name}.cat", axis=1),
        helper.make_node("InstanceNormalization", [f"{name}.cat", f"{name}.gamma", f"{name}.beta"], [name], name=name,
                         epsilon=1e-3),
    ]
    inits = [numpy_helper.from_array(np.ones(2 * channels, np.float32), f"{name}.gamma"),
             numpy_helper.from_array(np.zeros(2 * channels, np.float32), f"{name}.beta")]
    return nodes, inits, name


def _graph_inputs(imgsz: tuple[int, int], batch: int | None):
    from onnx import TensorProto, helper

    return [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch or "batch", 3, *imgsz])]


def _float_output(name: str, channels: int, hw: tuple[int, int], batch: int | None):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch or "batch", channels, *hw])


def tiny_truncated_model(path: str | Path, task: str = "detect", *, names: Sequence[str] | None = None,
                         imgsz: int | tuple[int, int] = TINY_IMGSZ, batch: int | None = None,
                         input_dtype: str = "uint8", seed: int = 0, cls_bias: float | None = None) -> Path:
    """Write a tiny truncated-head ``task`` model ("detect", "segment", "pose" or "obb") to ``path`` and return it.

    ``names``: the class names (default: 80 numeric ones; "person" for pose); ``imgsz``: its fixed input size, a
    multiple of 32; ``batch``: a fixed batch (None: dynamic); ``input_dtype``: "uint8" (normalised in the graph,
    our default export) or "float32"; ``seed``: the weights; ``cls_bias``: the class-logit bias (default
    :data:`CLASS_BIAS`).
    """
    import onnx
    from onnx import helper

    from tools.layout import finish_graph, output_names

    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    if h % max(STRIDES) or w % max(STRIDES):
        raise ValueError(f"imgsz {h}x{w} is not a multiple of {max(STRIDES)}")
    names = tuple(names) if names is not None else (("person",) if task == "pose" else NUMERIC_NAMES)
    nc = len(names)
    extra = {"detect": None, "segment": ("mc", NM), "pose": ("kpt", int(np.prod(KPT_SHAPE))), "obb": ("ang", 1)}[task]
    rng = np.random.default_rng(seed)
    bias = CLASS_BIAS[task] if cls_bias is None else cls_bias

    nodes, inits, stem = _conv(rng, "stem", "images", 3, _FEATURES, scale=2.0, k=3)
    nodes.append(helper.make_node("Relu", [stem], ["stem.relu"], name="stem.relu"))
    outputs = []
    dfl_bias = np.tile(-_DFL_DECAY * np.arange(REG_MAX, dtype=np.float32), 4)
    for stride in STRIDES:
        level = f"p{int(np.log2(stride))}"
        grid = (h // stride, w // stride)
        f_nodes, f_inits, feats = _features("stem.relu", stride, _FEATURES, f"{level}.features")
        nodes += f_nodes
        inits += f_inits
        heads = [("box", 4 * REG_MAX, 1.0, dfl_bias), ("cls", nc, 1.0, bias)]
        if extra is not None:
            heads.append((extra[0], extra[1], 0.5, 0.0))
        for kind, channels, scale, head_bias in heads:
            c_nodes, c_inits, out = _conv(rng, f"{kind}_{level}", feats, 2 * _FEATURES, channels, scale=scale,
                                          bias=head_bias)
            nodes += c_nodes
            inits += c_inits
            outputs.append(_float_output(out, channels, grid, batch))
    if task == "segment":
        f_nodes, f_inits, feats = _features("stem.relu", 4, _FEATURES, "proto.features")
        c_nodes, c_inits, _ = _conv(rng, "proto", feats, 2 * _FEATURES, NM)
        nodes += f_nodes + c_nodes
        inits += f_inits + c_inits
        outputs.append(_float_output("proto", NM, (h // 4, w // 4), batch))

    ordered = output_names(task, STRIDES)
    assert [o.name for o in outputs] == ordered, [o.name for o in outputs]
    graph = helper.make_graph(nodes, f"tiny-{task}", _graph_inputs((h, w), batch), outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tiny_models")
    metadata = dict(task=task, names=dict(enumerate(names)), strides=STRIDES, reg_max=REG_MAX,
                    nm=NM if task == "segment" else None, kpt_shape=KPT_SHAPE if task == "pose" else None,
                    dfl_bins=None, imgsz=(h, w), batch=batch, dynamic_hw=False, source=f"tiny-{task}-s{seed}",
                    source_sha256="0" * 64, ultralytics_version="none")
    model = finish_graph(model, ordered, metadata, input_dtype=input_dtype, simplify=False, where=str(path),
                         graph="tiny", error=ValueError)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def tiny_stock_model(path: str | Path, *, names: Sequence[str] = NUMERIC_NAMES, imgsz: int = TINY_IMGSZ,
                     stride: int = 8, seed: int = 0, cls_bias: float = CLASS_BIAS["detect"]) -> Path:
    """Write a tiny stock-layout detect model (as Ultralytics exports one: float RGB 0..1 input, ``output0`` of
    (B, 4 + nc, N) centre-size boxes in input pixels and sigmoid scores, one anchor per ``stride`` cell) to
    ``path`` and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nc = len(names)
    cells = imgsz // stride
    rng = np.random.default_rng(seed)
    nodes, inits, stem = _conv(rng, "stem", "images", 3, _FEATURES, scale=2.0, k=3)
    nodes.append(helper.make_node("Relu", [stem], ["stem.relu"], name="stem.relu"))
    f_nodes, f_inits, feats = _features("stem.relu", stride, _FEATURES, "features")
    c_nodes, c_inits, raw = _conv(rng, "head", feats, 2 * _FEATURES, 4 + nc, bias=[0.0] * 4 + [cls_bias] * nc)
    nodes += f_nodes + c_nodes
    inits += f_inits + c_inits
    ys, xs = np.mgrid[:cells, :cells].astype(np.float32)
    centres = (np.stack([xs.ravel(), ys.ravel()]) + 0.5) * stride  # (2, N)
    inits += [numpy_helper.from_array(np.array([0, 4 + nc, -1], np.int64), "flat_shape"),
              numpy_helper.from_array(np.array([stride], np.float32), "stride"),
              numpy_helper.from_array(np.array([4 * stride], np.float32), "max_side"),
              numpy_helper.from_array(centres[None], "centres"),
              numpy_helper.from_array(np.array([2, 2, nc], np.int64), "split")]
    nodes += [
        helper.make_node("Reshape", [raw, "flat_shape"], ["flat"]),
        helper.make_node("Split", ["flat", "split"], ["xy_raw", "wh_raw", "cls_raw"], axis=1),
        helper.make_node("Tanh", ["xy_raw"], ["xy_unit"]),
        helper.make_node("Mul", ["xy_unit", "stride"], ["xy_offset"]),
        helper.make_node("Add", ["xy_offset", "centres"], ["xy"]),
        helper.make_node("Sigmoid", ["wh_raw"], ["wh_unit"]),
        helper.make_node("Mul", ["wh_unit", "max_side"], ["wh"]),
        helper.make_node("Sigmoid", ["cls_raw"], ["scores"]),
        helper.make_node("Concat", ["xy", "wh", "scores"], ["output0"], axis=1),
    ]
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + nc, cells * cells])
    graph = helper.make_graph(nodes, "tiny-stock-detect", _graph_inputs((imgsz, imgsz), None), [output],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tiny_models")
    model.ir_version = min(model.ir_version, 10)
    helper.set_model_props(model, {"description": "tiny stock-layout test model", "task": "detect",
                                   "names": repr(dict(enumerate(names))), "stride": str(stride),
                                   "imgsz": repr([imgsz, imgsz]), "batch": "1"})
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path
