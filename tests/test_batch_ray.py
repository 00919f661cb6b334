"""python -m runtime.batch --ray and BatchPredictor on a local Ray cluster (one for the whole session, 2 CPUs):
the same records as the local job and the CLI, an actor killed midway costs nothing and repeats nothing.
Skipped when ray[data] is not installed."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from batch_media import shard_records, skipped_sources, write_media
from runtime.batch.cli import main
from runtime.batch.job import BatchJob
from runtime.cli.infer import main as infer_main

ray = pytest.importorskip("ray.data", reason='needs ray[data] (pip install ".[ray]"), not installed')


@pytest.fixture(scope="session")
def ray_cluster():
    import ray as ray_core

    ray_core.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray_core.shutdown()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return write_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def local_records(media, tiny_seg_onnx, tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("local") / "out"
    assert main([str(media), "-m", str(tiny_seg_onnx), "--out", str(out), "--format", "jsonl", "--no-progress"]) == 1
    return shard_records(out)


def test_ray_job_writes_the_local_jobs_records(ray_cluster, media, tiny_seg_onnx, local_records, tmp_path):
    out = tmp_path / "out"
    assert main([str(media), "-m", str(tiny_seg_onnx), "--out", str(out), "--ray", "--workers", "2", "--threads", "1",
                 "--shard-size", "5", "--no-progress"]) == 1
    assert shard_records(out) == local_records  # Parquet rows from actors == JSONL records from one process
    assert skipped_sources(out) == [str(media / "broken.jpg"), str(media / "cut.avi")]


def _actor_pids(name: str) -> list[int]:
    """Processes of Ray actors running the map_batches class ``name`` (Ray titles them ``ray::...name...``)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::") and name in cmdline:
            pids.append(proc.info["pid"])
    return pids


def test_an_actor_killed_midway_loses_and_repeats_nothing(ray_cluster, media, tiny_seg_onnx, local_records,
                                                          tmp_path):
    pytest.importorskip("psutil", reason="needs psutil (to find the actor's process), not installed")
    from runtime.batch.ray_job import run_on_ray

    killed: list[int] = []

    def kill_the_actors_once(outcome) -> None:
        if not killed:
            killed.extend(_actor_pids("InputRunner"))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    job = BatchJob(str(media), tiny_seg_onnx, tmp_path / "out", "jsonl", shard_size=4, workers=2, threads=1)
    report = run_on_ray(job, progress=False, on_outcome=kill_the_actors_once, inputs_per_task=1)
    assert killed, "no actor process was found to kill"
    assert report.ran == report.inputs
    got = shard_records(tmp_path / "out")
    assert got == local_records
    assert len(got) == len(set(got))
    assert skipped_sources(tmp_path / "out") == [str(media / "broken.jpg"), str(media / "cut.avi")]


def test_batch_predictor_takes_read_images_rgb_and_read_media_bgr(ray_cluster, media, tiny_seg_onnx, tmp_path):
    import cv2
    import ray as ray_core

    from runtime.batch.ray_predictor import BatchPredictor, read_media
    from runtime.batch.rows import row_to_record

    pngs = tmp_path / "png"  # lossless: PIL and OpenCV decode the same pixels
    pngs.mkdir()
    for k in range(3):
        cv2.imwrite(str(pngs / f"p{k}.png"), cv2.imread(str(media / f"img{k:02d}.jpg")))
    cli = tmp_path / "cli"
    infer_main([str(pngs), str(media / "clip.mp4"), "-m", str(tiny_seg_onnx), "--no-save", "--save-dir", str(cli),
                "--jsonl", "f.jsonl"])
    want = sorted((cli / "f.jsonl").read_text().splitlines())
    options = dict(fn_constructor_kwargs={"model": str(tiny_seg_onnx)}, batch_size=4,
                   compute=ray_core.data.ActorPoolStrategy(size=1), num_cpus=1)
    rgb = ray_core.data.read_images(str(pngs), include_paths=True).map_batches(BatchPredictor, **options)
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{pngs / 'p0.png'}\n{media / 'clip.mp4'}\n")
    bgr = read_media(listing).map_batches(BatchPredictor, **options)
    got_rgb = [json.dumps(row_to_record(r)) for r in rgb.take_all()]
    got_bgr = [json.dumps(row_to_record(r)) for r in bgr.take_all()]
    assert sorted(got_rgb) == [line for line in want if ".png" in line]
    assert sorted(got_bgr) == [line for line in want if "p0.png" in line or "clip.mp4" in line]
    assert Counter(json.loads(line)["kind"] for line in got_bgr) == {"image": 1, "video": 6}
    assert any(json.loads(line)["detections"] for line in got_rgb), "nothing detected: the comparison tested little"
