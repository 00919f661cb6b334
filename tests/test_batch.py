"""python -m runtime.batch on this machine: the records are the CLI's --jsonl records, shards hold whole inputs,
a stopped job resumes without losing or repeating an input, bad inputs are listed, usage errors exit 2.
Torch-free (tiny models, generated pictures and videos)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from batch_media import CLIP_FRAMES, IMAGES, shard_records, skipped_sources, write_media
from runtime.batch.cli import main
from runtime.batch.job import BatchJob
from runtime.batch.local import run_local
from runtime.cli.infer import main as infer_main

needs_pyarrow = pytest.mark.skipif(__import__("importlib").util.find_spec("pyarrow") is None,
                                   reason="needs pyarrow (Parquet shards), not installed")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return write_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def cli_records(media, tiny_onnx, tmp_path_factory):
    """Factory: the sorted --jsonl lines of python -m runtime.infer over ``media`` with a tiny model of ``task``."""
    cache = {}

    def get(task: str) -> list[str]:
        if task not in cache:
            out = tmp_path_factory.mktemp(f"cli-{task}")
            assert infer_main([str(media), "-m", str(tiny_onnx(task)), "--no-save", "--save-dir", str(out),
                               "--jsonl", "f.jsonl"]) == 1  # broken.jpg and cut.avi
            cache[task] = sorted((out / "f.jsonl").read_text().splitlines())
        return cache[task]

    return get


def _args(media: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [str(media), "--model", str(model), "--out", str(out), "--no-progress", *extra]


def test_jsonl_shards_hold_the_cli_records_and_list_the_skipped(media, tiny_seg_onnx, cli_records, tmp_path):
    out = tmp_path / "out"
    assert main(_args(media, tiny_seg_onnx, out, "--format", "jsonl", "--shard-size", "4")) == 1
    want = cli_records("segment")
    assert shard_records(out) == want  # same records, each once
    sources = Counter(json.loads(line)["source"] for line in want)
    assert len(sources) == IMAGES + 2 and sources[str(media / "clip.mp4")] == CLIP_FRAMES
    assert skipped_sources(out) == [str(media / "broken.jpg"), str(media / "cut.avi")]
    cut = json.loads((out / "skipped.jsonl").read_text().splitlines()[1])["reason"]
    assert "cut.avi: video stopped at frame" in cut and 0 < sources[str(media / "cut.avi")]
    for shard in out.glob("part-*.jsonl"):  # whole inputs: a shard has all frames of each video in it
        in_shard = Counter(json.loads(line)["source"] for line in shard.read_text().splitlines())
        assert all(in_shard[s] == sources[s] for s in in_shard)


@needs_pyarrow
@pytest.mark.parametrize("task", ["detect", "segment", "pose"])
def test_parquet_rows_are_the_same_records(media, tiny_onnx, cli_records, tmp_path, task):
    import pyarrow.parquet as pq

    from runtime.batch.rows import COLUMNS

    out = tmp_path / "out"
    assert main(_args(media, tiny_onnx(task), out)) == 1
    assert shard_records(out) == cli_records(task)
    table = pq.read_table(next(out.glob("part-*.parquet")))
    assert tuple(table.column_names) == COLUMNS
    rows = [r for r in table.to_pylist() if r["boxes"]]
    assert rows, "the tiny model found nothing: the comparison tested no detection"
    assert (rows[0]["masks"] is not None) == (task == "segment")
    assert (rows[0]["keypoints"] is not None) == (task == "pose")


def test_stopped_run_resumes_without_losing_or_repeating_an_input(media, tiny_detect_onnx, cli_records, tmp_path):
    out = tmp_path / "out"
    job = BatchJob(str(media), tiny_detect_onnx, out, "jsonl", shard_size=3)
    stop, seen = threading.Event(), []

    def stop_after_five(outcome) -> None:
        seen.append(outcome.source)
        if len(seen) == 5:
            stop.set()

    first = run_local(job, progress=False, on_outcome=stop_after_five, stop=stop)
    assert first.interrupted and first.ran == 5
    written = shard_records(out)
    assert 0 < len(written) < len(cli_records("detect"))
    (out / ".part-00007.jsonl.crashed.tmp").write_text('{"source": "half')  # what a killed run leaves behind
    second = run_local(job, progress=False)
    assert not second.interrupted and second.done_before == len({json.loads(r)["source"] for r in written})
    assert second.ran == second.inputs - second.done_before
    assert shard_records(out) == cli_records("detect")
    assert not list(out.glob(".*.tmp"))
    assert skipped_sources(out) == [str(media / "broken.jpg"), str(media / "cut.avi")]
    third = run_local(job, progress=False)  # only the unreadable image is tried again; the cut video's frames stand
    assert third.ran == 1 and third.records == 0 and shard_records(out) == cli_records("detect")
    assert skipped_sources(out) == [str(media / "broken.jpg"), str(media / "cut.avi")]


def test_interrupt_inside_a_shard_keeps_the_whole_inputs_before_it(media, tiny_detect_onnx, tmp_path):
    out = tmp_path / "out"
    job = BatchJob(str(media), tiny_detect_onnx, out, "jsonl", shard_size=100)

    def interrupt(outcome) -> None:
        if outcome.source.endswith("img03.jpg"):
            raise KeyboardInterrupt

    report = run_local(job, progress=False, on_outcome=interrupt)
    assert report.interrupted and len(report.shards) == 1
    done = {json.loads(line)["source"] for line in shard_records(out)}
    before = {str(media / f"img{k:02d}.jpg") for k in range(4)} | {str(media / "clip.mp4"), str(media / "cut.avi")}
    assert done == before  # the inputs in name order up to img03.jpg, broken.jpg having none


def test_url_sources_through_fsspec(media, tiny_detect_onnx, cli_records, tmp_path):
    fsspec = pytest.importorskip("fsspec", reason="needs fsspec (URL sources), not installed")
    fs = fsspec.filesystem("memory")
    for name in ("img00.jpg", "img01.jpg", "clip.mp4", "broken.jpg"):
        fs.pipe_file(f"/batch-test/{name}", (media / name).read_bytes())
    out = tmp_path / "out"
    try:
        assert main(_args("memory://batch-test/", tiny_detect_onnx, out, "--format", "jsonl")) == 1
    finally:
        fs.rm("/batch-test", recursive=True)
    got = [json.loads(line) for line in shard_records(out)]
    assert {r["source"] for r in got} == {f"memory:///batch-test/{n}" for n in ("img00.jpg", "img01.jpg", "clip.mp4")}
    want = [json.loads(line) for line in cli_records("detect")]
    local = {str(media / n): f"memory:///batch-test/{n}" for n in ("img00.jpg", "img01.jpg", "clip.mp4")}
    renamed = sorted(json.dumps({**r, "source": local[r["source"]]}) for r in want if r["source"] in local)
    assert sorted(json.dumps(r) for r in got) == renamed
    assert skipped_sources(out) == ["memory:///batch-test/broken.jpg"]


def test_glob_and_list_file_sources(media, tiny_detect_onnx, tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{media / 'img01.jpg'}\n# a comment\n{media / 'clip.mp4'}\n")
    assert main(_args(listing, tiny_detect_onnx, tmp_path / "a", "--format", "jsonl", "--vid-stride", "2")) == 0
    sources = Counter(json.loads(line)["source"] for line in shard_records(tmp_path / "a"))
    assert sources == {str(media / "img01.jpg"): 1, str(media / "clip.mp4"): CLIP_FRAMES // 2}
    assert main(_args(str(media / "img0[12].jpg"), tiny_detect_onnx, tmp_path / "b", "--format", "jsonl")) == 0
    assert len(shard_records(tmp_path / "b")) == 2 and (tmp_path / "b" / "skipped.jsonl").read_text() == ""


@pytest.mark.parametrize("extra, message", [
    (["--workers", "2"], "--workers needs --ray"),
    (["--vid-stride", "0"], "--vid-stride takes N >= 1"),
    (["--conf", "2"], "conf must be within"),
])
def test_usage_errors_exit_2(media, tiny_detect_onnx, tmp_path, capsys, extra, message):
    assert main(_args(media, tiny_detect_onnx, tmp_path / "out", *extra)) == 2
    assert message in capsys.readouterr().err


def test_missing_source_and_other_jobs_output_exit_2(media, tiny_detect_onnx, tiny_pose_onnx, tmp_path, capsys):
    assert main(_args(tmp_path / "nothing-here", tiny_detect_onnx, tmp_path / "out")) == 2
    assert "nothing-here: no such file or folder" in capsys.readouterr().err
    out = tmp_path / "out2"
    assert main(_args(media / "img00.jpg", tiny_detect_onnx, out, "--format", "jsonl")) == 0
    for other in (["--conf", "0.5"], ["--format", "parquet"]):
        assert main(_args(media / "img00.jpg", tiny_detect_onnx, out, "--format", "jsonl", *other)) == 2
        assert "holds results of another job" in capsys.readouterr().err
    assert main(_args(media / "img00.jpg", tiny_pose_onnx, out, "--format", "jsonl")) == 2
    assert "model_sha256" in capsys.readouterr().err


def test_ray_asked_for_but_not_installed_is_one_line(media, tiny_detect_onnx, tmp_path, capsys, monkeypatch):
    import runtime.batch.cli as cli

    monkeypatch.setattr(cli, "ray_installed", lambda: False)
    assert main(_args(media, tiny_detect_onnx, tmp_path / "out", "--ray")) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'error: --ray needs Ray Data, which is not installed: pip install "yolo-edge-runtime[ray]"'
    assert not (tmp_path / "out").exists()


def test_batch_modules_import_no_ray():
    code = ("import sys, runtime, runtime.batch, runtime.batch.cli, runtime.batch.local, runtime.batch.ray_job, "
            "runtime.batch.ray_predictor; print([m for m in ('ray', 'torch', 'ultralytics') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_stop_while_an_input_is_written_leaves_no_part_of_it(media, tiny_detect_onnx, cli_records, tmp_path,
                                                                monkeypatch):
    from runtime.batch import shards

    add = shards.ShardWriter.add

    def add_then_stop(self, records) -> None:
        records = list(records)
        if records[0]["source"].endswith("clip.mp4"):
            add(self, records[:2])
            raise KeyboardInterrupt
        add(self, records)

    out = tmp_path / "out"
    job = BatchJob(str(media), tiny_detect_onnx, out, "jsonl", shard_size=2)
    monkeypatch.setattr(shards.ShardWriter, "add", add_then_stop)
    assert run_local(job, progress=False).interrupted
    assert not [line for line in shard_records(out) if "clip.mp4" in line] and not list(out.glob(".*.tmp"))
    monkeypatch.setattr(shards.ShardWriter, "add", add)
    run_local(job, progress=False)
    assert shard_records(out) == cli_records("detect")
