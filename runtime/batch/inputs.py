"""What a batch job runs over: SOURCE (a folder, a glob, a list file, one file, or an fsspec URL of any of
these) turned into a list of inputs, each an image or a video file, named by the string its records carry.

Local paths are resolved as ``python -m runtime.infer`` resolves them (so the records' ``source`` are the
same strings); URLs (``s3://``, ``gs://``, ``memory://``, ... anything fsspec opens) are listed through
fsspec and fetched to a temporary file when run (:func:`local_copy`). Live streams have no end, so a batch
job refuses them.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from runtime.errors import InputError
from runtime.io.sources import (IMAGE_SUFFIXES, LIST_SUFFIXES, VIDEO_SUFFIXES, ImageInput, StreamInput, VideoInput,
                                resolve_inputs)

_LIVE_SCHEMES = ("rtsp://", "rtmp://", "tcp://", "udp://")
FSSPEC_HINT = 'reading URLs needs fsspec (and its filesystem, e.g. s3fs, gcsfs): pip install fsspec'


@dataclass(frozen=True)
class BatchInput:
    """One input of a job: ``source`` (a local path or a URL, the ``source`` of its records) and ``kind``,
    "image" or "video" (from the file suffix)."""

    source: str
    kind: str

    @property
    def is_url(self) -> bool:
        return is_url(self.source)


def is_url(text: str) -> bool:
    """True when ``text`` names a file through fsspec (``scheme://...``) rather than a local path."""
    return "://" in text and not text.startswith("file://")


def kind_of(name: str) -> str:
    return "video" if PurePosixPath(name).suffix.lower() in VIDEO_SUFFIXES else "image"


def resolve_batch_inputs(source: str | Path) -> list[BatchInput]:
    """The inputs SOURCE names, in order, each once; InputError naming SOURCE when it names none or names
    a live stream."""
    text = str(source)
    if text.lower().startswith(_LIVE_SCHEMES):
        raise InputError(f"{text}: a live stream has no end; a batch job runs over files (use python -m runtime.infer)")
    if text.startswith("file://"):
        text = text[len("file://"):]
    found = _url_inputs(text) if is_url(text) else _local_inputs(text)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise InputError(f"{text}: names no images or videos")
    return unique


def _local_inputs(text: str) -> list[BatchInput]:
    out = []
    for item in resolve_inputs(text):
        if isinstance(item, StreamInput):
            raise InputError(f"{text}: names a live stream ({item.name}); a batch job runs over files")
        if isinstance(item, VideoInput):
            out.append(BatchInput(item.path, "video"))
        elif isinstance(item, ImageInput):
            out.append(BatchInput(str(item.item), "image"))
    return out


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:
        raise InputError(f"{url}: {FSSPEC_HINT}") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{url}: cannot open this URL's filesystem ({exc}); {FSSPEC_HINT}") from None


def _url_inputs(url: str) -> list[BatchInput]:
    fs, path = _filesystem(url)
    media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    if any(c in path for c in "*?["):
        names = sorted(fs.glob(path))
    elif fs.isdir(path):
        names = sorted(fs.ls(path, detail=False))
    elif fs.isfile(path):
        if PurePosixPath(path).suffix.lower() in LIST_SUFFIXES:
            return _url_list(fs, path, url)
        names = [path]
    else:
        raise InputError(f"{url}: no such file or folder")
    names = [n for n in names if PurePosixPath(n).suffix.lower() in media and fs.isfile(n)]
    return [BatchInput(fs.unstrip_protocol(n), kind_of(n)) for n in names]


def _url_list(fs, path: str, url: str) -> list[BatchInput]:
    """The files a list file at a URL names, one per line (relative names are relative to the list)."""
    try:
        lines = fs.cat_file(path).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{url}: cannot read the list of sources ({exc})") from None
    base = PurePosixPath(path).parent
    out = []
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        name = line if is_url(line) else fs.unstrip_protocol(str(base / line) if not line.startswith("/") else line)
        out.append(BatchInput(name, kind_of(name)))
    return out


def fetch(inp: BatchInput, folder: str | Path, name: str = "input") -> str:
    """Copy a URL's file into ``folder`` as ``name`` + its suffix; the local path. InputError naming the URL when
    it cannot be read."""
    fs, path = _filesystem(inp.source)
    target = str(Path(folder) / (name + PurePosixPath(path).suffix))
    try:
        fs.get_file(path, target)
    except (OSError, ValueError) as exc:
        raise InputError(f"{inp.source}: cannot be fetched ({exc})") from None
    return target


@contextmanager
def local_copy(inp: BatchInput) -> Iterator[str]:
    """A local path holding ``inp``'s bytes: its own path, or a temporary copy of a URL's file (removed after)."""
    if not inp.is_url:
        yield inp.source
        return
    folder = tempfile.mkdtemp(prefix="yolo-batch-")
    try:
        yield fetch(inp, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
