"""A float truncated-head ONNX as the quantizer sees it: checks, onnxruntime pre-processing, graph parts, saving.

The lowest layer of the quantization tools (``tools/quantize.py`` -> ``tools/sensitivity.py`` /
``tools/quant_report.py`` -> ``tools/recipe.py`` -> ``tools/calibration.py`` / ``tools/qdq.py`` -> this module):
it imports none of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from runtime.io.files import file_sha256

LAYOUT = "truncated-head"
METADATA_KEY = "quantization"
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "DynamicQuantizeLinear"}
# outputs of our layout that regress fine-grained values (keypoint coordinates, mask coefficients, OBB angle logits),
# unlike box_pN (DFL logits) and cls_pN (class logits): their branches' last convs are the most sensitive to int8
# (an angle error turns the whole box, and the high IoU thresholds of rotated mAP see it)
FINE_OUTPUTS = ("kpt_", "mc_", "ang_")

__all__ = ["FINE_OUTPUTS", "ModelInfo", "QuantizeError", "as_model", "atomic_save", "branch_nodes", "branch_outputs",
           "branch_tail_convs", "check_excludes", "conv_groups",
           "finalize_model", "head_nodes", "inspect_float_model", "prepare_model", "quiet", "silu_inputs"]


class QuantizeError(Exception):
    """An error the tool reports as one line (main() prints it and returns 2)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the quantizer needs to know about a float truncated-head model."""

    path: Path
    input_name: str
    input_dtype: str  # "uint8" (our exports: RGB 0..255, normalised in the graph) or "float32" (RGB 0..1)
    input_hw: tuple[int, int]
    output_names: tuple[str, ...]
    metadata: dict[str, str]
    node_names: tuple[str, ...]
    sha256: str
    preprocess: str = "letterbox"  # how images become its input (runtime.records.preprocess): "center_crop", classify


def _dims(value_info) -> list[int | str]:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in value_info.type.tensor_type.shape.dim]


def inspect_float_model(path: str | Path) -> ModelInfo:
    """Check that ``path`` is a float truncated-head YOLOv8 ONNX; QuantizeError saying what it is otherwise."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise QuantizeError(f"{path}: model file not found")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise QuantizeError(f"{path}: not a loadable ONNX model ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    graph = model.graph
    ops = {n.op_type for n in graph.node}
    outputs = [o.name for o in graph.output]
    shapes = {o.name: _dims(o) for o in graph.output}
    if ops & QUANTIZED_OPS:
        raise QuantizeError(f"{path}: model is already quantized (has {sorted(ops & QUANTIZED_OPS)}); "
                            "quantize the float export instead")
    if "output0" in outputs or meta.get("layout") != LAYOUT:
        if "output0" in outputs and meta.get("task") == "classify":
            raise QuantizeError(f"{path}: is a stock Ultralytics classifier export (output0 = softmax probabilities); "
                                "quantize its logits instead: python tools/truncate.py MODEL.onnx -o MODEL-cut.onnx")
        if "output0" in outputs:
            what = (f"a standard Ultralytics export (output0 {shapes['output0']}"
                    + (f", output1 {shapes['output1']}" if "output1" in shapes else "") + ")")
            raise QuantizeError(
                f"{path}: is {what}, not a truncated-head YOLOv8 ONNX. Static W8A8 of the standard head quantizes "
                "the concatenated [boxes in pixels | class scores 0..1] tensor with one scale, which rounds every "
                "class score to zero (0 mAP). Re-export with: python tools/export.py MODEL.pt -o MODEL.onnx")
        raise QuantizeError(f"{path}: not a truncated-head YOLOv8 ONNX (metadata layout={meta.get('layout')!r}, "
                            f"outputs {outputs[:6]}); export one with: python tools/export.py MODEL.pt -o MODEL.onnx")
    classifier = meta.get("task") == "classify"
    if classifier and outputs != ["logits"]:
        raise QuantizeError(f"{path}: a classifier of the truncated-head layout has one output 'logits', found {outputs}")
    if not classifier and (not any(o.startswith("box_p") for o in outputs)
                           or not any(o.startswith("cls_p") for o in outputs)):
        raise QuantizeError(f"{path}: metadata says truncated-head but outputs {outputs} lack box_pN / cls_pN")
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise QuantizeError(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    dims = _dims(inputs[0])
    if len(dims) != 4 or dims[1] not in (3, "?"):
        raise QuantizeError(f"{path}: input {inputs[0].name!r} has shape {dims}, expected [batch, 3, H, W]")
    input_dtype = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.FLOAT: "float32"}.get(
        inputs[0].type.tensor_type.elem_type)
    if input_dtype is None:
        raise QuantizeError(f"{path}: input {inputs[0].name!r} is neither uint8 nor float32")
    if isinstance(dims[2], int) and isinstance(dims[3], int) and dims[2] > 0 and dims[3] > 0:
        hw = (int(dims[2]), int(dims[3]))
    else:
        try:
            raw = json.loads(meta.get("imgsz", "null"))
            hw = (int(raw[0]), int(raw[-1])) if isinstance(raw, list) else (int(raw), int(raw))
        except (TypeError, ValueError, IndexError) as exc:
            raise QuantizeError(f"{path}: input size is dynamic and metadata 'imgsz' is missing") from exc
    return ModelInfo(path, inputs[0].name, input_dtype, hw, tuple(outputs), meta, tuple(n.name for n in graph.node),
                     file_sha256(path), "center_crop" if classifier else "letterbox")


def prepare_model(float_path: str | Path, out_path: str | Path) -> Path:
    """onnxruntime's recommended pre-processing (symbolic shape inference + optimization) into ``out_path``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # both paths resolved before the chdir below, so relative paths keep meaning the caller's directory
    float_path, out_path = Path(float_path).resolve(), Path(out_path).resolve()
    # onnxruntime's symbolic shape inference saves "sym_shape_infer_temp.onnx" + a <uuid>.data file into the
    # current directory when it gives up: run it from a private temporary directory so nothing leaks
    with quiet(), tempfile.TemporaryDirectory(prefix="quant-pre-") as scratch, contextlib.chdir(scratch):
        try:
            quant_pre_process(str(float_path), str(out_path), skip_optimization=False)
        except Exception:  # noqa: BLE001 - "Incomplete symbolic shape inference" on some dynamic-batch graphs
            # auto_merge lets symbolic shape inference unify the batch dims it cannot prove equal
            quant_pre_process(str(float_path), str(out_path), skip_optimization=False, auto_merge=True)
    return out_path



@contextlib.contextmanager
def quiet():
    """Silence onnxruntime.quantization's prints and INFO logging (it prints per-tensor progress)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        try:
            yield
        finally:
            root.setLevel(level)



def as_model(model_or_path):
    """An ONNX ModelProto: ``model_or_path`` itself, or the file it names loaded (graph only, no external data)."""
    import onnx

    if isinstance(model_or_path, (str, Path)):
        return onnx.load(str(model_or_path), load_external_data=False)
    return model_or_path


def conv_groups(model_or_path) -> dict[str, list[str]]:
    """{Conv node name: [Conv, Sigmoid, Mul]} — every Conv with the nodes of its SiLU (if any), in graph order."""
    model = as_model(model_or_path)
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        members = [node.name]
        out = node.output[0]
        sig = [c for c in consumers.get(out, []) if c.op_type == "Sigmoid"]
        if sig:
            mul = [c for c in consumers.get(out, []) if c.op_type == "Mul" and sig[0].output[0] in c.input]
            if mul:
                members += [sig[0].name, mul[0].name]
        groups[node.name] = members
    return groups


def silu_inputs(model) -> list[str]:
    """Tensors x that feed a SiLU written as Mul(x, Sigmoid(x))."""
    sig_out = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Sigmoid"}
    found = []
    for n in model.graph.node:
        if n.op_type == "Mul" and len(n.input) == 2:
            a, b = n.input
            for x, s in ((a, b), (b, a)):
                if sig_out.get(s) == x and x not in found:
                    found.append(x)
    return found


def head_nodes(model_or_path) -> list[str]:
    """Nodes that produce a graph output (the last conv of every head branch, and the proto conv)."""
    model = as_model(model_or_path)
    outs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if set(n.output) & outs]


def branch_outputs(model_or_path) -> dict[str, str]:
    """{node: the one graph output it feeds} for the nodes that feed exactly one output: the head's per-output
    branches (and a segment model's proto branch).

    Found from the graph's structure, not from names: everything before the point where the outputs' paths split
    reaches several outputs (the backbone and neck), everything after it reaches one.
    """
    model = as_model(model_or_path)
    outputs = [o.name for o in model.graph.output]
    if len(outputs) < 2:
        return {}  # one output (a classifier): no point where paths split, so no branches
    bit = {name: 1 << k for k, name in enumerate(outputs)}
    reached: dict[str, int] = {}  # tensor -> bit set of the outputs it reaches
    node_mask: dict[str, int] = {}
    for node in reversed(model.graph.node):
        mask = 0
        for tensor in node.output:
            mask |= bit.get(tensor, 0) | reached.get(tensor, 0)
        for tensor in node.input:
            reached[tensor] = reached.get(tensor, 0) | mask
        node_mask[node.name] = mask
    return {n.name: outputs[node_mask[n.name].bit_length() - 1] for n in model.graph.node
            if bin(node_mask[n.name]).count("1") == 1}


def branch_nodes(model_or_path) -> list[str]:
    """Nodes that feed exactly one graph output (see :func:`branch_outputs`), in graph order."""
    return list(branch_outputs(model_or_path))


def branch_tail_convs(model_or_path, count: int, prefixes: Sequence[str] = FINE_OUTPUTS) -> list[str]:
    """The last ``count`` convs of every branch whose output name starts with one of ``prefixes``."""
    model = as_model(model_or_path)
    owner = branch_outputs(model)
    convs: dict[str, list[str]] = {}
    for node in model.graph.node:
        out = owner.get(node.name)
        if node.op_type == "Conv" and out is not None and out.startswith(tuple(prefixes)):
            convs.setdefault(out, []).append(node.name)
    return [name for names in convs.values() for name in names[-count:]] if count > 0 else []


def finalize_model(qdq_path: str | Path, info: ModelInfo, settings: dict[str, Any], out_path: str | Path) -> Path:
    """Copy the float model's metadata + ``quantization`` JSON into the QDQ model; write ``out_path`` atomically."""
    import onnx

    model = onnx.load(str(qdq_path))
    del model.metadata_props[:]
    for key, value in info.metadata.items():
        if key != METADATA_KEY:
            model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(settings, sort_keys=True))
    return atomic_save(model, out_path)


def atomic_save(model, out_path: str | Path) -> Path:
    """Save an ONNX model whole or not at all."""
    import onnx

    from runtime.io.files import atomic_output

    with atomic_output(out_path) as tmp:
        onnx.save(model, str(tmp))
    return Path(out_path)


def check_excludes(names: Sequence[str], pre_nodes: Sequence[str], float_nodes: Sequence[str], path: Path) -> None:
    valid = set(pre_nodes)
    bad = [n for n in names if n not in valid]
    if bad:
        gone = [n for n in bad if n in set(float_nodes)]
        hint = f" ({', '.join(gone)} removed by pre-processing)" if gone else ""
        convs = [n for n in pre_nodes if n.endswith("/Conv") or "Conv" in n][:6]
        raise QuantizeError(f"{path}: --exclude names nodes that do not exist: {', '.join(bad)}{hint}. "
                            f"Valid names look like: {', '.join(convs)} ...")


