"""What a W8A8 model is built from: the recipe, its two QDQ layouts, and the calibrated model both are built on.

Two layouts, one per engine (``Recipe.target``):

* ``openvino`` (the default): ``tools/qdq.py``'s layout, int8 weights per output channel, u8 asymmetric
  activations quantized where they are computed (concat inputs sharing a scale), bias correction. OpenVINO runs the
  convs, splits, concats and pools as int8 (VNNI / AMX). Float: the last two convs of every keypoint and
  mask-coefficient branch (``float_tails``), the outputs int8 rounds visibly, and the last conv of every box branch
  of a DFL-free (YOLO26, ``reg_max`` 1) file (``float_box_tails``), whose output is the box itself. No quantizer
  ever sits on a head output: each leaves its conv in float, with its own range per level and branch.
* ``onnxruntime``: onnxruntime's ``quantize_static`` (QDQ on every tensor) with the range edits of
  ``tools/ort_qdq.py`` (SiLU inputs clipped at -7, one scale per concat / split / slice / pool / resize group, the
  uint8 input read as int8 data). onnxruntime's CPU provider runs it as QLinearConv / QLinearSigmoid / QLinearMul
  chains with nothing requantized between convs. Float: the output convs (``float_head``: onnxruntime rounds every
  output it quantizes, and DFL logits and keypoints do not survive it) and every keypoint / mask-coefficient branch
  whole (``float_tails=3``), each float conv with its SiLU (quantize_static would otherwise round the tensor between
  two float convs). Bias correction (``--bias-correction``, on quantize_static's own weight grid) is off: it gains
  keypoint points and loses mask points (``tools/quantize.py``).

Head branches are found from the graph: the nodes that feed exactly one model output (box / class / keypoint /
mask-coefficient towers and the prototype branch). The ``recipe comparison`` table in ``tools/quantize.py`` is
where these defaults come from.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tools.calibration import METHODS, load_or_calibrate, load_or_collect_stats
from tools.qdq import ActivationStats, build_conv_qdq
from tools.ort_qdq import build_ort_qdq
from tools.quant_model import (ModelInfo, QuantizeError, as_model, branch_nodes, branch_tail_convs, check_excludes,
                               conv_groups, head_nodes, prepare_model)

TOOL_VERSION = "2"
DEFAULT_NUM = 256
DEFAULT_SEED = 0
TARGETS = ("openvino", "onnxruntime")
ACT_TYPES = ("u8", "s8")
STATS_METHODS = ("minmax", "meanminmax")  # what tools/qdq.py's statistics support

__all__ = ["Calibrated", "DEFAULT_RECIPE", "Recipe", "TARGETS", "add_recipe_arguments", "excluded_nodes",
           "calibrate_model", "preset", "quantization_settings", "recipe_from_args"]


@dataclass(frozen=True)
class Recipe:
    """How to quantize. The defaults are the measured best recipe for OpenVINO (``preset("onnxruntime")`` for the
    other layout)."""

    target: str = "openvino"  # openvino (tools/qdq.py) | onnxruntime (QDQ everywhere, QLinear* kernels)
    method: str = "meanminmax"  # calibration: minmax | meanminmax | percentile | entropy (the last two: onnxruntime)
    percentile: float = 99.999  # for method == "percentile"
    per_channel: bool = True  # per-output-channel weight scales
    activation_type: str = "u8"  # u8 | s8 (weights are always s8)
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    reduce_range: bool = False  # 7-bit weights (onnxruntime target only)
    silu_clip: float | None = None  # raise SiLU input ranges' low end to -silu_clip (onnxruntime target only)
    shared_scales: bool = False  # one range per Concat / Split / Slice / MaxPool / Resize group (onnxruntime only)
    float_head: bool = False  # keep the convs that produce the model outputs float
    float_branches: bool = False  # keep every node that feeds exactly one model output float (the head's branches)
    float_tails: int = 2  # keep the last N convs of every keypoint / mask-coefficient branch float
    float_box_tails: int = 1  # keep the last N convs of every DFL-free (YOLO26) box branch float; DFL boxes: none
    bias_correction: bool = True  # move biases by the mean shift weight rounding causes
    auto_exclude: int = 0  # keep the K most sensitive Conv+SiLU groups float (sensitivity analysis)
    num: int = DEFAULT_NUM  # calibration images (all if the folder holds fewer)
    seed: int = DEFAULT_SEED
    exclude: tuple[str, ...] = ()  # node names kept float

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise QuantizeError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.method not in METHODS:
            raise QuantizeError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0.0 < self.percentile <= 100.0:
            raise QuantizeError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.activation_type not in ACT_TYPES:
            raise QuantizeError(f"--act-type must be one of {', '.join(ACT_TYPES)}, got {self.activation_type!r}")
        if self.num < 1:
            raise QuantizeError(f"--num must be >= 1, got {self.num}")
        if self.float_tails < 0:
            raise QuantizeError(f"--float-tails must be >= 0, got {self.float_tails}")
        if self.float_box_tails < 0:
            raise QuantizeError(f"--float-box-tails must be >= 0, got {self.float_box_tails}")
        if self.auto_exclude < 0:
            raise QuantizeError(f"--auto-exclude must be >= 0, got {self.auto_exclude}")
        if self.silu_clip is not None and not self.silu_clip > 0:
            raise QuantizeError(f"--silu-clip must be > 0, got {self.silu_clip}")
        if self.target == "openvino":
            if self.method not in STATS_METHODS:
                raise QuantizeError(f"--method {self.method} needs --target onnxruntime (the openvino layout "
                                    f"calibrates with {' or '.join(STATS_METHODS)})")
            unsupported = [flag for flag, on in (("--silu-clip", self.silu_clip is not None),
                                                 ("--reduce-range", self.reduce_range),
                                                 ("--shared-scales", self.shared_scales)) if on]
            if unsupported:
                raise QuantizeError(f"{', '.join(unsupported)} only apply to --target onnxruntime "
                                    "(the openvino layout never quantizes SiLU inputs)")

    def label(self) -> str:
        """Short human-readable name, e.g. 'openvino/meanminmax/pc/s8-sym/bc/floatbranches'."""
        m = self.method + (f"{self.percentile:g}" if self.method == "percentile" else "")
        w = ("pc" if self.per_channel else "pt") + ("-rr" if self.reduce_range else "")
        a = self.activation_type + ("-sym" if self.activation_symmetric else "-asym")
        parts = [self.target, m, w, a]
        parts += ["bc"] if self.bias_correction else []
        parts += [f"siluclip{self.silu_clip:g}"] if self.silu_clip else []
        parts += ["sharedscales"] if self.shared_scales else []
        parts += ["floatbranches"] if self.float_branches else (["floathead"] if self.float_head else [])
        parts += [f"floattails{self.float_tails}"] if self.float_tails and not self.float_branches else []
        return "/".join(parts) + (f"+{len(self.exclude)}float" if self.exclude else "")


DEFAULT_RECIPE = Recipe()
_PRESETS = {
    "openvino": DEFAULT_RECIPE,
    "onnxruntime": Recipe(target="onnxruntime", silu_clip=7.0, shared_scales=True, bias_correction=False,
                          float_head=True, float_branches=False, float_tails=3),
}


def preset(target: str) -> Recipe:
    """The measured default recipe of a target."""
    if target not in _PRESETS:
        raise QuantizeError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    return _PRESETS[target]


def excluded_nodes(model_path: str | Path, recipe: Recipe) -> list[str]:
    """Every node the recipe keeps float: ``exclude``, the output convs (``float_head``), the head's branches
    (``float_branches``), the keypoint / mask-coefficient branches' last convs (``float_tails``) and, in a DFL-free
    file, the box branches' last convs (``float_box_tails``); for the onnxruntime layout also the SiLU of every float
    conv."""
    names = list(recipe.exclude)
    model = as_model(model_path)  # loaded once for the lookups
    if recipe.float_tails:
        names += [n for n in branch_tail_convs(model, recipe.float_tails) if n not in names]
    if recipe.float_box_tails and _dfl_free(model):
        names += [n for n in branch_tail_convs(model, recipe.float_box_tails, ("box_",)) if n not in names]
    if recipe.float_head:
        names += [n for n in head_nodes(model) if n not in names]
    if recipe.float_branches:
        names += [n for n in branch_nodes(model) if n not in names]
    if recipe.target == "onnxruntime":
        # quantize_static would still quantize a float conv's SiLU (QLinearSigmoid / QLinearMul) and so round the
        # tensor between two float convs: a float conv keeps its activation float
        groups = conv_groups(model)
        names += [n for conv in list(names) for n in groups.get(conv, [])[1:] if n not in names]
    return names


def _dfl_free(model) -> bool:
    """A YOLO26-style box branch (``reg_max`` 1): its conv outputs the distances themselves."""
    return any(p.key == "reg_max" and p.value == "1" for p in model.metadata_props)


# ---------------------------------------------------------------------------------------------- calibrated model
@dataclass
class Calibrated:
    """A float model with its calibration, ready to build W8A8 variants from without recalibrating.

    ``model_path`` is the graph the QDQ is placed on: onnxruntime's pre-processed copy for the onnxruntime target
    (with its calibration ``table``), the float export itself for the openvino target (with tools/qdq.py's ``stats``).
    """

    model_path: Path
    input_name: str
    table: Path | None = None
    stats: ActivationStats | None = field(default=None, repr=False)

    def build(self, recipe: Recipe, out_path: str | Path) -> Path:
        """Write the W8A8 QDQ model of ``recipe`` (without metadata) to ``out_path``."""
        if recipe.target == "onnxruntime":
            return build_ort_qdq(self.model_path, self.table, out_path=out_path, input_name=self.input_name,
                                 activation_type=recipe.activation_type,
                                 activation_symmetric=recipe.activation_symmetric,
                                 weight_symmetric=recipe.weight_symmetric, per_channel=recipe.per_channel,
                                 reduce_range=recipe.reduce_range, silu_clip=recipe.silu_clip,
                                 shared_scales=recipe.shared_scales, exclude=excluded_nodes(self.model_path, recipe),
                                 stats=self.stats if recipe.bias_correction else None)
        import onnx

        model = onnx.load(str(self.model_path))
        qdq = build_conv_qdq(model, self.stats, excluded_nodes(model, recipe), method=recipe.method,
                             activation_type=recipe.activation_type, symmetric=recipe.activation_symmetric,
                             per_channel=recipe.per_channel, bias_correction=recipe.bias_correction)
        onnx.save(qdq, str(out_path))
        return Path(out_path)


def quantization_settings(recipe: Recipe, info: ModelInfo, n_images: int, model_path: str | Path | None = None
                          ) -> dict[str, Any]:
    """The ``quantization`` metadata of a W8A8 file: the recipe, the calibration and the tools that built it."""
    import onnxruntime

    return {
        "format": "QDQ",
        "target_engine": recipe.target,
        "recipe": recipe.label(),
        "method": recipe.method,
        "percentile": recipe.percentile if recipe.method == "percentile" else None,
        "per_channel": recipe.per_channel,
        "activation_type": "QUInt8" if recipe.activation_type == "u8" else "QInt8",
        "weight_type": "QInt8",
        "activation_symmetric": recipe.activation_symmetric,
        "weight_symmetric": recipe.weight_symmetric,
        "reduce_range": recipe.reduce_range,
        "silu_clip": recipe.silu_clip,
        "shared_scales": recipe.shared_scales,
        "bias_correction": recipe.bias_correction,
        "calibration_images": n_images,
        "calibration_seed": recipe.seed,
        "float_head": recipe.float_head,
        "float_branches": recipe.float_branches,
        "float_tails": recipe.float_tails,
        "float_box_tails": recipe.float_box_tails,
        "excluded_nodes": excluded_nodes(model_path, recipe) if model_path is not None else list(recipe.exclude),
        "float_source_sha256": info.sha256,
        "float_source": info.path.name,
        "onnxruntime": onnxruntime.__version__,
        "tool": f"tools/quantize.py v{TOOL_VERSION}",
    }


def calibrate_model(info: ModelInfo, images: Sequence[Path], recipe: Recipe, workdir: Path,
                    cache_dir: str | Path | None = None) -> Calibrated:
    """The float model with the statistics its recipe's layout needs (checks ``recipe.exclude`` on that graph)."""
    if recipe.target == "onnxruntime":
        import onnx

        pre = prepare_model(info.path, workdir / "preprocessed.onnx")
        check_excludes(recipe.exclude, [n.name for n in onnx.load(str(pre)).graph.node], info.node_names, info.path)
        table = load_or_calibrate(pre, info, images, recipe.method, recipe.percentile, cache_dir, workdir)
        stats = load_or_collect_stats(info.path, info, images, cache_dir) if recipe.bias_correction else None
        return Calibrated(pre, info.input_name, table=table, stats=stats)
    check_excludes(recipe.exclude, info.node_names, info.node_names, info.path)
    return Calibrated(info.path, info.input_name, stats=load_or_collect_stats(info.path, info, images, cache_dir))


# ------------------------------------------------------------------------------------------------- CLI arguments
def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe's options; each defaults to None, meaning "the --target preset's value" (see recipe_from_args)."""
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--target", choices=TARGETS, default="openvino",
                   help="engine the QDQ layout is made for: openvino (int8 convs, fastest on x86 CPUs) or "
                        "onnxruntime (QLinear* kernels)")
    p.add_argument("--num", type=int, default=DEFAULT_NUM, help="calibration images (all if the folder holds fewer)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the calibration image draw")
    p.add_argument("--method", choices=METHODS, help="calibration method (default meanminmax)")
    p.add_argument("--percentile", type=float, help="for --method percentile (default 99.999)")
    p.add_argument("--per-channel", action=bool_flag, default=None, help="per-output-channel weight scales (default on)")
    p.add_argument("--act-type", choices=ACT_TYPES, help="activation type (default u8)")
    p.add_argument("--act-symmetric", action=bool_flag, default=None,
                   help="symmetric activation ranges (default off; s8 symmetric runs faster in OpenVINO but loses accuracy)")
    p.add_argument("--reduce-range", action=bool_flag, default=None, help="7-bit weights (onnxruntime target)")
    p.add_argument("--silu-clip", type=float, metavar="C",
                   help="raise the low end of SiLU input ranges to -C, 0 for off (onnxruntime target; default 7)")
    p.add_argument("--shared-scales", action=bool_flag, default=None,
                   help="one range per Concat / Split / Slice / MaxPool / Resize group, so nothing requantizes between "
                        "convs (onnxruntime target)")
    p.add_argument("--float-head", action=bool_flag, default=None,
                   help="keep the output convs float (default: off for openvino, on for onnxruntime)")
    p.add_argument("--float-branches", action=bool_flag, default=None,
                   help="keep every node that feeds exactly one output float: the head's branches (default off)")
    p.add_argument("--float-tails", type=int, metavar="N",
                   help="keep the last N convs of every keypoint / mask-coefficient branch float (default: 2 for "
                        "openvino, 3 (the whole branch) for onnxruntime)")
    p.add_argument("--float-box-tails", type=int, metavar="N",
                   help="keep the last N convs of every DFL-free (YOLO26) box branch float (default 1; DFL boxes "
                        "are never affected)")
    p.add_argument("--bias-correction", action=bool_flag, default=None,
                   help="correct conv biases for the mean shift of weight rounding (default on)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="NAME", help="node names to keep float")
    p.add_argument("--auto-exclude", type=int, metavar="K",
                   help="keep the K most sensitive Conv+SiLU groups float (runs the sensitivity analysis; default 0)")


def recipe_from_args(args: argparse.Namespace, exclude: Sequence[str] = ()) -> Recipe:
    """The --target preset with every option the user gave applied on top."""
    base = preset(args.target)
    given = {"method": args.method, "percentile": args.percentile, "per_channel": args.per_channel,
             "activation_type": args.act_type, "activation_symmetric": args.act_symmetric,
             "reduce_range": args.reduce_range, "shared_scales": args.shared_scales, "float_head": args.float_head,
             "float_branches": args.float_branches, "float_tails": args.float_tails,
             "float_box_tails": args.float_box_tails,
             "bias_correction": args.bias_correction, "auto_exclude": args.auto_exclude}
    changes = {k: v for k, v in given.items() if v is not None}
    if args.silu_clip is not None:
        changes["silu_clip"] = args.silu_clip if args.silu_clip > 0 else None
    return replace(base, num=args.num, seed=args.seed, exclude=tuple(exclude), **changes)
