"""Truncate a stock Ultralytics classifier export (``output0`` = softmax probabilities, shape [batch, nc]) before its
softmax, to the layout ``tools/export.py`` writes for classifiers: one output ``logits`` straight from the head's
Gemm. Called by :func:`tools.truncate.truncate` for classify files.

The softmax is found from the graph's structure: walking back from the one output through Identity / Cast to a
Softmax over the class axis, fed by a Gemm. Before anything is written, the softmax of the found logits must
reproduce the file's own ``output0`` on a seeded random image.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Mapping

from tools.layout import INPUT_NAME, LOGITS_NAME, finish_graph, probe_graph, prune_graph

_PASS_THROUGH = ("Identity", "Cast")
VERIFY_ATOL = 1e-5


def _names(meta: Mapping[str, str], given: Mapping[int, str] | None, nc: int, where: str,
           error: type[Exception]) -> dict[int, str]:
    if given is not None:
        names = dict(given)
    elif "names" in meta:
        try:
            value = ast.literal_eval(meta["names"])
        except (ValueError, SyntaxError):
            value = json.loads(meta["names"])
        names = dict(enumerate(value)) if isinstance(value, (list, tuple)) else dict(value)
    else:
        names = {i: str(i) for i in range(nc)}
    names = {int(k): str(v) for k, v in names.items()}
    if sorted(names) != list(range(nc)):
        raise error(f"{where}: {len(names)} class names for a classifier with {nc} outputs")
    return names


def find_logits(model, where: str, error: type[Exception]) -> str:
    """The tensor the classifier's final softmax reads: the Gemm output before the one graph output."""
    graph = model.graph
    if len(graph.output) != 1:
        raise error(f"{where}: a classifier export has one output, found {[o.name for o in graph.output]}")
    producer = {o: n for n in graph.node for o in n.output}
    tensor = graph.output[0].name
    node = producer.get(tensor)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Softmax":
        raise error(f"{where}: output {tensor!r} does not come from a Softmax (found "
                    f"{node.op_type if node is not None else 'a graph input'}); not a classifier export")
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if axis not in (1, -1):
        raise error(f"{where}: the classifier's Softmax runs over axis {axis}, expected the class axis 1")
    logits = node.input[0]
    feeder = producer.get(logits)
    if feeder is None or feeder.op_type != "Gemm":
        raise error(f"{where}: the classifier's Softmax reads {feeder.op_type if feeder else 'no node'}, expected the "
                    "head's Gemm (Linear)")
    return logits


def _verify(model, logits: str, feed_shape: list[int], where: str, error: type[Exception]) -> int:
    """Run the graph once with ``logits`` as an extra output; softmax(logits) must equal ``output0``. Returns nc."""
    import numpy as np

    values = probe_graph(model, [logits], feed_shape, where=where, error=error)
    probs, raw = values[model.graph.output[0].name], values[logits]
    if raw.ndim != 2:
        raise error(f"{where}: the classifier's logits have shape {list(raw.shape)}, expected [batch, nc]")
    exp = np.exp(raw - raw.max(axis=1, keepdims=True))
    gap = float(np.abs(exp / exp.sum(axis=1, keepdims=True) - probs).max())
    if gap > VERIFY_ATOL:
        raise error(f"{where}: softmax of the found logits differs from output0 by {gap:.2e}; not truncated")
    return int(raw.shape[1])


def truncate_classifier(model, src: Path, out: Path, meta: Mapping[str, str], sha256: str,
                        names: Mapping[int, str] | None, imgsz: tuple[int, int] | None, dims: list[int | None],
                        input_dtype: str, simplify: bool, error: type[Exception]) -> Path:
    """Cut the float32 classifier graph ``model`` (its one image input already checked: ``dims`` = [batch, 3, H, W],
    None where dynamic) before its softmax and write it to ``out``."""
    import onnx

    from runtime.io.files import atomic_output

    where = str(src)
    logits = find_logits(model, where, error)
    meta_hw = ast.literal_eval(meta["imgsz"]) if "imgsz" in meta else None
    meta_hw = (meta_hw, meta_hw) if isinstance(meta_hw, int) else (tuple(int(v) for v in meta_hw) if meta_hw else None)
    static_hw = (dims[2], dims[3]) if dims[2] and dims[3] else None
    probe_hw = static_hw or imgsz or meta_hw or (224, 224)
    nc = _verify(model, logits, [dims[0] or 1, 3, int(probe_hw[0]), int(probe_hw[1])], where, error)
    name_map = _names(meta, names, nc, where, error)

    graph = model.graph
    inp = graph.input[0].name
    mapping = {logits: LOGITS_NAME, inp: INPUT_NAME}
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for vi in list(graph.input) + list(graph.value_info):
        vi.name = mapping.get(vi.name, vi.name)
    prune_graph(model, [LOGITS_NAME])  # keep what the logits need, nothing after them
    infos = [v for v in graph.value_info if v.name != LOGITS_NAME]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    if dims[0] is None:
        graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(LOGITS_NAME, onnx.TensorProto.FLOAT,
                                                           [dims[0] or "batch", nc]))
    metadata = dict(task="classify", names=name_map, strides=[], reg_max=None, nm=None, kpt_shape=None, dfl_bins=None,
                    imgsz=imgsz or meta_hw or static_hw or (224, 224), batch=dims[0], dynamic_hw=static_hw is None,
                    source=src.name, source_sha256=sha256, ultralytics_version=meta.get("version", "unknown"))
    model = finish_graph(model, [LOGITS_NAME], metadata, input_dtype=input_dtype, simplify=simplify, where=where,
                         graph="truncated", error=error)
    with atomic_output(out) as tmp:
        onnx.save(model, str(tmp))
    return out


def is_classifier_file(meta: Mapping[str, str], task: str | None) -> bool:
    """Whether a stock file's metadata (or the caller's ``task``) says it is a classifier."""
    return (task or meta.get("task")) == "classify" or meta.get("head") == "Classify"


__all__ = ["find_logits", "is_classifier_file", "truncate_classifier"]
