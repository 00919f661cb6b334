"""An ONNX file's ``metadata_props``, read without the ``onnx`` package and without parsing the graph.

Picking the engine for a file (and OpenVINO, when its reader dropped them) needs only the metadata; importing
``onnx`` and parsing a whole model for it would add most of a second to every start. The file is a protobuf
``ModelProto``: its top-level fields are walked by their wire types, the graph skipped by its length, and each
``metadata_props`` entry (field 14, a ``StringStringEntryProto``: key = 1, value = 2) read.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Iterator

_METADATA_PROPS = 14
_KEY, _VALUE = 1, 2

__all__ = ["read_onnx_metadata"]


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file ``path`` as {key: value}; {} when the file is empty or not a
    well-formed protobuf (the engine that opens it reports what is wrong)."""
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            metadata: dict[str, str] = {}
            for field, span in _fields(buf, 0, len(buf)):
                if field == _METADATA_PROPS and span is not None:
                    entry = {f: buf[s[0]:s[1]].decode("utf-8") for f, s in _fields(buf, *span) if s is not None}
                    metadata[entry.get(_KEY, "")] = entry.get(_VALUE, "")
            return metadata
    except (OSError, ValueError, IndexError, UnicodeDecodeError):  # mmap of an empty file raises ValueError
        return {}


def _varint(buf: mmap.mmap, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, tuple[int, int] | None]]:
    """(field number, (start, end) of a length-delimited value, or None for the other wire types) in order."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        span = None
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            span = (pos, pos + length)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire} is not used by ONNX")
        if pos > end:
            raise ValueError("field runs past its message")
        yield field, span
