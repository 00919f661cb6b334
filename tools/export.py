"""Export an Ultralytics YOLOv8 / YOLO11 / YOLOv10 / YOLO26 checkpoint to ONNX with a *truncated* head.

The exported graph stops at the last convolution of every head branch: per pyramid level it returns the raw box
distribution logits (``4 * reg_max`` channels), the raw class logits (``nc`` channels, before sigmoid) and, for
segment / pose / obb models, the raw mask coefficients (``nm``) / keypoints (``nk``) / angle logits (1, before the
sigmoid), plus the mask prototypes of segment models. DFL, anchor decoding, concatenation, sigmoid and NMS are left to
the runtime. A classifier (YOLOv8-cls, YOLO11-cls) ends at its class logits, ``logits`` (batch, nc), before the
softmax (:mod:`tools.export_classify`).

YOLOv10 and YOLO26 heads have a one-to-many and a one-to-one branch; as in Ultralytics, the default exports the
one-to-many branch (NMS on the host) and ``--nms false`` (or ``--end2end``) the one-to-one branch (top-k on the host,
no NMS); the metadata's ``branch`` says which (:mod:`tools.head_branches`).

Usage::

    python tools/export.py MODEL.pt [--imgsz 640 | --imgsz H W] [--batch N|dynamic] [--dynamic-hw]
                                    [--input-dtype uint8|float32] [--opset 17] [--simplify/--no-simplify]
                                    [--nms true|false | --end2end] [-o OUT.onnx]

Library::

    from tools.export import export_truncated
    onnx_path = export_truncated("yolov8n.pt", imgsz=640)

Input ``images``: (batch, 3, H, W) RGB. By default uint8 0..255, and the graph starts with Ultralytics' own
normalisation (``float(x) / 255``, bit for bit): the host then writes a quarter of the bytes, and the division runs
on onnxruntime's threads inside the session. ``--input-dtype float32`` takes 0..1 floats like a stock export.

Outputs, in order, for each level ``pN`` (N = log2(stride), usually p3, p4, p5)::

    box_pN, cls_pN[, mc_pN | kpt_pN | ang_pN]   ...   [proto]

Heavy dependencies (torch, ultralytics, onnx) are imported inside functions so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import types
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

if __package__ in (None, ""):  # `python tools/export.py` puts tools/ first on sys.path: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.head_branches import REFUSED, SUPPORTED, branch_for, has_one2one, truncated_forward  # noqa: E402
from tools.layout import (  # noqa: E402 - the shared truncated-head layout
    INPUT_DTYPES,
    INPUT_NAME,
    LAYOUT,
    LAYOUT_VERSION,
    LEVEL_OUTPUTS,
    PRODUCER,
    PROTO_NAME,
    check_layout,
    finish_graph,
    level_name,
    normalise_input_in_graph,
    output_names,
    run_cli,
    shape_of,
    summarize,
)

MIN_OPSET = 11  # nearest Resize with scales needs opset 11 in the legacy exporter

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "ExportArgumentError",
    "ExportError",
    "UnsupportedModelError",
    "export_truncated",
    "main",
    "output_names",
    "summarize",
    "truncated_head",
]


class ExportError(Exception):
    """Base class of every error the exporter raises on purpose (main() prints it and returns 2)."""


class CheckpointNotFoundError(ExportError, FileNotFoundError):
    """The .pt file does not exist."""


class CheckpointError(ExportError):
    """The file exists but is not a loadable Ultralytics PyTorch checkpoint."""


class UnsupportedModelError(ExportError):
    """The checkpoint loads, but its head is not a YOLOv8-style Detect / Segment / Pose head."""


class ExportArgumentError(ExportError, ValueError):
    """A bad argument: image size, batch, opset or output path."""


# --------------------------------------------------------------------------------------------------------- helpers
_level_name = level_name  # kept for callers of the old private names
_normalise_in_graph = normalise_input_in_graph
_check_layout = check_layout
_shape_of = shape_of


def _parse_imgsz(imgsz: Any) -> tuple[int, int]:
    """int -> (n, n); [n] -> (n, n); [h, w] -> (h, w); every value a positive int."""
    vals = [imgsz] if isinstance(imgsz, str) or not hasattr(imgsz, "__iter__") else list(imgsz)
    if len(vals) not in (1, 2):
        raise ExportArgumentError(f"imgsz must be one size or an (H, W) pair, got {imgsz!r}")
    out = []
    for v in vals:
        if isinstance(v, bool):
            raise ExportArgumentError(f"imgsz must contain positive integers, got {imgsz!r}")
        try:
            iv = int(v)
        except (TypeError, ValueError):
            raise ExportArgumentError(f"imgsz must contain positive integers, got {imgsz!r}") from None
        if iv != v and not (isinstance(v, str) and v.strip().isdigit()):
            raise ExportArgumentError(f"imgsz must contain positive integers, got {imgsz!r}")
        if iv <= 0:
            raise ExportArgumentError(f"imgsz must contain positive integers, got {imgsz!r}")
        out.append(iv)
    return (out[0], out[0]) if len(out) == 1 else (out[0], out[1])


def _parse_batch(batch: Any) -> int | None:
    """'dynamic' / None -> None (dynamic), otherwise a positive int."""
    if batch is None or (isinstance(batch, str) and batch.strip().lower() == "dynamic"):
        return None
    if isinstance(batch, bool):
        raise ExportArgumentError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    try:
        b = int(batch)
    except (TypeError, ValueError):
        raise ExportArgumentError(f"batch must be 'dynamic' or a positive integer, got {batch!r}") from None
    if b <= 0 or (not isinstance(batch, str) and b != batch):
        raise ExportArgumentError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return b


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


# ------------------------------------------------------------------------------------------------- model handling
@dataclass
class _HeadInfo:
    task: str
    strides: list[int]
    reg_max: int
    nc: int
    names: dict[int, str]
    nm: int | None = None
    kpt_shape: list[int] | None = None
    dfl_bins: list[float] | None = None  # only when the DFL weights are not exactly 0..reg_max-1
    head: str | None = None  # written for two-branch heads and Pose26 only
    branch: str | None = None
    kpt_rule: str | None = None


def _load_yolo(pt: Path):
    """Load a .pt with ultralytics.YOLO."""
    try:
        import torch  # noqa: F401
        from ultralytics import YOLO
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ExportError(
            f"exporting {pt} needs torch and ultralytics ({e}); install with: pip install 'yolo-edge-runtime[export]'"
        ) from e

    try:
        return YOLO(str(pt))
    except Exception as e:
        reason = f"{type(e).__name__}: {_first_line(e)}"
        raise CheckpointError(f"{pt}: not a loadable Ultralytics checkpoint ({reason})") from e


def _load_model(pt: Path, nms: bool | None = None, yolo=None):
    """Load a .pt (or take its loaded ``yolo``) and return (fused fp32 CPU eval model, head, _HeadInfo); ``nms``
    picks the branch of a two-branch head as Ultralytics does (None / True: one-to-many, False: one-to-one)."""
    yolo = yolo if yolo is not None else _load_yolo(pt)
    model = getattr(yolo, "model", None)
    seq = getattr(model, "model", None)
    if model is None or not hasattr(model, "fuse") or seq is None or len(seq) == 0:
        raise CheckpointError(f"{pt}: not an Ultralytics YOLO PyTorch model (got {type(model).__name__})")

    head = seq[-1]
    kind = type(head).__name__
    head_kind = SUPPORTED.get(kind)  # exact class names: subclasses (YOLOE, ...) are not the same head
    if head_kind is None:
        why = REFUSED.get(kind, "not a Detect, Segment, Pose, OBB or Classify head of YOLOv8/11, YOLOv10 or YOLO26")
        raise UnsupportedModelError(f"{pt}: unsupported head {kind} (task {getattr(yolo, 'task', '?')}): {why}")
    task = head_kind.task
    if task == "obb" and int(getattr(head, "ne", 1)) != 1:
        raise UnsupportedModelError(f"{pt}: unsupported head {kind} with {head.ne} angle channels; OBB heads have 1")
    branch = branch_for(nms)
    two_branches = has_one2one(head)
    if branch == "one2one" and not two_branches:
        raise UnsupportedModelError(f"{pt}: the {kind} head has no one-to-one branch: --nms false / --end2end needs "
                                    "a YOLOv10 or YOLO26 model")
    if two_branches and getattr(head, "cv2", None) is None:
        if branch == "one2many":
            raise UnsupportedModelError(f"{pt}: the {kind} head's one-to-many branch was removed from this checkpoint "
                                        "(fused): export it with --nms false / --end2end")
    if two_branches:
        model.end2end = branch == "one2one"  # fuse() below then drops the other branch
    reg_max = int(head.reg_max)
    strides = [int(s) for s in head.stride.tolist()]
    if not strides or any(s <= 0 for s in strides):
        raise CheckpointError(f"{pt}: the {kind} head has no strides (model was never built?)")
    try:
        [_level_name(s) for s in strides]
    except ValueError as e:
        raise UnsupportedModelError(f"{pt}: unsupported head {kind}: {e}") from None

    names = getattr(model, "names", None) or {i: str(i) for i in range(int(head.nc))}
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    names = {int(k): str(v) for k, v in names.items()}
    if sorted(names) != list(range(int(head.nc))):
        raise CheckpointError(f"{pt}: class names {sorted(names)[:5]}... do not match nc={int(head.nc)}")

    info = _HeadInfo(task=task, strides=strides, reg_max=reg_max, nc=int(head.nc), names=names)
    if two_branches or head_kind.kpt_rule == "anchor":
        info.head, info.branch, info.kpt_rule = kind, branch, head_kind.kpt_rule
    bins = [float(v) for v in head.dfl.conv.weight.detach().float().flatten().tolist()] if reg_max > 1 else [0.0]
    if bins != [float(i) for i in range(reg_max)]:
        info.dfl_bins = bins  # e.g. weights rounded through int8: the host decode must use the same values
    if task == "segment":
        info.nm = int(head.nm)
    if task == "pose":
        info.kpt_shape = [int(v) for v in head.kpt_shape]

    model = model.fuse(verbose=False)  # fold BN into convs; a two-branch head drops the branch not exported
    model = model.float().cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, model.model[-1], info


@contextmanager
def truncated_head(head, task: str, branch: str = "one2many") -> Iterator[None]:
    """Temporarily replace ``head.forward`` (on the instance only) with the truncated forward of ``branch``."""
    kind = SUPPORTED.get(type(head).__name__)
    if kind is None or kind.task != task:
        raise UnsupportedModelError(f"unsupported head {type(head).__name__} for task {task}")
    had_own = "forward" in head.__dict__
    saved = head.__dict__.get("forward")
    head.forward = types.MethodType(truncated_forward(kind, branch), head)
    try:
        yield
    finally:
        if had_own:
            head.forward = saved
        else:
            del head.forward


def export_truncated(
    pt_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    imgsz: int | Sequence[int] | None = None,
    batch: int | str | None = "dynamic",
    dynamic_hw: bool = False,
    opset: int = 17,
    simplify: bool = True,
    input_dtype: str = "uint8",
    nms: bool | None = None,
) -> Path:
    """Export ``pt_path`` (an Ultralytics YOLOv8 / YOLO11 / YOLOv10 / YOLO26 detect/segment/pose/obb .pt, or a
    classifier) to a truncated-head ONNX file.

    Args:
        pt_path: the .pt checkpoint.
        out_path: destination .onnx (default: next to the .pt, same stem); an existing directory means
            ``<dir>/<stem>.onnx``.
        imgsz: trace size, int or (H, W) (default 640, a classifier's 224); must be multiples of the largest stride
            (32 for a classifier). Fixed H, W unless ``dynamic_hw``.
        batch: "dynamic" (default, dim named "batch") or a fixed positive int.
        dynamic_hw: make H and W dynamic too (the graph is fully convolutional; H, W must still be stride multiples).
        opset: ONNX opset (>= 11, default 17).
        input_dtype: "uint8" (default: RGB 0..255, divided by 255 inside the graph) or "float32" (RGB 0..1).
        simplify: run onnxslim when importable; kept only if names and Conv-terminated outputs survive.
        nms: the branch of a YOLOv10 / YOLO26 head, as Ultralytics' ``nms``: None (default) or True the one-to-many
            branch (NMS on the host), False the one-to-one branch (top-k, no NMS).

    Returns:
        The path of the written .onnx file (written to a temp file in the same folder, then renamed into place).

    Raises:
        CheckpointNotFoundError, CheckpointError, UnsupportedModelError, ExportArgumentError, ExportError.
    """
    pt = Path(pt_path).expanduser()
    if not pt.is_file():
        raise CheckpointNotFoundError(f"{pt}: no such checkpoint file")
    pt = pt.resolve()
    if pt.suffix.lower() != ".pt":
        raise CheckpointError(f"{pt}: expected an Ultralytics PyTorch checkpoint (.pt), got {pt.suffix or 'no suffix'}")
    try:
        size = None if imgsz is None else _parse_imgsz(imgsz)
        fixed_batch = _parse_batch(batch)
    except ExportArgumentError as e:
        raise ExportArgumentError(f"{pt}: {e}") from None
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportArgumentError(f"{pt}: opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    if input_dtype not in INPUT_DTYPES:
        raise ExportArgumentError(f"{pt}: input_dtype must be one of {', '.join(INPUT_DTYPES)}, got {input_dtype!r}")

    if out_path is None:
        out = pt.with_suffix(".onnx")
    else:
        out = Path(out_path).expanduser()
        if out.is_dir():
            out = out / f"{pt.stem}.onnx"
    out = out.resolve()
    if out == pt:
        raise ExportArgumentError(f"{pt}: output path would overwrite the checkpoint")

    from runtime.io.files import file_sha256

    sha = file_sha256(pt)  # hash the bytes before loading them
    yolo = _load_yolo(pt)
    from tools.export_classify import export_classifier, is_classifier

    if is_classifier(getattr(yolo, "model", None)):
        return export_classifier(yolo, pt, out, sha, size, fixed_batch, dynamic_hw, opset, simplify, input_dtype,
                                 ExportError, ExportArgumentError)
    h, w = size or (640, 640)
    model, head, info = _load_model(pt, nms, yolo)

    smax = max(info.strides)
    if h % smax or w % smax:
        raise ExportArgumentError(
            f"{pt}: imgsz {h}x{w} (HxW) must be multiples of the model's max stride {smax} "
            f"(e.g. {math.ceil(h / smax) * smax}x{math.ceil(w / smax) * smax})"
        )

    import onnx
    import torch

    names = output_names(info.task, info.strides)
    dynamic_axes: dict[str, dict[int, str]] = {}
    if fixed_batch is None or dynamic_hw:
        in_axes = {0: "batch"} if fixed_batch is None else {}
        if dynamic_hw:
            in_axes.update({2: "height", 3: "width"})
        dynamic_axes[INPUT_NAME] = in_axes
        for n in names:
            axes = {0: "batch"} if fixed_batch is None else {}
            if dynamic_hw:
                lvl = n.rsplit("_", 1)[-1]  # p3 / p4 / p5 / proto
                axes.update({2: f"h_{lvl}", 3: f"w_{lvl}"})
            dynamic_axes[n] = axes
    im = torch.zeros(fixed_batch or 1, 3, h, w, dtype=torch.float32)

    from runtime.io.files import atomic_output

    with atomic_output(out) as tmp:
        with truncated_head(head, info.task, info.branch or "one2many"), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings
            try:
                torch.onnx.export(
                    model,
                    im,
                    str(tmp),
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=names,
                    dynamic_axes=dynamic_axes or None,
                    do_constant_folding=True,
                    dynamo=False,
                )
            except Exception as e:
                raise ExportError(f"{pt}: torch.onnx.export failed ({type(e).__name__}: {_first_line(e)})") from e

        metadata = dict(
            task=info.task, names=info.names, strides=info.strides, reg_max=info.reg_max, nm=info.nm,
            kpt_shape=info.kpt_shape, dfl_bins=info.dfl_bins, head=info.head, branch=info.branch,
            kpt_rule=info.kpt_rule, imgsz=(h, w), batch=fixed_batch, dynamic_hw=dynamic_hw,
            source=pt.name, source_sha256=sha, ultralytics_version=_ultralytics_version(),
        )
        model_onnx = finish_graph(onnx.load(str(tmp)), names, metadata, input_dtype=input_dtype, simplify=simplify,
                                  where=str(pt), graph="exported", error=ExportError)
        onnx.save(model_onnx, str(tmp))
    return out


def _ultralytics_version() -> str:
    import ultralytics

    return str(ultralytics.__version__)


# ------------------------------------------------------------------------------------------------------------- CLI
def _batch_arg(text: str) -> int | str:
    if text.strip().lower() == "dynamic":
        return "dynamic"
    try:
        b = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}") from None
    if b <= 0:
        raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}")
    return b


def _bool_arg(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/export.py",
        description="Export an Ultralytics YOLOv8/11/v10/26 detect/segment/pose/obb .pt to ONNX with a truncated head "
        "(raw per-level box/cls[/mc|kpt|ang] conv outputs [+ proto]; no DFL, decode, sigmoid or NMS), or a "
        "classifier ending at its logits (no softmax).",
    )
    p.add_argument("model", help="Ultralytics .pt checkpoint")
    p.add_argument(
        "--imgsz", type=int, nargs="+", default=None, metavar="N",
        help="trace size: N or H W (default 640; 224 for classifiers)"
    )
    p.add_argument("--batch", type=_batch_arg, default="dynamic", help="'dynamic' (default) or a fixed batch size")
    p.add_argument("--dynamic-hw", action="store_true", help="make input height and width dynamic too")
    p.add_argument("--input-dtype", choices=INPUT_DTYPES, default="uint8",
                   help="uint8 (default: RGB 0..255, divided by 255 in the graph) or float32 (RGB 0..1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--simplify", action=argparse.BooleanOptionalAction, default=True, help="simplify with onnxslim if installed"
    )
    p.add_argument("--nms", type=_bool_arg, default=None, metavar="true|false",
                   help="YOLOv10 / YOLO26: false exports the one-to-one branch (no NMS); default: one-to-many + NMS")
    p.add_argument("--end2end", action="store_true", help="same as --nms false")
    p.add_argument("-o", "--output", default=None, help="output .onnx (default: MODEL.onnx next to the .pt)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, lambda args: export_truncated(
        args.model, args.output, imgsz=args.imgsz, batch=args.batch, dynamic_hw=args.dynamic_hw, opset=args.opset,
        simplify=args.simplify, input_dtype=args.input_dtype, nms=False if args.end2end else args.nms), ExportError)


if __name__ == "__main__":
    sys.exit(main())
