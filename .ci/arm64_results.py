"""Dump the Results of a model on a folder of images, or compare two dumps (x86 against aarch64).

``.ci/arm64-check`` runs ``dump`` on the host and in the arm64 chroot with the same ONNX file and images, then
``compare`` on the host. Only the public API is used (``from runtime import Predictor``; a Result's ``xyxy``,
``scores``, ``class_ids``, ``masks``, ``keypoints``), so the check does not depend on the package's internals.

Usage::

    python .ci/arm64_results.py dump MODEL.onnx IMAGE_DIR OUT.npz [--limit N] [--conf 0.25]
    python .ci/arm64_results.py compare REFERENCE.npz CANDIDATE.npz [--label NAME]

Parity criteria (those of the Ultralytics parity tests): a detection matches one of the other dump when the
class is the same, box IoU >= 0.99 and |score difference| <= 0.002; every detection scoring above
conf + 0.002 must match; matched masks reach IoU >= 0.97 and matched keypoints lie within 0.5 px (x and y).
Detections scoring within 0.002 of conf may be missing from the other side (counted as borderline). The
report gives the largest box coordinate difference in pixels and the number of mask pixels that differ.
Exit status of ``compare``: 0 when the criteria hold, 1 when they do not, 2 for unreadable input.
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FIELDS = ("xyxy", "scores", "class_ids", "masks", "keypoints")
BOX_IOU_MIN = 0.99
SCORE_MARGIN = 0.002
MASK_IOU_MIN = 0.97
KEYPOINT_PX_MAX = 0.5


class DumpError(Exception):
    """A dump file or image folder that cannot be used; the message names it and says what is wrong."""


# ------------------------------------------------------------------------------------------------------------ dump
def image_paths(folder: Path, limit: int | None) -> list[Path]:
    """The images of ``folder`` in name order, the first ``limit`` of them when given."""
    if not folder.is_dir():
        raise DumpError(f"{folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DumpError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths[:limit] if limit else paths


def dump(model: Path, folder: Path, out: Path, limit: int | None, conf: float) -> None:
    """Run the Predictor on the images of ``folder`` and save every Result's arrays to ``out`` (.npz)."""
    import runtime
    from runtime import Predictor

    paths = image_paths(folder, limit)
    results = Predictor(model, conf=conf).predict([str(p) for p in paths])
    if len(results) != len(paths):
        raise DumpError(f"{folder}: {len(paths)} images gave {len(results)} Results")
    arrays: dict[str, np.ndarray] = {
        "names": np.array([p.name for p in paths]),
        "conf": np.float64(conf),
        "machine": np.array(platform.machine()),
        "versions": np.array(library_versions()),
    }
    for index, result in enumerate(results):
        for name in FIELDS:
            value = getattr(result, name)
            if value is not None:
                arrays[f"{index}/{name}"] = np.asarray(value)
    np.savez_compressed(out, **arrays)
    detections = sum(len(r.scores) for r in results)
    print(f"{out}: {len(paths)} images, {detections} detections ({platform.machine()}, runtime from "
          f"{Path(runtime.__file__).parent})")


def library_versions() -> str:
    """numpy, onnxruntime and OpenCV versions, for the comparison's header."""
    import cv2
    import onnxruntime

    return f"numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__}"


# --------------------------------------------------------------------------------------------------------- compare
@dataclass
class Detections:
    """One image's Result arrays as read from a dump."""

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    masks: np.ndarray | None
    keypoints: np.ndarray | None


@dataclass
class Tally:
    """Figures over an image set."""

    images: int = 0
    reference: int = 0
    candidate: int = 0
    matched: int = 0
    borderline: int = 0
    max_box_px: float = 0.0
    max_score_diff: float = 0.0
    min_mask_iou: float = 1.0
    mask_pixels: int = 0
    mask_pixels_differing: int = 0
    max_keypoint_px: float = 0.0
    max_keypoint_conf_diff: float = 0.0
    failures: list[str] = field(default_factory=list)


def load_dump(path: Path) -> tuple[dict, list[Detections]]:
    """The header (names, conf, machine, versions) and per-image Detections of a dump."""
    try:
        data = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as error:
        raise DumpError(f"{path}: not a readable .npz dump ({error})") from error
    for key in ("names", "conf", "machine", "versions"):
        if key not in data:
            raise DumpError(f"{path}: key '{key}' missing (not written by arm64_results.py dump)")
    images = []
    for index in range(len(data["names"])):
        for key in ("xyxy", "scores", "class_ids"):
            if f"{index}/{key}" not in data:
                raise DumpError(f"{path}: key '{index}/{key}' missing")
        images.append(Detections(*(data.get(f"{index}/{name}") for name in FIELDS)))
    header = {"names": [str(n) for n in data["names"]], "conf": float(data["conf"]),
              "machine": str(data["machine"]), "versions": str(data["versions"])}
    return header, images


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (n, 4) and (m, 4) xyxy boxes."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(ref: Detections, cand: Detections) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (reference index, candidate index): same class, box IoU >= 0.99 and
    |score difference| <= 0.002, reference detections taken by descending score, best IoU first."""
    if not len(ref.scores) or not len(cand.scores):
        return []
    iou = box_iou(ref.xyxy.astype(np.float64), cand.xyxy.astype(np.float64))
    allowed = ((iou >= BOX_IOU_MIN) & (ref.class_ids[:, None] == cand.class_ids[None, :])
               & (np.abs(ref.scores[:, None].astype(np.float64) - cand.scores[None, :]) <= SCORE_MARGIN))
    used = np.zeros(len(cand.scores), bool)
    pairs = []
    for i in np.argsort(-ref.scores, kind="stable"):
        choices = np.flatnonzero(allowed[i] & ~used)
        if len(choices):
            j = int(choices[np.argmax(iou[i, choices])])
            used[j] = True
            pairs.append((int(i), j))
    return pairs


def compare_image(tally: Tally, name: str, ref: Detections, cand: Detections, conf: float) -> None:
    """Add one image's figures to ``tally`` and its failures to ``tally.failures``."""
    pairs = match(ref, cand)
    tally.images += 1
    tally.reference += len(ref.scores)
    tally.candidate += len(cand.scores)
    tally.matched += len(pairs)
    for side, dets, paired in (("x86", ref, {i for i, _ in pairs}), ("arm64", cand, {j for _, j in pairs})):
        for k in sorted(set(range(len(dets.scores))) - paired):
            if dets.scores[k] > conf + SCORE_MARGIN:
                tally.failures.append(f"{name}: {side} detection {k} (class {int(dets.class_ids[k])}, score "
                                      f"{float(dets.scores[k]):.4f}) has no match")
            else:
                tally.borderline += 1
    if (ref.masks is None) != (cand.masks is None) or (ref.keypoints is None) != (cand.keypoints is None):
        tally.failures.append(f"{name}: one side has masks or keypoints, the other not")
        return
    for i, j in pairs:
        tally.max_box_px = max(tally.max_box_px, float(np.abs(ref.xyxy[i].astype(np.float64) - cand.xyxy[j]).max()))
        tally.max_score_diff = max(tally.max_score_diff, abs(float(ref.scores[i]) - float(cand.scores[j])))
        if ref.masks is not None:
            compare_masks(tally, name, i, ref.masks[i], cand.masks[j])
        if ref.keypoints is not None:
            compare_keypoints(tally, name, i, ref.keypoints[i], cand.keypoints[j])


def compare_masks(tally: Tally, name: str, index: int, ref: np.ndarray, cand: np.ndarray) -> None:
    if ref.shape != cand.shape:
        tally.failures.append(f"{name}: detection {index} mask shapes {ref.shape} and {cand.shape} differ")
        return
    union = int(np.logical_or(ref, cand).sum())
    iou = 1.0 if union == 0 else float(np.logical_and(ref, cand).sum()) / union
    tally.min_mask_iou = min(tally.min_mask_iou, iou)
    tally.mask_pixels += ref.size
    tally.mask_pixels_differing += int(np.logical_xor(ref, cand).sum())
    if iou < MASK_IOU_MIN:
        tally.failures.append(f"{name}: detection {index} mask IoU {iou:.4f} < {MASK_IOU_MIN}")


def compare_keypoints(tally: Tally, name: str, index: int, ref: np.ndarray, cand: np.ndarray) -> None:
    if ref.shape != cand.shape:
        tally.failures.append(f"{name}: detection {index} keypoint shapes {ref.shape} and {cand.shape} differ")
        return
    px = float(np.abs(ref[:, :2].astype(np.float64) - cand[:, :2]).max()) if ref.size else 0.0
    tally.max_keypoint_px = max(tally.max_keypoint_px, px)
    if ref.shape[-1] > 2 and ref.size:
        tally.max_keypoint_conf_diff = max(tally.max_keypoint_conf_diff,
                                           float(np.abs(ref[:, 2].astype(np.float64) - cand[:, 2]).max()))
    if px > KEYPOINT_PX_MAX:
        tally.failures.append(f"{name}: detection {index} keypoints differ by {px:.3f} px > {KEYPOINT_PX_MAX}")


def compare(reference: Path, candidate: Path, label: str) -> bool:
    """Print the figures of ``candidate`` against ``reference``; True when the parity criteria hold."""
    ref_header, ref_images = load_dump(reference)
    cand_header, cand_images = load_dump(candidate)
    if ref_header["names"] != cand_header["names"]:
        raise DumpError(f"{candidate}: its images differ from those of {reference}")
    if ref_header["conf"] != cand_header["conf"]:
        raise DumpError(f"{candidate}: conf {cand_header['conf']} differs from {reference}'s {ref_header['conf']}")
    tally = Tally()
    for name, ref, cand in zip(ref_header["names"], ref_images, cand_images):
        compare_image(tally, name, ref, cand, ref_header["conf"])
    passed = not tally.failures
    print(f"{label}: {ref_header['machine']} ({ref_header['versions']}) vs {cand_header['machine']} "
          f"({cand_header['versions']})")
    line = (f"  {tally.images} images, {tally.reference} vs {tally.candidate} detections, {tally.matched} matched, "
            f"{tally.borderline} borderline; max box diff {tally.max_box_px:.3f} px, max |score diff| "
            f"{tally.max_score_diff:.5f}")
    if tally.mask_pixels:
        line += (f"; min mask IoU {tally.min_mask_iou:.4f}, {tally.mask_pixels_differing:,} of "
                 f"{tally.mask_pixels:,} mask pixels differ")
    if any(c.keypoints is not None for c in ref_images):
        line += (f"; max keypoint diff {tally.max_keypoint_px:.3f} px (visibility "
                 f"{tally.max_keypoint_conf_diff:.5f})")
    print(line)
    for failure in tally.failures[:20]:
        print(f"  FAIL {failure}")
    if len(tally.failures) > 20:
        print(f"  ... and {len(tally.failures) - 20} more")
    print(f"  {label}: {'PASS' if passed else 'FAIL'}")
    return passed


# ------------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dump_parser = commands.add_parser("dump", help="save every Result of a folder of images to an .npz")
    dump_parser.add_argument("model", type=Path)
    dump_parser.add_argument("images", type=Path)
    dump_parser.add_argument("out", type=Path)
    dump_parser.add_argument("--limit", type=int, default=None, help="first N images (name order)")
    dump_parser.add_argument("--conf", type=float, default=0.25)
    compare_parser = commands.add_parser("compare", help="compare two dumps by the parity criteria")
    compare_parser.add_argument("reference", type=Path)
    compare_parser.add_argument("candidate", type=Path)
    compare_parser.add_argument("--label", default="results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "dump":
            dump(args.model, args.images, args.out, args.limit, args.conf)
            return 0
        return 0 if compare(args.reference, args.candidate, args.label) else 1
    except DumpError as error:
        print(f"arm64_results.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
