"""Per-layer sensitivity of a W8A8 YOLOv8 model: which Conv+SiLU groups gain most from staying float.

For each group (a Conv node with the Sigmoid and Mul of its SiLU) a W8A8 model is built with that group alone kept
float, from the SAME calibration statistics (no recalibration, so the models differ only in that group), and
its outputs are compared with the float model's: consistency = mean over outputs and images of ||q - f|| / ||f||.
gain = consistency(all int8) - consistency(group float); the top-K are the candidates for ``--auto-exclude K``.

Usage::

    python tools/sensitivity.py FLOAT.onnx --calib DIR [--num N] [--seed S] [--images K] [--top 10] [--json OUT]
                                [recipe options of tools/quantize.py: --target, ...]

``python tools/quantize.py ... --sensitivity`` runs the same analysis (and ``--auto-exclude K`` acts on it).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from tools.quant_model import ModelInfo, conv_groups  # noqa: E402
from tools.quant_report import load_inputs, output_consistency, run_outputs  # noqa: E402
from tools.recipe import (Calibrated, Recipe, add_recipe_arguments, calibrate_model, excluded_nodes,  # noqa: E402
                          recipe_from_args)

__all__ = ["Group", "SensitivityResult", "run_sensitivity", "main"]


@dataclass
class Group:
    name: str
    nodes: list[str]
    consistency: float = float("nan")
    gain: float = float("nan")
    outputs: dict[str, float] = field(default_factory=dict)


@dataclass
class SensitivityResult:
    baseline: float
    baseline_outputs: dict[str, float]
    groups: list[Group]  # sorted by gain, largest first
    images: int
    seconds: float
    baseline_model: Path | None = None

    def top_groups(self, k: int) -> list[Group]:
        return self.groups[:k]

    def format_table(self, k: int = 10) -> str:
        lines = [f"sensitivity: baseline consistency {self.baseline:.5f} (mean ||q-f||/||f|| over outputs, "
                 f"{self.images} held-back images); {len(self.groups)} groups in {self.seconds:.0f}s",
                 f"{'rank':>4}  {'gain':>9}  {'consistency':>11}  group"]
        for i, g in enumerate(self.groups[:k], 1):
            lines.append(f"{i:>4}  {g.gain:>9.5f}  {g.consistency:>11.5f}  {g.name} ({len(g.nodes)} nodes)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": round(self.baseline, 6), "baseline_outputs": {k: round(v, 6) for k, v in self.baseline_outputs.items()},
                "images": self.images, "seconds": round(self.seconds, 1),
                "groups": [{"name": g.name, "nodes": g.nodes, "consistency": round(g.consistency, 6),
                            "gain": round(g.gain, 6), "outputs": {k: round(v, 6) for k, v in g.outputs.items()}}
                           for g in self.groups]}


def run_sensitivity(calibrated: Calibrated, recipe: Recipe, info: ModelInfo, images: Sequence[Path], workdir: Path,
                    threads: int | None = None, groups: Sequence[str] | None = None,
                    log=print) -> SensitivityResult:
    """Measure every Conv+SiLU group of the calibrated model (or only ``groups``) with its statistics."""
    pre_path = calibrated.model_path

    t0 = time.perf_counter()
    workdir = Path(workdir)
    inputs = load_inputs(images, info.input_hw, info.input_dtype, info.preprocess)
    float_outputs = run_outputs(info.path, inputs, info.input_name, threads)
    base_path = calibrated.build(recipe, workdir / "sens-baseline.onnx")
    base = output_consistency(info.path, base_path, inputs, info.input_name, threads, float_outputs)
    all_groups = conv_groups(pre_path)
    names = list(groups) if groups else list(all_groups)
    out: list[Group] = []
    tmp = workdir / "sens-group.onnx"
    already = set(excluded_nodes(pre_path, recipe))
    for i, name in enumerate(names, 1):
        nodes = [n for n in all_groups[name] if n not in already]
        if not nodes:
            continue
        calibrated.build(replace(recipe, exclude=tuple(recipe.exclude) + tuple(nodes)), tmp)
        cons = output_consistency(info.path, tmp, inputs, info.input_name, threads, float_outputs)
        g = Group(name, list(all_groups[name]), cons["mean"], base["mean"] - cons["mean"],
                  {k: v for k, v in cons.items() if k != "mean"})
        out.append(g)
        if log and (i % 10 == 0 or i == len(names)):
            log(f"sensitivity: {i}/{len(names)} groups ({time.perf_counter() - t0:.0f}s)")
    tmp.unlink(missing_ok=True)
    out.sort(key=lambda g: -g.gain)
    return SensitivityResult(base["mean"], {k: v for k, v in base.items() if k != "mean"}, out, len(inputs),
                             time.perf_counter() - t0, base_path)


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    import argparse

    from tools.calibration import select_images
    from tools.quant_model import QuantizeError, inspect_float_model

    parser = argparse.ArgumentParser(prog="sensitivity.py", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="float truncated-head ONNX written by tools/export.py")
    parser.add_argument("--calib", required=True, help="folder of calibration images")
    add_recipe_arguments(parser)
    parser.add_argument("--sensitivity-images", type=int, default=6, help="held-back images to measure on")
    parser.add_argument("--top", type=int, default=10, help="groups to print")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    parser.add_argument("--cache-dir", help="keep / reuse calibration statistics here")
    parser.add_argument("--json", help="write the full result as JSON here")
    args = parser.parse_args(argv)
    try:
        recipe = recipe_from_args(args, args.exclude)
        recipe.validate()
        info = inspect_float_model(args.model)
        chosen, held = select_images(args.calib, recipe.num, recipe.seed)
        with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
            ws = Path(tmp)
            calibrated = calibrate_model(info, chosen, recipe, ws, args.cache_dir)
            res = run_sensitivity(calibrated, recipe, info, (held or chosen)[:max(1, args.sensitivity_images)], ws,
                                  threads=args.threads)
    except QuantizeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(res.format_table(args.top))
    if args.json:
        from runtime.io.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(res.to_dict(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
