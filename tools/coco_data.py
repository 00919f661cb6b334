"""COCO annotation files for evaluation: loading with clear errors, image selection, category mapping.

Everything here is plain Python + numpy (no model, no pycocotools import at module load), so the
quantization tool and the tests can use it without running a network.

* :func:`load_annotations` reads and checks an ``instances_*.json`` or ``person_keypoints_*.json`` file
  -> :class:`CocoAnnotations`.
* :func:`select_images` decides which annotated images are evaluated (present on disk, ``limit``).
* :func:`category_map` maps a model's class names to the file's category ids BY NAME.
* :func:`keypoint_count` checks a ``person_keypoints_*.json`` file's keypoints for pose scoring.
* :func:`single_instance_category` tells whether every evaluated image holds exactly one object.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from runtime.errors import InputError
from runtime.io.files import file_sha256  # re-exported for the evaluation tool
from runtime.io.sources import list_images

MAX_LISTED = 10  # names listed in one error message before "... and N more"

__all__ = [
    "AnnotationError",
    "CategoryMismatchError",
    "CocoAnnotations",
    "EvalError",
    "ImageRecord",
    "ImageSelection",
    "ImagesError",
    "category_map",
    "file_sha256",
    "keypoint_count",
    "list_preview",
    "load_annotations",
    "select_images",
    "single_instance_category",
]


class EvalError(Exception):
    """A user-facing problem with the evaluation inputs; the CLI prints it on one line and exits 2."""


class AnnotationError(EvalError):
    """The annotation file is missing, unreadable, not JSON, or not a COCO instances file."""


class ImagesError(EvalError):
    """The image folder is missing or empty, or annotated images are missing from it."""


class CategoryMismatchError(EvalError):
    """A model's class names do not match the annotation file's category names."""


def list_preview(items: Sequence[Any], limit: int = MAX_LISTED) -> str:
    """``a, b, c`` or ``a, b, ... and 7 more`` for one-line messages."""
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------------------------------- annotations
@dataclass(frozen=True)
class CocoAnnotations:
    """A checked COCO instances file.

    ``dataset`` is the parsed JSON (handed to pycocotools unchanged); ``images`` are its image
    entries sorted by id; ``categories`` its category entries sorted by id.
    """

    path: Path
    sha256: str
    dataset: dict
    images: tuple[dict, ...]
    categories: tuple[dict, ...]
    num_annotations: int
    has_segmentation: bool  # every non-empty annotation carries a 'segmentation'

    @property
    def category_names(self) -> list[str]:
        return [c["name"] for c in self.categories]


_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")


def _entry_error(path: Path, kind: str, index: int, entry: Any, problem: str) -> AnnotationError:
    ident = f" (id {entry['id']})" if isinstance(entry, Mapping) and "id" in entry else ""
    return AnnotationError(f"{path}: {kind} #{index}{ident} {problem}")


def load_annotations(path: str | Path) -> CocoAnnotations:
    """Read and check a COCO instances (or person_keypoints) JSON file.

    Raises AnnotationError (one line, naming the file) when the file is missing, unreadable, not
    valid JSON, or lacks what COCOeval needs: ``images`` with id/file_name/height/width,
    ``annotations`` with id/image_id/category_id/bbox/area/iscrowd, ``categories`` with
    unique ids and names; ``keypoints``, where present, must be a flat list of [x, y, v] numbers.
    """
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file not found")
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation path is not a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{path}: annotation file cannot be read ({exc.strerror or exc})") from exc
    try:
        dataset = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: annotation file is not UTF-8 JSON ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: annotation file is not valid JSON ({exc.msg} at line {exc.lineno} "
                              f"column {exc.colno})") from exc
    if not isinstance(dataset, dict):
        raise AnnotationError(f"{path}: not a COCO instances file (top level is a {type(dataset).__name__}, "
                              "expected an object with images, annotations, categories)")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(dataset.get(k), list)]
    if missing:
        raise AnnotationError(f"{path}: not a COCO instances file (no list {', '.join(repr(k) for k in missing)})")

    for kind, entries, keys in (("image", dataset["images"], _IMAGE_KEYS),
                                ("annotation", dataset["annotations"], _ANN_KEYS),
                                ("category", dataset["categories"], ("id", "name"))):
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise _entry_error(path, kind, index, entry, f"is a {type(entry).__name__}, expected an object")
            lacking = [k for k in keys if k not in entry]
            if lacking:
                raise _entry_error(path, kind, index, entry, f"lacks {', '.join(repr(k) for k in lacking)}")
    if not dataset["images"]:
        raise AnnotationError(f"{path}: annotation file lists no images")
    if not dataset["categories"]:
        raise AnnotationError(f"{path}: annotation file lists no categories")

    image_ids = [img["id"] for img in dataset["images"]]
    if len(set(image_ids)) != len(image_ids):
        raise AnnotationError(f"{path}: duplicate image ids")
    cat_ids = [c["id"] for c in dataset["categories"]]
    if len(set(cat_ids)) != len(cat_ids):
        raise AnnotationError(f"{path}: duplicate category ids")
    names = [str(c["name"]) for c in dataset["categories"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AnnotationError(f"{path}: duplicate category names {list_preview(dupes)}")
    known_images, known_cats = set(image_ids), set(cat_ids)
    for index, ann in enumerate(dataset["annotations"]):
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise _entry_error(path, "annotation", index, ann, f"has bbox {bbox!r}, expected [x, y, w, h]")
        if ann["image_id"] not in known_images:
            raise _entry_error(path, "annotation", index, ann, f"refers to unknown image id {ann['image_id']!r}")
        if ann["category_id"] not in known_cats:
            raise _entry_error(path, "annotation", index, ann, f"refers to unknown category id {ann['category_id']!r}")
        if "keypoints" in ann:
            kpts = ann["keypoints"]
            if not (isinstance(kpts, list) and len(kpts) % 3 == 0
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in kpts)):
                raise _entry_error(path, "annotation", index, ann, "has keypoints that are not a flat list of "
                                   "[x, y, v] numbers")
    # pycocotools keeps an optional top-level 'info' / 'licenses'; loadRes copies 'images' only.
    return CocoAnnotations(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        dataset=dataset,
        images=tuple(sorted(dataset["images"], key=lambda img: _sort_key(img["id"]))),
        categories=tuple(sorted(dataset["categories"], key=lambda c: _sort_key(c["id"]))),
        num_annotations=len(dataset["annotations"]),
        has_segmentation=all("segmentation" in a for a in dataset["annotations"]),
    )


def _sort_key(value: Any) -> tuple:
    """Sort ints numerically and anything else as text, ints first (COCO ids are ints, but be robust)."""
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))


# -------------------------------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageRecord:
    """One annotated image to evaluate: its COCO id and its file on disk."""

    image_id: Any
    file_name: str
    path: Path


@dataclass(frozen=True)
class ImageSelection:
    """Which annotated images are evaluated, and why the others are not."""

    images: tuple[ImageRecord, ...]
    annotated: int  # images listed in the annotation file
    missing: tuple[str, ...] = ()  # file names of the annotated images not on disk (all of them, sorted by id)
    skipped_missing: bool = False
    limit: int | None = None
    unannotated_on_disk: int = 0  # image files in the folder the annotation file does not list

    @property
    def image_ids(self) -> list[Any]:
        return [rec.image_id for rec in self.images]

    def statement(self) -> str:
        """A one-line account for the printed output and the report."""
        text = f"evaluated {len(self.images)} of {self.annotated} annotated images"
        reasons = []
        if self.skipped_missing and self.missing:
            reasons.append(f"{len(self.missing)} missing on disk skipped")
        if self.limit is not None and self.limit < self.annotated:
            reasons.append(f"--limit {self.limit}: first image ids in sorted order")
        return text + (f" ({'; '.join(reasons)})" if reasons else "")


def _resolve(images_dir: Path, file_name: str) -> Path | None:
    candidate = images_dir / file_name
    if candidate.is_file():
        return candidate
    base = images_dir / Path(file_name).name  # file_name with a leading sub-folder such as "val2017/"
    return base if base.is_file() else None


def select_images(annotations: CocoAnnotations, images_dir: str | Path, *, limit: int | None = None,
                  skip_missing: bool = False) -> ImageSelection:
    """The annotated images to evaluate, in ascending image-id order.

    Without ``skip_missing`` every selected image (the first ``limit`` ids, or all) must be on disk,
    otherwise ImagesError lists up to 10 missing names and their count. With ``skip_missing`` the
    images present are kept and ``limit`` applies to them. ImagesError also for a missing or empty
    folder and when nothing is left to evaluate.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ImagesError(f"{images_dir}: image folder not found")
    try:
        on_disk = {p.name for p in list_images(images_dir)}  # the Predictor's own notion of an image file
    except InputError as exc:
        raise ImagesError(str(exc)) from None
    if limit is not None and limit < 1:
        raise ImagesError(f"--limit must be >= 1, got {limit}")

    entries = list(annotations.images)
    resolved = [(img, _resolve(images_dir, str(img["file_name"]))) for img in entries]
    missing_all = tuple(str(img["file_name"]) for img, p in resolved if p is None)
    if skip_missing:
        chosen = [(img, p) for img, p in resolved if p is not None]
        if limit is not None:
            chosen = chosen[:limit]
    else:
        chosen = resolved[:limit] if limit is not None else resolved
        missing_chosen = [str(img["file_name"]) for img, p in chosen if p is None]
        if missing_chosen:
            scope = "" if limit is None else f" (of the first {len(chosen)} by id)"
            raise ImagesError(
                f"{len(missing_chosen)} of {len(chosen)} annotated images{scope} are missing from {images_dir}: "
                f"{list_preview(missing_chosen)} (pass --skip-missing to evaluate the {len(entries) - len(missing_all)} "
                "present)")
    if not chosen:
        raise ImagesError(f"{images_dir}: none of the {len(entries)} images named in {annotations.path.name} is there")
    annotated_names = {Path(str(img["file_name"])).name for img in entries}
    return ImageSelection(
        images=tuple(ImageRecord(img["id"], str(img["file_name"]), p) for img, p in chosen),
        annotated=len(entries),
        missing=missing_all,
        skipped_missing=skip_missing,
        limit=limit,
        unannotated_on_disk=len(on_disk - annotated_names),
    )


# ---------------------------------------------------------------------------------------------------- categories
def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def category_map(model_names: Sequence[str] | Mapping[int, str], categories: Sequence[Mapping[str, Any]],
                 model_label: str = "model") -> list[int]:
    """COCO category id of each model class, matched BY NAME (case and repeated spaces ignored).

    ``model_names`` is the model's class names in class-index order (or an {index: name} dict);
    ``categories`` the annotation file's category entries (``id``, ``name``). The model may know a
    subset of the categories, in any order. Returns ``ids`` with ``ids[class_index] = category_id``.

    Raises CategoryMismatchError when some model class has no category of that name (listing
    them), or when no class matches at all (naming ``model_label`` and a few of each list).
    """
    if isinstance(model_names, Mapping):
        keys = sorted(int(k) for k in model_names)
        if keys != list(range(len(keys))):
            raise CategoryMismatchError(f"{model_label}: class indices {keys[:5]}... are not 0..{len(keys) - 1}")
        model_names = [model_names[k] for k in keys]
    names = [str(n) for n in model_names]
    if not names:
        raise CategoryMismatchError(f"{model_label}: model has no class names")
    by_name: dict[str, int] = {}
    for cat in categories:
        key = _norm(cat["name"])
        if key in by_name:
            raise CategoryMismatchError(f"annotation categories name '{cat['name']}' twice")
        by_name[key] = int(cat["id"])
    ids = [by_name.get(_norm(n)) for n in names]
    unmatched = [n for n, i in zip(names, ids) if i is None]
    if len(unmatched) == len(names):
        cat_names = [str(c["name"]) for c in categories]
        raise CategoryMismatchError(
            f"{model_label}: none of the model's {len(names)} class names matches the {len(cat_names)} annotation "
            f"categories (model: {list_preview(names, 5)}; annotations: {list_preview(cat_names, 5)})")
    if unmatched:
        raise CategoryMismatchError(
            f"{model_label}: {len(unmatched)} of {len(names)} class names are not annotation categories: "
            f"{list_preview(unmatched)}")
    repeated = sorted({n for n, i in zip(names, ids) if ids.count(i) > 1})
    if repeated:
        raise CategoryMismatchError(f"{model_label}: several classes map to the same category: {list_preview(repeated)}")
    return [int(i) for i in ids]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------- keypoints
def keypoint_count(annotations: CocoAnnotations, category_ids: Sequence[int], model_label: str = "model") -> int:
    """K, the keypoints per annotation of ``category_ids``, checked for OKS scoring (COCO person_keypoints form).

    Every annotation of those categories must carry ``keypoints`` (3K numbers, the same K for all)
    and ``num_keypoints``. Raises AnnotationError naming the file and ``model_label`` otherwise.
    """
    wanted = {int(c) for c in category_ids}
    anns = [a for a in annotations.dataset["annotations"] if a["category_id"] in wanted]
    lacking = [a for a in anns if "keypoints" not in a or "num_keypoints" not in a]
    if not anns or lacking:
        what = "no annotations of its categories" if not anns else (
            f"{len(lacking)} of {len(anns)} annotations of its categories lack 'keypoints' or 'num_keypoints' "
            f"(e.g. id {lacking[0]['id']})")
        raise AnnotationError(f"{annotations.path}: not a COCO keypoints file for {model_label}: {what}; "
                              "pass a person_keypoints_*.json annotation file")
    counts = sorted({len(a["keypoints"]) // 3 for a in anns})
    if len(counts) > 1:
        raise AnnotationError(f"{annotations.path}: annotations hold different keypoint counts {counts}")
    return counts[0]


def single_instance_category(annotations: CocoAnnotations, image_ids: Sequence[Any] | None = None) -> str | None:
    """The category name when each of ``image_ids`` (default: all) holds exactly one non-crowd annotation,
    all of that one category (e.g. "person" for a single-person keypoint set); None otherwise.

    Such sets score higher than full COCO val: there is no crowd to confuse the model.
    """
    ids = [img["id"] for img in annotations.images] if image_ids is None else list(image_ids)
    if not ids:
        return None
    per_image: dict[Any, list[int]] = {i: [] for i in ids}
    for ann in annotations.dataset["annotations"]:
        if not ann.get("iscrowd") and ann["image_id"] in per_image:
            per_image[ann["image_id"]].append(ann["category_id"])
    cats = {tuple(c) for c in per_image.values()}
    if len(cats) != 1 or len(next(iter(cats))) != 1:
        return None
    cat_id = next(iter(cats))[0]
    return next(str(c["name"]) for c in annotations.categories if c["id"] == cat_id)
