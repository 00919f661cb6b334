"""The benchmark scripts run end to end on a tiny configuration and write well-formed JSON.

Nothing here asserts a timing: the machine is shared and timings are noise. Only the structure of
the reports is checked (keys, stage names, non-negative numbers, the machine block).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from bench import kernels, latency

MACHINE_KEYS = {"cpu_model", "logical_cores", "usable_cores", "isa", "onnxruntime", "onnxruntime_providers",
                "numpy", "python"}
ISA_KEYS = {"avx2", "avx512f", "avx512_vnni", "avx_vnni"}
STAT_KEYS = {"count", "mean", "p50", "p90", "p99", "min", "max"}


@pytest.fixture(scope="module")
def two_images(tmp_path_factory) -> Path:
    """bus.jpg and zidane.jpg from Ultralytics' bundled assets, in a folder of their own."""
    pytest.importorskip("ultralytics")
    from ultralytics.utils import ASSETS

    folder = tmp_path_factory.mktemp("bench_images")
    for name in ("bus.jpg", "zidane.jpg"):
        src = Path(ASSETS) / name
        if not src.is_file():
            pytest.skip(f"Ultralytics asset {src} not found")
        shutil.copy(src, folder / name)
    return folder


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def _check_stats(block: dict, what: str) -> None:
    assert STAT_KEYS <= block.keys(), f"{what}: missing {STAT_KEYS - block.keys()}"
    for k in STAT_KEYS:
        assert _number(block[k]), f"{what}.{k} = {block[k]!r}"
    assert block["count"] >= 1, what
    assert block["min"] <= block["p50"] <= block["p90"] <= block["p99"] <= block["max"] + 1e-9, what


def _check_machine(machine: dict) -> None:
    assert MACHINE_KEYS <= machine.keys(), f"machine block lacks {MACHINE_KEYS - machine.keys()}"
    assert ISA_KEYS <= machine["isa"].keys()
    assert all(isinstance(v, bool) for v in machine["isa"].values())
    assert isinstance(machine["cpu_model"], str) and machine["cpu_model"]
    assert machine["logical_cores"] >= 1
    assert "CPUExecutionProvider" in machine["onnxruntime_providers"]


def _run_latency(tmp_path, argv) -> dict:
    out = tmp_path / "latency.json"
    assert latency.main(argv + ["--json", str(out)]) == 0
    return json.loads(out.read_text())


def _check_latency_report(report: dict, batches: list[int], mode: str) -> None:
    assert report["tool"] == "bench/latency.py"
    _check_machine(report["machine"])
    assert report["runtime"]["decode_backend"] == "cython"
    settings = report["settings"]
    assert settings["mode"] == mode and settings["batch"] == batches and settings["n_images"] == 2
    assert settings["conf"] == latency.MODES[mode]["conf"]
    assert report["stages"] == list(latency.STAGES)
    assert set(latency.STAGES) >= {"load", "preprocess", "inference", "decode", "nms", "masks", "total"}
    assert [r["batch"] for r in report["runs"]] == batches
    for run in report["runs"]:
        assert set(run["stages"]) == set(latency.STAGES)
        for stage, block in run["stages"].items():
            _check_stats(block, f"batch {run['batch']} {stage}")
        assert run["stages"]["load"]["count"] == 1
        assert run["stages"]["total"]["count"] == run["images"] == 2  # 2 images x 1 pass
        assert run["batch_effective"] >= 1 and isinstance(run["fixed_batch_model"], bool)
        for k in ("images_per_s", "wall_s", "peak_rss_mib", "detections_per_image"):
            assert _number(run[k]), f"{k} = {run[k]!r}"
        assert run["peak_rss_mib"] > 10
    assert set(report["throughput_vs_batch1"]) == {str(b) for b in batches}
    assert report["model"]["task"] == "segment"


def test_latency_predict_batches_and_cold_start(tmp_path, random_seg_onnx, two_images):
    report = _run_latency(tmp_path, ["--model", str(random_seg_onnx), "--images", str(two_images),
                                     "--batch", "1,2", "--warmup", "1", "--repeat", "1", "--threads", "1",
                                     "--cold-start", "--cold-repeat", "1"])
    _check_latency_report(report, [1, 2], "predict")
    assert report["runs"][1]["batch_effective"] == 2 and not report["runs"][1]["fixed_batch_model"]
    assert report["compare_ultralytics"] is None
    cold = report["cold_start"]
    _check_stats(cold["wall_ms"], "cold_start.wall_ms")
    assert cold["peak_rss_mib"]["max"] > 10 and "runtime.infer" in cold["command"]


def test_latency_baseline_is_timed_interleaved(tmp_path, random_seg_onnx, export_onnx, random_seg_pt, two_images):
    baseline = export_onnx(random_seg_pt, imgsz=320, batch=2)  # a second model with a different batch layout
    report = _run_latency(tmp_path, ["--model", str(random_seg_onnx), "--baseline", str(baseline), "--images",
                                     str(two_images), "--batch", "1", "--warmup", "0", "--threads", "1"])
    _check_latency_report(report, [1], "predict")
    block = report["baseline"]
    assert block["model"] == str(baseline) and report["settings"]["baseline"] == str(baseline)
    assert [r["batch"] for r in block["runs"]] == [1] and block["runs"][0]["batch_effective"] == 2
    for stage, stats in block["runs"][0]["stages"].items():
        _check_stats(stats, f"baseline {stage}")
    ratios = block["ratio_baseline_over_model"]["1"]
    assert {"inference", "postprocess", "total", "images_per_s"} <= ratios.keys()
    run, base = report["runs"][0], block["runs"][0]
    assert math.isclose(ratios["inference"], base["stages"]["inference"]["p50"] / run["stages"]["inference"]["p50"])


def test_latency_missing_baseline(tmp_path, random_seg_onnx, two_images, capsys):
    assert latency.main(["--model", str(random_seg_onnx), "--baseline", str(tmp_path / "nope.onnx"),
                         "--images", str(two_images)]) == 2
    assert "nope.onnx" in capsys.readouterr().err


def test_latency_fixed_batch_model_is_noted(tmp_path, export_onnx, random_seg_pt, two_images):
    model = export_onnx(random_seg_pt, imgsz=320, batch=2)
    report = _run_latency(tmp_path, ["--model", str(model), "--images", str(two_images), "--batch", "1",
                                     "--warmup", "0", "--threads", "1"])
    _check_latency_report(report, [1], "predict")
    run = report["runs"][0]
    assert run["fixed_batch_model"] and run["batch_effective"] == 2 and "fixed-batch" in run["note"]
    assert report["model"]["fixed_batch"] == 2


def test_latency_val_mode_compare_ultralytics(tmp_path, random_seg_onnx, random_seg_pt, two_images):
    pytest.importorskip("pycocotools")
    report = _run_latency(tmp_path, ["--model", str(random_seg_onnx), "--images", str(two_images), "--batch", "1",
                                     "--warmup", "1", "--repeat", "1", "--threads", "1", "--mode", "val",
                                     "--compare-ultralytics", str(random_seg_pt)])
    _check_latency_report(report, [1], "val")
    assert report["settings"]["rle_masks"] and report["settings"]["retina_masks"]
    cmp = report["compare_ultralytics"]
    assert cmp["images"] == 2 and cmp["postprocess_includes_rle_encode"]
    assert cmp["settings"]["retina_masks"] is True and cmp["settings"]["rect"] is False  # fixed 320x320 export
    assert cmp["settings"]["imgsz"] == [320, 320] and cmp["settings"]["conf"] == 0.001
    for side in ("ours", "theirs"):
        for stage in latency.COMPARE_STAGES:
            _check_stats(cmp[side][stage], f"{side}.{stage}")
    _check_stats(cmp["theirs"]["rle_encode"], "theirs.rle_encode")
    assert set(cmp["ratio_theirs_over_ours"]) == set(latency.COMPARE_STAGES)
    assert all(v is None or _number(v) for v in cmp["ratio_theirs_over_ours"].values())
    assert _number(cmp["host_share"]["ours"]) and _number(cmp["host_share"]["theirs"])
    dets = cmp["detections_per_image"]
    assert _number(dets["ours"]) and _number(dets["theirs"])


def test_latency_times_engines_interleaved(tmp_path, random_seg_onnx, two_images, monkeypatch):
    openvino = pytest.importorskip("openvino")
    monkeypatch.setenv("YOLO_EDGE_OPENVINO_CACHE", str(tmp_path / "cache"))
    report = _run_latency(tmp_path, ["--model", str(random_seg_onnx), "--images", str(two_images), "--batch", "1",
                                     "--warmup", "1", "--threads", "1", "--engine", "onnxruntime,openvino:f32",
                                     "--cold-start", "--cold-repeat", "1"])
    _check_latency_report(report, [1], "predict")
    machine = report["machine"]
    assert machine["openvino"] in openvino.__version__ and "CPU" in machine["openvino_devices"]
    assert "FP32" in machine["openvino_cpu_capabilities"]
    assert set(machine["onnxruntime_isa"]) <= {f for f, present in machine["isa"].items() if present}
    assert report["settings"]["engines"] == ["onnxruntime", "openvino:f32"]
    first, second = report["engines"]
    assert first["runs"] == report["runs"] and first["ratio_first_over_this"] is None
    assert first["settings"]["engine"] == "onnxruntime" and first["settings"]["precision"] == "f32"
    assert second["engine"] == "openvino" and second["precision_asked"] == "f32"
    assert second["settings"]["precision"] == "f32" and second["settings"]["threads"] == 1
    run = second["runs"][0]
    assert run["images"] == 2 and run["engine"]["engine"] == "openvino"
    for stage, block in run["stages"].items():
        _check_stats(block, f"openvino {stage}")
    ratios = second["ratio_first_over_this"]["1"]
    assert math.isclose(ratios["inference"], report["runs"][0]["stages"]["inference"]["p50"]
                        / run["stages"]["inference"]["p50"])
    assert {"preprocess", "decode", "masks", "total", "images_per_s"} <= ratios.keys()
    for block in (first, second):
        cold = block["cold_start"]
        _check_stats(cold["wall_ms"], "cold_start.wall_ms")
        assert 10 < cold["peak_rss_mib"]["max"] < 2000
    assert report["cold_start"] == first["cold_start"]
    assert second["cold_start"]["command"][-4:] == ["--engine", "openvino", "--precision", "f32"]


@pytest.mark.parametrize("value,message", [("tensorrt", "unknown engine 'tensorrt'"),
                                           ("openvino:int4", "unknown precision 'int4'"),
                                           ("openvino,openvino", "named twice")], ids=["name", "precision", "twice"])
def test_latency_refuses_bad_engine_lists(random_seg_onnx, two_images, capsys, value, message):
    with pytest.raises(SystemExit):
        latency.main(["--model", str(random_seg_onnx), "--images", str(two_images), "--engine", value])
    assert message in capsys.readouterr().err


def test_latency_missing_model_or_images(tmp_path, two_images, capsys):
    assert latency.main(["--model", str(tmp_path / "nope.onnx"), "--images", str(two_images)]) == 2
    (tmp_path / "m.onnx").write_bytes(b"")
    assert latency.main(["--model", str(tmp_path / "m.onnx"), "--images", str(tmp_path / "none")]) == 2


def test_kernels_small_sweep(tmp_path):
    out = tmp_path / "kernels.json"
    assert kernels.main(["--sizes", "64,128", "--dets", "1,5", "--repeat", "2", "--warmup", "1",
                         "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tool"] == "bench/kernels.py"
    _check_machine(report["machine"])
    assert report["runtime"]["decode_backend"] == "cython"
    assert report["kernels"] == list(kernels.KERNELS)
    rows = report["rows"]
    assert len(rows) == 2 * 2 * len(kernels.KERNELS)
    assert {(r["kernel"], r["size"], r["dets"]) for r in rows} == {
        (k, s, d) for k in kernels.KERNELS for s in (64, 128) for d in (1, 5)}
    for r in rows:
        assert "skipped" not in r
        for k in ("median_us", "p90_us", "mean_us", "min_us", "us_per_det", "n_in"):
            assert _number(r[k]), f"{r['kernel']} {k} = {r[k]!r}"
        assert r["calls"] == 2 and r["min_us"] <= r["median_us"] <= r["p90_us"] + 1e-9
        assert r["slope_us_per_det"] is None if r["dets"] == 1 else r["slope_us_per_det"] is not None
        if r["kernel"] == "rle_baseline":
            assert _number(r["ratio_vs_rle_native"])
        if r["kernel"] == "nms":
            assert r["n_in"] == r["dets"] * kernels.CANDIDATES_PER_OBJECT and 1 <= r["n_out"] <= r["n_in"]
        if r["kernel"].startswith("decode"):
            assert r["n_in"] == sum((s // st) ** 2 for st in kernels.STRIDES for s in [r["size"]])


def test_kernels_skips_oversized_bitmaps(tmp_path):
    out = tmp_path / "kernels.json"
    assert kernels.main(["--sizes", "64", "--dets", "2", "--repeat", "1", "--warmup", "0", "--kernels",
                         "masks_letterbox,rle_native", "--max-mask-mib", "0.001", "--json", str(out)]) == 0
    rows = {r["kernel"]: r for r in json.loads(out.read_text())["rows"]}
    assert "skipped" in rows["masks_letterbox"] and "skipped" not in rows["rle_native"]


def test_latency_video_mode_beside_ultralytics_and_live(tmp_path, random_seg_onnx, random_seg_pt):
    from scenes import clip_frames, write_video

    clip = write_video(tmp_path / "clip.mp4", clip_frames(8))
    out = tmp_path / "video.json"
    assert latency.main(["--model", str(random_seg_onnx), "--video", str(clip), "--compare-ultralytics",
                         str(random_seg_pt), "--live-fps", "40", "--warmup", "1", "--threads", "1",
                         "--segment-frames", "5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tool"] == "bench/latency.py --video"
    _check_machine(report["machine"])
    assert report["settings"]["video_frames"] == 8 and report["settings"]["live_fps"] == 40
    ours, theirs, live = report["ours"], report["ultralytics"], report["live"]
    assert ours["frames"] == theirs["frames"] == 8
    for block, stages in ((ours, ("read", "preprocess", "inference", "decode", "nms", "masks")),
                          (theirs, ("preprocess", "inference", "postprocess"))):
        _check_stats(block["latency_ms"], "latency")
        assert set(block["stages_ms"]) == set(stages) and math.isclose(sum(block["stage_share"].values()), 1)
        assert _number(block["fps"])
    assert theirs["model"].endswith(".onnx") and theirs["model"] != str(random_seg_pt)  # its own ONNX export
    assert theirs["segments"] == 2 and theirs["ratio_fps_ours_over_theirs_per_segment"]["count"] == 2  # 5 + 3
    assert live["captured"] == 8 and live["frames"] + live["dropped"] == 8 and live["max_queued"] == 1
    assert set(report["targets"]) == {"fps_over_inference_bound", "fps_vs_ultralytics",
                                      "live_latency_p99_over_inference"}
    assert all(_number(t["value"]) for t in report["targets"].values())


def test_latency_video_errors(tmp_path, random_seg_onnx, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert latency.main(["--model", str(random_seg_onnx), "--video", str(bad)]) == 2
    assert "bad.mp4: cannot be read as a video" in capsys.readouterr().err
    assert latency.main(["--model", str(random_seg_onnx), "--live-fps", "30"]) == 2
    assert "--live-fps needs --video" in capsys.readouterr().err


def test_batch_bench_report(tiny_detect_onnx, pictures, tmp_path):
    from bench import batch

    out = tmp_path / "batch.json"
    assert batch.main(["--model", str(tiny_detect_onnx), "--images", str(pictures[0].parent), "--modes", "local",
                       "--copies", "2", "--repeat", "1", "--format", "jsonl", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    _check_machine(report["machine"])
    assert report["images"] == 2 * len(pictures)
    (run,) = report["runs"]
    assert run["mode"] == "local" and run["records"] == report["images"] and run["skipped"] == 0
    assert _number(run["images_per_s"]) and 0 < run["first_result_s"] <= run["wall_s"]
    assert "ray_vs_local" not in report  # one mode: no ratio


def test_ort_profile_sums_kernel_time_by_operator(tiny_detect_onnx, capsys):
    from bench import ort_profile

    median, by_type, by_node = ort_profile.profile(tiny_detect_onnx, runs=2, threads=1)
    assert median > 0 and "Conv" in by_type
    assert abs(sum(by_type.values()) - sum(by_node.values())) < 1e-6 * max(1.0, sum(by_type.values()))
    assert ort_profile.main([str(tiny_detect_onnx), "--runs", "1", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "kernel time" in out and "Conv" in out
