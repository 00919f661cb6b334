"""Top-1 / top-5 accuracy of classifiers on an image-folder tree (ImageNet-style ``CLASS/IMAGE.jpg``), models side
by side, with Ultralytics' own predict as a reference row; or, with no labels, each model's agreement with a float
model on any image folder.

Usage::

    python tools/eval_classify.py --model cls.onnx [--model cls-w8a8.onnx ...] --images TREE
                                  [--reference-pt cls.pt] [--imgsz N] [--batch N] [--engine E] [--out eval.json]
    python tools/eval_classify.py --fidelity-to cls.onnx --model cls-w8a8.onnx --images FOLDER_OR_TREE

Labels come from the sub-folder names: matched to the model's class names when every folder is one of them,
else by position in the sorted folder list when there are exactly ``nc`` folders (torchvision's ``ImageFolder``
order, which Ultralytics' classify validator uses). Every model reads the same images with the same size; the
reference row runs ``YOLO(pt).predict`` on the same files (with its own PIL-based classify preprocessing).
Fidelity: top-1 agreement (the share of images whose best class is the float model's) and top-5 overlap (the
mean share of the float model's top 5 found in the model's top 5).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

import numpy as np

if __package__ in (None, ""):  # `python tools/eval_classify.py` puts tools/ first on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class EvalError(Exception):
    """A bad argument or input (main() prints it as one line and returns 2)."""


@dataclass
class Labelled:
    """The images of a tree and the model class id of each (``folder_names``: the tree's classes, sorted)."""

    paths: list[Path]
    labels: np.ndarray
    folder_names: list[str]
    matched_by: str


@dataclass
class Row:
    """One model's figures."""

    model: str
    images: int
    top1: float | None = None
    top5: float | None = None
    top1_agreement: float | None = None
    top5_overlap: float | None = None
    extra: dict = field(default_factory=dict)


def image_files(folder: Path) -> list[Path]:
    """The images of ``folder`` and its sub-folders, sorted by path."""
    from runtime.io.sources import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise EvalError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EvalError(f"{folder}: holds no images")
    return files


def read_tree(root: Path, names: Sequence[str]) -> Labelled:
    """The labelled images of an ImageNet-style tree, labels as ``names``' ids (see the module docstring)."""
    from runtime.io.sources import IMAGE_SUFFIXES

    if not root.is_dir():
        raise EvalError(f"{root}: image folder not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not folders:
        raise EvalError(f"{root}: no class sub-folders (expected CLASS/IMAGE.jpg)")
    if loose:
        raise EvalError(f"{root}: images outside any class folder ({loose[0]}, ...); expected CLASS/IMAGE.jpg")
    folder_names = [f.name for f in folders]
    index = {n: k for k, n in enumerate(names)}
    if all(n in index for n in folder_names):
        ids, matched_by = [index[n] for n in folder_names], "name"
    elif len(folders) == len(names):
        ids, matched_by = list(range(len(names))), "sorted folder order"
    else:
        unknown = [n for n in folder_names if n not in index]
        raise EvalError(f"{root}: class folders {unknown[:3]} are not classes of the model, and the {len(folders)} "
                        f"folders cannot be matched by order to its {len(names)} classes")
    paths, labels = [], []
    for folder, class_id in zip(folders, ids):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [class_id] * len(files)
    if not paths:
        raise EvalError(f"{root}: the class folders hold no images")
    return Labelled(paths, np.asarray(labels), folder_names, matched_by)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(top-1, top-5) accuracy of (n, nc) probabilities against (n,) labels; ties go to the lower class id."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    return float(np.mean(order[:, 0] == labels)), float(np.mean((order == labels[:, None]).any(axis=1)))


def agreement(probs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean top-5 overlap) of (n, nc) probabilities with a reference model's."""
    ours = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    theirs = np.argsort(-reference, axis=1, kind="stable")[:, :5]
    overlap = [len(set(a) & set(b)) / len(b) for a, b in zip(ours.tolist(), theirs.tolist())]
    return float(np.mean(ours[:, 0] == theirs[:, 0])), float(np.mean(overlap))


def classify_fidelity(reference, candidate, paths: Sequence[Path]) -> dict:
    """Top-1 agreement and top-5 overlap of the Predictor ``candidate`` with the Predictor ``reference`` on
    ``paths`` (for the quantization report)."""
    want = np.stack([r.probs for r in reference.predict([str(p) for p in paths])])
    got = np.stack([r.probs for r in candidate.predict([str(p) for p in paths])])
    a1, a5 = agreement(got, want)
    return {"top1_agreement": a1, "top5_overlap": a5, "images": len(paths)}


def our_probs(model: Path, paths: Sequence[Path], imgsz, batch: int, engine: str, precision: str | None) -> np.ndarray:
    """(n, nc) probabilities of our Predictor on ``paths``, in order."""
    from runtime import Predictor

    predictor = Predictor(model, imgsz=imgsz, batch=batch, engine=engine, precision=precision)
    if predictor.model.spec.task != "classify":
        raise EvalError(f"{model}: a {predictor.model.spec.task} model, not a classifier")
    results = predictor.predict([str(p) for p in paths])
    if predictor.skipped:
        raise EvalError(f"{predictor.skipped[0].message}")
    return np.stack([r.probs for r in results])


def ultralytics_probs(pt: Path, paths: Sequence[Path], imgsz) -> tuple[np.ndarray, tuple[str, ...]]:
    """(n, nc) probabilities of ``YOLO(pt).predict`` on ``paths`` and the checkpoint's class names."""
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise EvalError(f"--reference-pt needs ultralytics and torch ({exc})") from exc
    yolo = YOLO(str(pt))
    if yolo.task != "classify":
        raise EvalError(f"{pt}: a {yolo.task} checkpoint, not a classifier")
    probs = [yolo.predict(str(p), imgsz=imgsz, device="cpu", verbose=False)[0].probs.data.numpy() for p in paths]
    names = yolo.names
    return np.stack(probs), tuple(names[k] for k in range(len(names)))


def run(args: argparse.Namespace, out: TextIO) -> dict:
    from runtime import Model

    models = [Path(m) for m in args.model]
    for m in models + ([Path(args.fidelity_to)] if args.fidelity_to else []):
        if not m.is_file():
            raise EvalError(f"{m}: model file not found")
    imgsz = args.imgsz if args.imgsz is None or len(args.imgsz) == 2 else args.imgsz[0]
    first = Model(args.fidelity_to or models[0], imgsz=imgsz)
    if first.spec.task != "classify":
        raise EvalError(f"{first.spec.path}: a {first.spec.task} model, not a classifier")
    imgsz = first.imgsz
    probs_of: Callable[[Path, Sequence[Path]], np.ndarray] = lambda m, paths: our_probs(
        m, paths, imgsz, args.batch, args.engine, args.precision)
    rows: list[Row] = []
    report: dict = {"images": str(args.images), "imgsz": list(imgsz), "engine": args.engine}
    if args.fidelity_to:
        paths = image_files(Path(args.images))
        reference = probs_of(Path(args.fidelity_to), paths)
        for m in [Path(args.fidelity_to)] + models:
            a1, a5 = agreement(probs_of(m, paths) if m != Path(args.fidelity_to) else reference, reference)
            rows.append(Row(str(m), len(paths), top1_agreement=a1, top5_overlap=a5))
        report["fidelity_to"] = str(args.fidelity_to)
    else:
        tree = read_tree(Path(args.images), first.spec.names)
        report.update(classes=len(tree.folder_names), matched_by=tree.matched_by)
        reference = None
        for m in models:
            probs = probs_of(m, tree.paths)
            reference = probs if reference is None else reference
            top1, top5 = accuracy(probs, tree.labels)
            a1, a5 = agreement(probs, reference)
            rows.append(Row(str(m), len(tree.paths), top1, top5, a1, a5))
        if args.reference_pt:
            theirs, names = ultralytics_probs(Path(args.reference_pt), tree.paths, imgsz)
            if names != first.spec.names:
                raise EvalError(f"{args.reference_pt}: class names differ from {first.spec.path}'s")
            top1, top5 = accuracy(theirs, tree.labels)
            a1, a5 = agreement(theirs, reference)
            rows.append(Row(f"ultralytics {Path(args.reference_pt).name}", len(tree.paths), top1, top5, a1, a5))
    report["rows"] = [asdict(r) for r in rows]
    print_rows(rows, out, labelled=not args.fidelity_to)
    if args.out:
        from runtime.io.files import atomic_write_json

        atomic_write_json(Path(args.out), report)
        print(f"wrote {args.out}", file=out)
    return report


def print_rows(rows: Sequence[Row], out: TextIO, labelled: bool) -> None:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    header = ["model", "images"] + (["top1 %", "top5 %"] if labelled else []) + ["top1 agree %", "top5 overlap %"]
    lines = [[r.model, str(r.images)] + ([pct(r.top1), pct(r.top5)] if labelled else [])
             + [pct(r.top1_agreement), pct(r.top5_overlap)] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    for line in [header] + lines:
        print("  ".join(x.ljust(w) if k == 0 else x.rjust(w) for k, (x, w) in enumerate(zip(line, widths))), file=out)
    if labelled:
        print("agreement columns: against the first --model", file=out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/eval_classify.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], required=True, help="classifier ONNX (repeatable)")
    p.add_argument("--images", required=True, help="CLASS/IMAGE tree (or, with --fidelity-to, any image folder)")
    p.add_argument("--reference-pt", default=None, help="also score YOLO(pt).predict on the same images")
    p.add_argument("--fidelity-to", default=None, metavar="FLOAT.onnx",
                   help="no labels: score each --model's agreement with this model's own classes")
    p.add_argument("--imgsz", type=int, nargs="+", default=None, help="input size N or H W (default: the model's)")
    p.add_argument("--batch", type=int, default=1, help="images per engine run (default 1)")
    p.add_argument("--engine", default="onnxruntime", help="onnxruntime (default) or openvino")
    p.add_argument("--precision", default=None, help="engine precision (e.g. f32 for OpenVINO)")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    return p


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """CLI entry point; returns 0, or 2 after one line on stderr for a usage or input error."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    if args.imgsz is not None and len(args.imgsz) > 2:
        print(f"error: --imgsz takes N or H W, got {args.imgsz}", file=err)
        return 2
    from runtime.errors import YoloRuntimeError

    try:
        run(args, out)
    except (EvalError, YoloRuntimeError, OSError) as exc:
        print(f"error: {(str(exc).strip() or type(exc).__name__).splitlines()[0]}", file=err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
