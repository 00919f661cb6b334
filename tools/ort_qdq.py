"""The onnxruntime W8A8 layout: onnxruntime's ``quantize_static`` (QDQ on every tensor) with ranges chosen so that
its CPU provider runs the whole body as int8 kernels, and the input read as int8 directly.

onnxruntime fuses ``DQ -> Conv -> Q`` into QLinearConv, ``Sigmoid`` / ``Mul`` into QLinearSigmoid (a table lookup) /
QLinearMul, ``Concat`` into QLinearConcat, and runs Split, Slice, MaxPool and Resize on uint8 when their input and
output share a scale. Edits on top of the calibration make that layout cheap and accurate:

* ``silu_clip``: a SiLU input's range starts at -C at the lowest. SiLU is flat there (|SiLU(x)| < 0.007 for x < -7),
  while minmax ranges of pre-SiLU conv outputs often reach -100 and waste most of the 8-bit levels.
* shared scales (``shared_scales``): every Concat's inputs and output, and every Split's, Slice's, MaxPool's and
  Resize's input and outputs, take one range (the union of theirs), so a concat is a copy and nothing requantizes
  between convs. These tensors are linked through the C2f / C3k2 / SPPF blocks, so the groups are closed
  transitively.
* the input: our exports read uint8 RGB and divide by 255 in the graph; that tensor *is* int8 data with scale 1/255
  and zero point 0, so the Cast, Div and QuantizeLinear in front of the first conv are replaced by that exact
  dequantization of the input (no calibration error, and three passes over the image fewer).
* optionally, bias correction (:func:`correct_biases`) on the grid quantize_static rounds the weights to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tools.qdq import ActivationStats, bias_shift
from tools.quant_model import as_model, quiet, silu_inputs

# ops that move values without computing new ones: onnxruntime runs them on uint8 when input and outputs share a scale
SCALE_SHARING_OPS = ("Concat", "Split", "Slice", "MaxPool", "Resize")

__all__ = ["SCALE_SHARING_OPS", "adjust_ranges", "build_ort_qdq", "correct_biases", "fold_input_normalisation",
           "ort_weight_grid", "scale_groups"]


def scale_groups(model) -> list[list[str]]:
    """Tensors that must share one quantization range: the inputs and outputs of every op in
    :data:`SCALE_SHARING_OPS`, merged where they overlap (union-find), in graph order; singletons left out."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for node in model.graph.node:
        if node.op_type not in SCALE_SHARING_OPS:
            continue
        data_inputs = node.input[:1] if node.op_type in ("Split", "Slice", "Resize") else node.input  # data only
        tensors = [t for t in list(data_inputs) + list(node.output) if t]
        root = find(tensors[0])
        for t in tensors[1:]:
            other = find(t)
            if other != root:
                parent[other] = root
    groups: dict[str, list[str]] = {}
    for name in parent:
        groups.setdefault(find(name), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def adjust_ranges(calib_cache: str | Path, pre_path: str | Path, silu_clip: float | None, shared_scales: bool,
                  out_path: str | Path) -> Path:
    """The calibration table with ``silu_clip`` and the shared-scale groups applied (see the module docstring);
    ``calib_cache`` itself when neither applies."""
    from onnxruntime.quantization.calibrate import TensorData, load_tensors_data, save_tensors_data

    if not silu_clip and not shared_scales:
        return Path(calib_cache)
    table = load_tensors_data(calib_cache)
    model = as_model(pre_path)
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, td in table.data.items():
        lo, hi = td.range_value
        ranges[name] = (np.asarray(lo, np.float32), np.asarray(hi, np.float32))
    if silu_clip:
        floor = np.float32(-silu_clip)
        for name in silu_inputs(model):
            if name in ranges:
                lo, hi = ranges[name]
                ranges[name] = (np.maximum(lo, floor).astype(np.float32), hi)
    if shared_scales:
        for group in scale_groups(model):
            known = [ranges[t] for t in group if t in ranges]
            if not known:
                continue
            lo = np.min([r[0] for r in known]).astype(np.float32)
            hi = np.max([r[1] for r in known]).astype(np.float32)
            for t in group:
                if t in ranges:
                    ranges[t] = (lo, hi)
    for name, (lo, hi) in ranges.items():
        table.data[name] = TensorData(lowest=lo, highest=hi)
    save_tensors_data(table, out_path)
    return Path(out_path)


def ort_weight_grid(weight: np.ndarray, per_channel: bool) -> np.ndarray:
    """``weight`` rounded as quantize_static rounds it: symmetric int8 in [-127, 127], scale max|w| / 127 per output
    channel (or per tensor), round half to even."""
    rows = weight.reshape(weight.shape[0], -1).astype(np.float32)
    bound = np.abs(rows).max(axis=1, keepdims=True) if per_channel else np.abs(rows).max(keepdims=True)
    scale = np.where(bound > 0, bound / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    return (np.clip(np.rint(rows / scale), -127, 127) * scale).reshape(weight.shape)


def correct_biases(model, stats: ActivationStats, exclude: Sequence[str], per_channel: bool) -> int:
    """Move each quantized Conv's bias by ``-sum((W_q - W) * E[x])``: the mean output shift its weight rounding causes
    (``E[x]`` the per-channel mean of its input over the calibration images). Returns how many biases moved."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    skip = set(exclude)
    moved = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in skip or len(node.input) < 3:
            continue
        x, w_name, b_name = node.input[0], node.input[1], node.input[2]
        if w_name not in inits or b_name not in inits or x not in stats.channel_sums:
            continue
        w = numpy_helper.to_array(inits[w_name])
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        shift = bias_shift(w, ort_weight_grid(w, per_channel), group, stats.channel_mean(x))
        bias = numpy_helper.to_array(inits[b_name]).astype(np.float64) + shift
        inits[b_name].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), b_name))
        moved += 1
    return moved


def fold_input_normalisation(model, input_name: str) -> bool:
    """Replace ``uint8 input -> Cast -> Div(255) -> QuantizeLinear`` by the input itself, dequantized with scale 1/255
    and zero point 0 by the DequantizeLinear nodes that read the QuantizeLinear's output. Returns whether the pattern
    was found (float-input models have no such prologue)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {i.name: i for i in graph.initializer}

    def only_consumer(tensor: str, op: str):
        nodes = consumers.get(tensor, [])
        return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op else None

    cast = only_consumer(input_name, "Cast")
    div = cast and only_consumer(cast.output[0], "Div")
    quant = div and only_consumer(div.output[0], "QuantizeLinear")
    if not quant or div.input[0] != cast.output[0] or div.input[1] not in inits:
        return False
    if not np.allclose(numpy_helper.to_array(inits[div.input[1]]), 255.0):
        return False
    dequants = consumers.get(quant.output[0], [])
    if not dequants or any(d.op_type != "DequantizeLinear" for d in dequants):
        return False
    scale, zero = f"{input_name}_scale_1_255", f"{input_name}_zero_point_0"
    graph.initializer.extend([numpy_helper.from_array(np.array(1 / 255, np.float32), scale),
                              helper.make_tensor(zero, TensorProto.UINT8, [], [0])])
    for dq in dequants:
        dq.input[0], dq.input[1], dq.input[2] = input_name, scale, zero
    for node in (cast, div, quant):
        graph.node.remove(node)
    still_read = {name for node in graph.node for name in node.input}
    for name in (div.input[1], quant.input[1], quant.input[2]):
        if name not in still_read and name in inits:
            graph.initializer.remove(inits[name])
    return True


def build_ort_qdq(pre_path: str | Path, calib_cache: str | Path, *, out_path: str | Path, input_name: str,
                  activation_type: str, activation_symmetric: bool, weight_symmetric: bool, per_channel: bool,
                  reduce_range: bool, silu_clip: float | None, shared_scales: bool,
                  exclude: Sequence[str], stats: ActivationStats | None = None) -> Path:
    """quantize_static (QDQ) of the pre-processed model with the (adjusted) ranges of ``calib_cache``, no
    recalibration, then the input prologue folded; writes ``out_path``. With ``stats``, the biases are corrected
    first (:func:`correct_biases`)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data

    act = QuantType.QUInt8 if activation_type == "u8" else QuantType.QInt8
    table = adjust_ranges(calib_cache, pre_path, silu_clip, shared_scales, Path(out_path).with_suffix(".ranges.json"))
    method = load_tensors_data(table).calibration_method
    extra = {"ActivationSymmetric": activation_symmetric, "WeightSymmetric": weight_symmetric}
    if stats is not None:
        model = onnx.load(str(pre_path))
        correct_biases(model, stats, exclude, per_channel)
        pre_path = Path(out_path).with_suffix(".corrected.onnx")
        onnx.save(model, str(pre_path))
    with quiet():
        quantize_static(str(pre_path), str(out_path), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range, activation_type=act,
                        weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude) or None,
                        calibrate_method=method, extra_options=extra, calibration_cache_path=str(table))
    if activation_type == "u8" and not activation_symmetric:
        model = onnx.load(str(out_path))
        if fold_input_normalisation(model, input_name):
            onnx.save(model, str(out_path))
    return Path(out_path)

