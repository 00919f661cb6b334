"""The truncated-head ONNX layout, shared by ``tools/export.py`` (from a .pt) and ``tools/truncate.py`` (from an ONNX).

One place for what both writers must agree on: the output names (``box_pN``, ``cls_pN``, ``mc_pN`` / ``kpt_pN`` /
``ang_pN``, ``proto``), the metadata keys the runtime reads (:mod:`runtime.records.spec`), the optional uint8 input prologue
(Ultralytics' ``float(x) / 255`` inside the graph), the layout check and the optional onnxslim pass, and
:func:`finish_graph`, which applies them in the one order both writers use.

Only ``onnx``, ``onnxruntime``, ``numpy`` and ``runtime.engines`` are imported, inside functions, so importing this
module stays light.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

PRODUCER = "yolo-edge-runtime"
LAYOUT = "truncated-head"
LAYOUT_VERSION = "1"
INPUT_NAME = "images"
PROTO_NAME = "proto"
LOGITS_NAME = "logits"  # a classifier's one output: the class logits, before the softmax
INPUT_DTYPES = ("uint8", "float32")
MAX_IR_VERSION = 10  # keep the files loadable by older onnxruntime builds (as Ultralytics does)

# task -> names of the per-level outputs, in order; segment additionally ends with "proto"
LEVEL_OUTPUTS = {
    "detect": ("box", "cls"),
    "segment": ("box", "cls", "mc"),
    "pose": ("box", "cls", "kpt"),
    "obb": ("box", "cls", "ang"),
}

__all__ = [
    "INPUT_DTYPES", "INPUT_NAME", "LAYOUT", "LAYOUT_VERSION", "LEVEL_OUTPUTS", "MAX_IR_VERSION", "PROBE_SEED",
    "PRODUCER", "PROTO_NAME", "LOGITS_NAME", "check_layout", "finish_graph", "layout_metadata", "level_name",
    "normalise_input_in_graph", "opset_of", "output_names", "probe_graph", "prune_graph", "run_cli", "set_metadata",
    "shape_of", "simplify_graph", "summarize", "topological_order",
]  # fmt: skip


def output_names(task: str, strides: Sequence[int]) -> list[str]:
    """Return the graph output names of a truncated-head model, in order.

    >>> output_names("segment", [8, 16, 32])[:3], output_names("segment", [8, 16, 32])[-1]
    (['box_p3', 'cls_p3', 'mc_p3'], 'proto')
    """
    if task not in LEVEL_OUTPUTS:
        raise ValueError(f"unknown task {task!r}, expected one of {sorted(LEVEL_OUTPUTS)}")
    names = [f"{kind}_{level_name(s)}" for s in strides for kind in LEVEL_OUTPUTS[task]]
    return names + [PROTO_NAME] if task == "segment" else names


def level_name(stride: int) -> str:
    """``8 -> "p3"``; ValueError unless the stride is a power of two."""
    p = math.log2(stride) if stride >= 1 else 0.5
    if p != int(p):
        raise ValueError(f"stride {stride} is not a power of two")
    return f"p{int(p)}"


def normalise_input_in_graph(model_onnx, input_name: str = INPUT_NAME) -> None:
    """Make the float image input uint8 and start the graph with Ultralytics' ``float(x) / 255`` (bit for bit)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model_onnx.graph
    normalised = f"{input_name}_normalised"
    for node in graph.node:
        node.input[:] = [normalised if name == input_name else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(np.array(255, np.float32), f"{input_name}_scale"))
    graph.node.insert(0, helper.make_node("Div", [f"{input_name}_float", f"{input_name}_scale"], [normalised],
                                          name="/normalise/Div"))
    graph.node.insert(0, helper.make_node("Cast", [input_name], [f"{input_name}_float"], to=TensorProto.FLOAT,
                                          name="/normalise/Cast"))
    for inp in graph.input:
        if inp.name == input_name:
            inp.type.tensor_type.elem_type = TensorProto.UINT8


def check_layout(model_onnx, names: list[str], input_name: str = INPUT_NAME) -> str | None:
    """None when the graph has the one expected input and the expected outputs, every head output straight from a
    Conv node (a classifier's logits from a Gemm); otherwise what is wrong."""
    got = [o.name for o in model_onnx.graph.output]
    if got != names:
        return f"outputs are {got}, expected {names}"
    inits = {t.name for t in model_onnx.graph.initializer}
    inputs = [i.name for i in model_onnx.graph.input if i.name not in inits]
    if inputs != [input_name]:
        return f"inputs are {inputs}, expected [{input_name!r}]"
    prod = {o: n for n in model_onnx.graph.node for o in n.output}
    for n in names:
        want = "Gemm" if n == LOGITS_NAME else "Conv"
        if n != PROTO_NAME and (n not in prod or prod[n].op_type != want):
            return f"output {n} is produced by {prod[n].op_type if n in prod else 'nothing'}, not {want}"
    return None


def shape_of(value_info) -> list[int | str]:
    """The dims of a ValueInfoProto: ints, or the dim_param names of dynamic ones."""
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def summarize(onnx_path: str | Path) -> str:
    """One-line summary: path, size in MB, outputs with shapes."""
    import onnx

    path = Path(onnx_path)
    m = onnx.load(str(path), load_external_data=False)
    outs = " ".join(f"{o.name}{shape_of(o)}".replace(" ", "").replace("'", "") for o in m.graph.output)
    return f"{path} ({path.stat().st_size / 1e6:.1f} MB): {outs}"


def layout_metadata(
    *,
    task: str,
    names: dict[int, str],
    strides: Sequence[int],
    reg_max: int | None,
    nm: int | None,
    kpt_shape: Sequence[int] | None,
    dfl_bins: Sequence[float] | None,
    imgsz: tuple[int, int],
    batch: int | None,
    dynamic_hw: bool,
    input_dtype: str,
    source: str,
    source_sha256: str,
    ultralytics_version: str,
    opset: int,
    simplified: bool,
    head: str | None = None,
    branch: str | None = None,
    kpt_rule: str | None = None,
) -> dict[str, str]:
    """The metadata_props of a truncated-head file, every value a string, in a fixed key order. A classifier has
    no ``strides`` (empty) and no ``reg_max`` (None): those keys are left out. ``head`` (the Ultralytics head class),
    ``branch`` (one2many / one2one) and ``kpt_rule`` (grid2x / anchor) are written for heads with two branches
    (YOLOv10, YOLO26) and for Pose26; a file without them is a one-to-many v8-style head."""
    meta = {
        "producer": PRODUCER,
        "layout": LAYOUT,
        "layout_version": LAYOUT_VERSION,
        "task": task,
        "names": json.dumps({str(k): v for k, v in sorted(names.items())}, ensure_ascii=False),
    }
    if strides:
        meta["strides"] = json.dumps([int(s) for s in strides])
    if reg_max is not None:
        meta["reg_max"] = str(reg_max)
    meta["nc"] = str(len(names))
    if nm is not None:
        meta["nm"] = str(nm)
    if kpt_shape is not None:
        meta["kpt_shape"] = json.dumps([int(v) for v in kpt_shape])
    if dfl_bins is not None:
        meta["dfl_bins"] = json.dumps([float(v) for v in dfl_bins])
    for key, value in (("head", head), ("branch", branch), ("kpt_rule", kpt_rule)):
        if value is not None:
            meta[key] = value
    meta.update(
        {
            "imgsz": json.dumps([int(imgsz[0]), int(imgsz[1])]),
            "batch": "dynamic" if batch is None else str(batch),
            "dynamic_hw": "true" if dynamic_hw else "false",
            "input_dtype": input_dtype,
            "source": source,
            "source_sha256": source_sha256,
            "ultralytics_version": ultralytics_version,
            "opset": str(opset),
            "simplified": "true" if simplified else "false",
        }
    )
    return meta


def set_metadata(model_onnx, meta: dict[str, str]) -> None:
    """Replace the model's metadata_props with ``meta``."""
    del model_onnx.metadata_props[:]
    for k, v in meta.items():
        prop = model_onnx.metadata_props.add()
        prop.key, prop.value = k, v


def _dim_names(model_onnx) -> dict[str, dict[int, str]]:
    """{input / output name: {axis: dim name}} of the graph's named (dynamic) dims."""
    return {vi.name: {k: d.dim_param for k, d in enumerate(vi.type.tensor_type.shape.dim) if d.dim_param}
            for vi in list(model_onnx.graph.input) + list(model_onnx.graph.output)}


def _name_dims(model_onnx, names: dict[str, dict[int, str]]) -> None:
    for vi in list(model_onnx.graph.input) + list(model_onnx.graph.output):
        dims = vi.type.tensor_type.shape.dim
        for axis, name in names.get(vi.name, {}).items():
            if axis < len(dims):
                dims[axis].dim_param = name


def simplify_graph(model_onnx, names: list[str], where: str, input_name: str = INPUT_NAME):
    """Run onnxslim when importable; return (model, simplified). The slimmed graph is kept only when it still has the
    layout (:func:`check_layout`); otherwise a warning naming ``where`` and the unchanged model. The inputs' and
    outputs' dim names survive (onnxslim writes the expressions shape inference derives, ``floor(...) + 1``)."""
    try:
        import onnxslim
    except ImportError:
        return model_onnx, False
    from runtime.engines import first_line

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(model_onnx)
        problem = check_layout(slim, names, input_name)
    except Exception as e:  # keep the plain graph on any simplifier failure
        slim, problem = None, f"{type(e).__name__}: {first_line(e)}"
    if problem:
        warnings.warn(f"{where}: onnxslim result discarded ({problem}); keeping the unsimplified graph")
        return model_onnx, False
    _name_dims(slim, _dim_names(model_onnx))
    return slim, True


def opset_of(model_onnx) -> int:
    """The model's default-domain (``ai.onnx``) opset version; 0 when it imports none."""
    return next((o.version for o in model_onnx.opset_import if o.domain in ("", "ai.onnx")), 0)


PROBE_SEED = 0  # the seeded random image graphs are probed with


def probe_graph(model, wanted: Sequence[str], feed_shape: list[int], *, where: str,
                error: type[Exception]) -> dict[str, Any]:
    """Run ``model`` once with onnxruntime (no graph optimisation) on a seeded random float image of ``feed_shape``;
    return {tensor: value} for the graph outputs, the tensors ``wanted`` and the input. ``error(where: ...)`` when
    onnxruntime cannot run it."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from runtime.engines import first_line

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    graph_inputs = {i.name for i in probe.graph.input} | {t.name for t in probe.graph.initializer}
    for name in wanted:
        if name not in present and name not in graph_inputs:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(PROBE_SEED).random(feed_shape, dtype=np.float32)
        names = [o.name for o in sess.get_outputs()]
        values = sess.run(names, {sess.get_inputs()[0].name: x})
    except Exception as e:
        raise error(f"{where}: onnxruntime cannot run the graph ({type(e).__name__}: {first_line(e)})") from e
    out = dict(zip(names, values))
    out[model.graph.input[0].name] = x
    return out


def prune_graph(model, keep_outputs: Sequence[str]) -> None:
    """Drop every node, initializer and value_info the outputs ``keep_outputs`` do not need."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    needed: set[str] = set()
    stack = list(keep_outputs)
    kept_nodes = set()
    while stack:
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        node = producer.get(t)
        if node is not None and id(node) not in kept_nodes:
            kept_nodes.add(id(node))
            stack.extend(i for i in node.input if i)
    nodes = topological_order([n for n in graph.node if id(n) in kept_nodes], graph)
    del graph.node[:]
    graph.node.extend(nodes)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    vis = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(vis)
    ins = [i for i in graph.input if i.name in needed]
    del graph.input[:]
    graph.input.extend(ins)


def topological_order(nodes: list, graph) -> list:
    """``nodes`` ordered so that every input is made before it is read (converters may append casts at the end)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    out, pending = [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # unresolvable (a cycle or a missing tensor): keep the original order
            return out + rest
        pending = rest
    return out


def finish_graph(model_onnx, outputs: list[str], metadata: Mapping[str, Any], *, input_dtype: str, simplify: bool,
                 where: str, graph: str, error: type[Exception]):
    """Finish a float-input graph whose outputs are already ``outputs`` (named and ordered) into a layout file, in
    memory: the uint8 prologue when ``input_dtype`` is "uint8", the layout check, the optional onnxslim pass (dim
    names kept), the IR version cap, the metadata and ``onnx.checker``. Returns the finished model.

    ``metadata`` holds :func:`layout_metadata`'s arguments except the three this step knows (``input_dtype``,
    ``opset``: read from the graph, ``simplified``). A graph without the layout or failing the checker raises
    ``error`` with a one-line message starting with ``where``; ``graph`` names it there ("exported", "truncated").
    """
    import onnx

    from runtime.engines import first_line

    if input_dtype == "uint8":
        normalise_input_in_graph(model_onnx)
    problem = check_layout(model_onnx, outputs)
    if problem:
        raise error(f"{where}: unexpected {graph} graph: {problem}")
    simplified = False
    if simplify:
        model_onnx, simplified = simplify_graph(model_onnx, outputs, where)
    if model_onnx.ir_version > MAX_IR_VERSION:
        model_onnx.ir_version = MAX_IR_VERSION
    set_metadata(model_onnx, layout_metadata(**metadata, input_dtype=input_dtype, opset=opset_of(model_onnx),
                                             simplified=simplified))
    try:
        onnx.checker.check_model(model_onnx)
    except Exception as e:
        raise error(f"{where}: the {graph} graph fails onnx.checker ({first_line(e)})") from e
    return model_onnx


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
            write: Callable[[argparse.Namespace], Path], errors: type[Exception]) -> int:
    """The command line of a tool that writes a layout file: parse ``argv`` (argparse's own exit codes), check
    ``--imgsz`` (N or H W), run ``write(args)``; print ``errors`` as one line with exit 2, or the file's summary."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if args.imgsz is not None and len(args.imgsz) > 2:
        print(f"error: --imgsz takes N or H W, got {args.imgsz}", file=sys.stderr)
        return 2
    try:
        out = write(args)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summarize(out))
    return 0
