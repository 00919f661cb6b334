"""The OpenVINO QDQ layout: int8 weights per output channel and 8-bit activations where the engine fuses them.

OpenVINO's low-precision transformations run a Conv as int8 when it reads a ``QuantizeLinear -> DequantizeLinear``
pair and an int8 weight behind a ``DequantizeLinear``. Where the activation quantizer sits decides what else runs
in int8 (:func:`quantizer_groups`): each quantized conv's input is traced back through the data-movement ops
between it and the op that computed it (split, slice, concat, max-pool, nearest resize), and the quantizer goes on
the computed tensor. OpenVINO then folds it into the producing conv's output (with its SiLU), and the C2f / C3k2
splits and concats, SPPF's pools and the neck's upsample-concats run on int8 values with no reorders or standalone
quantizers between them (the layout NNCF writes). Tensors that meet in one concat share one scale (the union of
their ranges), so the concat is exact in int8; a tensor that feeds a float node too is read dequantized there.

Statistics come from one pass of the float model over the calibration images (:func:`collect_stats`): for every
tensor that can carry a quantizer or feeds a conv, the per-image minimum and maximum, and the per-channel mean.
Ranges are the mean over images of the per-image minimum / maximum. ``bias_correction`` moves each quantized conv's
bias by the mean shift its weight rounding causes, ``-sum((W_q - W) * E[x])`` over the kernel, using the
per-channel means of its input (like NNCF's fast bias correction for the weight part).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["ActivationStats", "activation_qparams", "bias_shift", "build_conv_qdq", "calibration_tensors", "collect_stats", "conv_inputs",
           "quantize_weight", "quantizer_groups"]

QUANTIZED_OPS = ("Conv",)
TRANSPARENT_OPS = ("Split", "Slice", "Concat", "MaxPool", "Resize", "Identity")


@dataclass
class ActivationStats:
    """Per-tensor statistics of conv inputs over calibration images (float model)."""

    mins: dict[str, list[float]] = field(default_factory=dict)  # per-image minimum
    maxs: dict[str, list[float]] = field(default_factory=dict)  # per-image maximum
    channel_sums: dict[str, np.ndarray] = field(default_factory=dict)  # (C,) float64, summed over images
    images: int = 0

    def add(self, name: str, value: np.ndarray) -> None:
        self.mins.setdefault(name, []).append(float(value.min()))
        self.maxs.setdefault(name, []).append(float(value.max()))
        mean = value.mean(axis=tuple(i for i in range(value.ndim) if i != 1), dtype=np.float64)
        self.channel_sums[name] = self.channel_sums.get(name, 0.0) + mean

    def range_of(self, name: str, method: str = "meanminmax") -> tuple[float, float]:
        """``meanminmax``: mean over images of the per-image min / max (one outlier image cannot stretch it);
        ``minmax``: the global min / max."""
        if method == "minmax":
            return float(np.min(self.mins[name])), float(np.max(self.maxs[name]))
        return float(np.mean(self.mins[name])), float(np.mean(self.maxs[name]))

    def channel_mean(self, name: str) -> np.ndarray:
        return (self.channel_sums[name] / max(1, self.images)).astype(np.float64)


def _consumers(graph) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def conv_inputs(model, exclude: Iterable[str] = ()) -> dict[str, str]:
    """{Conv node name: its activation input tensor} for every Conv not in ``exclude`` whose weight is an initializer."""
    skip = set(exclude)
    inits = {i.name for i in model.graph.initializer}
    return {n.name: n.input[0] for n in model.graph.node
            if n.op_type in QUANTIZED_OPS and n.name not in skip and len(n.input) > 1 and n.input[1] in inits}


def _is_transparent(node) -> bool:
    """Ops that only move or select values, so they commute with a shared quantizer (Resize: nearest only)."""
    if node.op_type == "Resize":
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"nearest")
        return mode == b"nearest"
    return node.op_type in TRANSPARENT_OPS


def quantizer_groups(model, exclude: Iterable[str] = ()) -> list[list[str]]:
    """The tensors that carry a quantizer, in groups that share one scale.

    Each quantized conv's input is traced back through data-movement ops (split, slice, concat, max-pool, nearest
    resize) to the tensors computed by something else: the quantizer goes there, so the engine fuses it into the
    conv or add that computes the tensor, and the split / concat / pool between run on int8 values. The tensors
    that meet in one concat share one scale (the union of their ranges), which keeps that concat exact in int8.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def sources(tensor: str) -> list[str]:
        node = producer.get(tensor)
        if node is None or not _is_transparent(node):
            return [tensor]
        data = [i for i in node.input if i] if node.op_type == "Concat" else [node.input[0]]
        return [s for t in data for s in sources(t)]

    for tensor in conv_inputs(model, exclude).values():
        found = sources(tensor)
        for s in found:
            parent.setdefault(s, s)
        for s in found[1:]:
            parent[find(s)] = find(found[0])
    groups: dict[str, list[str]] = {}
    for t in parent:
        groups.setdefault(find(t), []).append(t)
    return list(groups.values())


def calibration_tensors(model) -> list[str]:
    """Every tensor whose statistics a build may need: each conv's input (bias correction) and each quantizer's."""
    names = list(conv_inputs(model).values()) + [t for g in quantizer_groups(model) for t in g]
    return list(dict.fromkeys(names))


def normalized_input(model) -> str | None:
    """The tensor ``Div(Cast(uint8 image), 255)`` of our exports: exactly representable on a 1/255 u8 grid."""
    import onnx
    from onnx import numpy_helper

    inputs = {i.name for i in model.graph.input}
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "Div" or node.input[1] not in inits:
            continue
        cast = producer.get(node.input[0])
        if cast is None or cast.op_type != "Cast" or cast.input[0] not in inputs:
            continue
        graph_in = next(i for i in model.graph.input if i.name == cast.input[0])
        if graph_in.type.tensor_type.elem_type == onnx.TensorProto.UINT8 \
                and float(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0]) == 255.0:
            return node.output[0]
    return None


def collect_stats(model_path: str | Path, tensors: Sequence[str], batches: Iterable[dict[str, np.ndarray]],
                  threads: int | None = None) -> ActivationStats:
    """Run the float model over ``batches`` with ``tensors`` as extra outputs; accumulate their statistics."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    have = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = list(dict.fromkeys(tensors))
    stats = ActivationStats()
    for feed in batches:
        for name, value in zip(names, session.run(names, feed)):
            stats.add(name, value)
        stats.images += 1
    return stats


def quantize_weight(weight: np.ndarray, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (range [-127, 127]) per output channel (axis 0) or per tensor: (int8 weight, (O,) scale).

    Per channel, each channel takes whichever of its own max-abs scale and the tensor's max-abs scale rounds it with
    the smaller squared error: weights that already sit on one per-tensor grid (a checkpoint rebuilt from int8)
    keep it exactly, and real float weights get their own channel's finer grid.
    """
    rows = weight.reshape(weight.shape[0], -1).astype(np.float32)
    tensor_scale = np.float32(max(float(np.abs(rows).max()), 1e-12) / 127.0)
    if not per_channel:
        scale = np.full(rows.shape[0], tensor_scale, np.float32)
    else:
        own = np.abs(rows).max(axis=1) / np.float32(127.0)
        own = np.where(own > 0, own, tensor_scale).astype(np.float32)
        candidates = np.stack([own, np.full_like(own, tensor_scale)])  # (2, O)
        errors = [((np.clip(np.rint(rows / c[:, None]), -127, 127) * c[:, None] - rows) ** 2).sum(axis=1)
                  for c in candidates]
        scale = np.where(errors[1] < errors[0], candidates[1], candidates[0]).astype(np.float32)
    q = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8).reshape(weight.shape)
    return q, scale


def activation_qparams(lo: float, hi: float, activation_type: str = "u8", symmetric: bool = False
                       ) -> tuple[np.float32, np.integer]:
    """Scale and zero point of a range (widened to hold 0, as ONNX requires).

    ``s8`` symmetric (zero point 0, range [-127, 127]) runs fastest in OpenVINO on AVX-512 / AMX CPUs (an
    asymmetric zero point adds a compensation pass to each int8 convolution, about 1.15x slower), but halves the
    levels left for SiLU outputs (>= -0.28): it cost 1.3 box mAP points on yolov8n, which u8 asymmetric did not.
    """
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        bound = max(-lo, hi)
        if activation_type == "s8":
            return np.float32(bound / 127.0 if bound > 0 else 1.0), np.int8(0)
        if lo < 0:  # u8 symmetric cannot hold negatives: 128 is its zero
            return np.float32(bound / 127.0 if bound > 0 else 1.0), np.uint8(128)
        return np.float32(hi / 255.0 if hi > 0 else 1.0), np.uint8(0)
    levels = 255.0
    scale = np.float32((hi - lo) / levels) if hi > lo else np.float32(1.0)
    if activation_type == "s8":
        return scale, np.int8(np.clip(np.rint(-128 - lo / scale), -128, 127))
    return scale, np.uint8(np.clip(np.rint(-lo / scale), 0, 255))


def bias_shift(w: np.ndarray, w_dq: np.ndarray, group: int, x_mean: np.ndarray) -> np.ndarray:
    """-(W_dq - W) . E[x] summed over each output channel's kernel: the mean output shift rounding causes."""
    out_ch, in_per_group = w.shape[0], w.shape[1]
    per_group_out = out_ch // group
    diff = (w_dq.astype(np.float64) - w.astype(np.float64)).sum(axis=tuple(range(2, w.ndim)))  # (O, I/g)
    means = np.stack([x_mean[(o // per_group_out) * in_per_group:(o // per_group_out + 1) * in_per_group]
                      for o in range(out_ch)])
    return -(diff * means).sum(axis=1)


def build_conv_qdq(model, stats: ActivationStats, exclude: Iterable[str] = (), *, method: str = "meanminmax",
                   activation_type: str = "u8", symmetric: bool = False, per_channel: bool = True,
                   bias_correction: bool = True):
    """A copy of the float ``model`` in the OpenVINO QDQ layout (see the module docstring); ``exclude`` convs stay
    float (and their inputs unquantized unless a quantized conv reads them too).

    Every reader of a quantized tensor reads it dequantized, so there is one quantizer per tensor, which the engine
    fuses into the conv that produces it.
    """
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    targets = conv_inputs(out, exclude)
    exact = normalized_input(out)
    inits = {i.name: i for i in graph.initializer}
    new_nodes: dict[str, list[Any]] = {}  # tensor -> QDQ nodes to insert right after its producer
    dq_of: dict[str, str] = {}

    def add_init(name: str, array: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    for group in quantizer_groups(out, exclude):
        if exact in group and len(group) == 1:
            scale, zp = np.float32(1.0 / 255.0), np.uint8(0)
        else:
            ranges = [stats.range_of(t, method) for t in group]
            scale, zp = activation_qparams(min(r[0] for r in ranges), max(r[1] for r in ranges), activation_type,
                                           symmetric)
        for tensor in group:
            s = add_init(f"{tensor}_qdq_scale", np.array(scale, np.float32))
            z = add_init(f"{tensor}_qdq_zero_point", np.array(zp))
            q, dq = f"{tensor}_quantized", f"{tensor}_dequantized"
            new_nodes[tensor] = [
                helper.make_node("QuantizeLinear", [tensor, s, z], [q], name=f"{tensor}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{tensor}_DequantizeLinear")]
            dq_of[tensor] = dq

    weight_dq: dict[str, list[Any]] = {}
    for node in graph.node:
        if node.name not in targets:
            continue
        w_name = node.input[1]
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        q, scale = quantize_weight(w, per_channel)
        qn = add_init(f"{w_name}_quantized", q)
        sn = add_init(f"{w_name}_qdq_scale", scale)
        zn = add_init(f"{w_name}_qdq_zero_point", np.zeros(scale.shape, np.int8))
        dqn = f"{w_name}_dequantized_{node.name}"
        weight_dq[node.name] = [helper.make_node("DequantizeLinear", [qn, sn, zn], [dqn], name=f"{dqn}_DequantizeLinear",
                                                 axis=0)]
        bias_is_constant = len(node.input) < 3 or not node.input[2] or node.input[2] in inits
        if bias_correction and node.input[0] != exact and bias_is_constant:  # (a computed bias is left as it is)
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            shift = bias_shift(w, q.astype(np.float32) * scale.reshape(-1, *([1] * (w.ndim - 1))), group,
                                stats.channel_mean(node.input[0]))
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 \
                and node.input[2] else np.zeros(w.shape[0])
            bn = add_init(f"{node.name}_bias_corrected", (bias + shift).astype(np.float32))
            if len(node.input) > 2:
                node.input[2] = bn
            else:
                node.input.append(bn)
        node.input[1] = dqn

    for node in graph.node:  # the other readers of a quantized tensor read it dequantized too
        for k, name in enumerate(node.input):
            if name in dq_of:
                node.input[k] = dq_of[name]
    # Rebuild the node list: each QDQ pair right after its tensor's producer (graph inputs: at the front),
    # each weight DequantizeLinear right before its conv; keeps the graph topologically sorted.
    produced_by_input = [t for t in new_nodes if t in {i.name for i in graph.input} or t not in
                         {o for n in graph.node for o in n.output}]
    ordered: list[Any] = [n for t in produced_by_input for n in new_nodes[t]]
    for node in list(graph.node):
        ordered += weight_dq.get(node.name, [])
        ordered.append(node)
        for o in node.output:
            ordered += new_nodes.get(o, [])
    del graph.node[:]
    graph.node.extend(ordered)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return out
