"""A job's output folder: result shards written whole or not at all, the job's description, and the list of
skipped inputs.

``DIR/part-00000.jsonl`` (or ``.parquet``), ``part-00001...``: the records, one per image or frame (JSONL: the
CLI's ``--jsonl`` lines; Parquet: :mod:`runtime.batch.rows`' columns). A shard is written to a hidden temporary
file and renamed into place when it is closed, and it only ever holds inputs whose every record is in it, so an
input is *completely written* exactly when its source appears in a shard. A rerun reads the sources of the
shards there (temporaries a crash left behind are removed) and runs only the rest.
``DIR/job.json``: the model's SHA-256, the options and the format; a rerun with other ones is refused, since its
records would not match the ones already written. ``DIR/skipped.jsonl``: one line per skipped input,
``{"source": ..., "reason": ...}`` (a video that broke off midway has its frames written and is listed too).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from runtime.batch.rows import arrow_schema, record_to_row
from runtime.errors import InputError
from runtime.io.files import atomic_write_json, atomic_write_text

FORMATS = ("parquet", "jsonl")
SHARD_PREFIX = "part-"
JOB_FILE = "job.json"
SKIPPED_FILE = "skipped.jsonl"
PARQUET_HINT = 'Parquet output needs pyarrow: pip install pyarrow (or write --format jsonl)'


class ShardWriter:
    """One shard being written: records go to a hidden temporary file beside ``path``, renamed onto ``path``
    by :meth:`close`; :meth:`abort` removes it."""

    def __init__(self, path: Path, fmt: str, row_group: int = 1024) -> None:
        self.path, self.fmt, self.records = path, fmt, 0
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.temp = Path(name)
        self._rows: list[dict] = []
        self._row_group = row_group
        if fmt == "jsonl":
            self._file = open(self.temp, "w", encoding="utf-8")
        else:
            import pyarrow.parquet as pq

            self._file = pq.ParquetWriter(self.temp, arrow_schema())

    def add(self, records: Iterable[dict]) -> None:
        for record in records:
            self.records += 1
            if self.fmt == "jsonl":
                self._file.write(json.dumps(record) + "\n")
            else:
                self._rows.append(record_to_row(record))
                if len(self._rows) >= self._row_group:
                    self._flush_rows()

    def _flush_rows(self) -> None:
        if self._rows:
            import pyarrow as pa

            self._file.write_table(pa.Table.from_pylist(self._rows, schema=arrow_schema()))
            self._rows = []

    def close(self) -> Path:
        """Finish the file, make it durable and rename it into place."""
        if self.fmt == "parquet":
            self._flush_rows()
            self._file.close()
        else:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.temp, 0o666 & ~umask)
        os.replace(self.temp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            self.temp.unlink(missing_ok=True)


def shard_sources(path: Path) -> set[str]:
    """The sources a complete shard holds records of."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return set(pq.read_table(path, columns=["source"]).column("source").to_pylist())
    with open(path, encoding="utf-8") as handle:
        return {json.loads(line)["source"] for line in handle if line.strip()}


class OutputFolder:
    """The output folder of a job in ``fmt``: what is done already, new shards, the skipped list."""

    def __init__(self, folder: Path, fmt: str, job: dict[str, Any]) -> None:
        if fmt not in FORMATS:
            raise InputError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
        if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
            raise InputError(PARQUET_HINT)
        self.folder, self.fmt = Path(folder), fmt
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"{self.folder}: --out must be a folder, and this is a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._check_job(job)
        for stale in self.folder.glob(f".{SHARD_PREFIX}*.tmp"):  # shards a crashed run left unfinished
            stale.unlink(missing_ok=True)
        self.shards = sorted(self.folder.glob(f"{SHARD_PREFIX}*.{fmt}"))
        self.done: set[str] = set()
        for shard in self.shards:
            self.done |= shard_sources(shard)
        self._next = 1 + max((int(p.stem[len(SHARD_PREFIX):]) for p in self.shards), default=-1)

    def _check_job(self, job: dict[str, Any]) -> None:
        path = self.folder / JOB_FILE
        job = {**job, "format": self.fmt}
        if path.exists():
            try:
                before = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot be read ({exc})") from None
            differ = sorted(k for k in set(before) | set(job) if before.get(k) != job.get(k))
            if differ:
                raise InputError(f"{self.folder} holds results of another job ({', '.join(differ)} differ); "
                                 "rerun with the same model and options, or use another --out")
        else:
            atomic_write_json(path, job)

    def new_shard(self) -> ShardWriter:
        path = self.folder / f"{SHARD_PREFIX}{self._next:05d}.{self.fmt}"
        self._next += 1
        return ShardWriter(path, self.fmt)

    def previous_skips(self) -> list[dict]:
        path = self.folder / SKIPPED_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def write_skipped(self, entries: list[dict]) -> Path:
        path = self.folder / SKIPPED_FILE
        atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in entries))
        return path
