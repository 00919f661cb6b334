"""The command line: output lines, annotated images, JSON, help and errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.cli.infer import build_parser, main

pytest.importorskip("ultralytics")
from test_parity import asset_images  # noqa: E402


@pytest.fixture()
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for p in asset_images():
        shutil.copy(p, folder / p.name)
    return folder


def test_prints_saves_and_writes_json(random_seg_onnx, image_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code = main([str(image_dir), "--model", str(random_seg_onnx), "--conf", "0.3", "--save-dir", str(out_dir),
                 "--json"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    image_lines = [line for line in lines if line.startswith(("bus.jpg", "zidane.jpg"))]
    assert len(image_lines) == 2
    assert image_lines[0].startswith("bus.jpg 810x1080: ") and "ms: pre " in image_lines[0]
    for stage in ("infer", "decode", "nms", "masks"):
        assert f"{stage} " in image_lines[0]
    for name in ("bus.jpg", "zidane.jpg"):
        saved = cv2.imread(str(out_dir / name))
        original = cv2.imread(str(image_dir / name))
        assert saved is not None and saved.shape == original.shape
    records = json.loads((out_dir / "predictions.json").read_text())
    assert records, "expected detections with a lively random model at conf 0.3"
    pycocotools_mask = pytest.importorskip("pycocotools.mask")
    for record in records:
        assert set(record) >= {"image_id", "category_id", "category_name", "bbox", "score", "segmentation"}
        mask = pycocotools_mask.decode({"size": record["segmentation"]["size"],
                                        "counts": record["segmentation"]["counts"].encode()})
        h, w = (1080, 810) if record["image_id"] == "bus.jpg" else (720, 1280)
        assert mask.shape == (h, w)
        x, y, bw, bh = record["bbox"]
        ys, xs = np.nonzero(mask)
        assert xs.min() >= np.floor(x) - 1 and xs.max() <= np.ceil(x + bw) + 1  # mask stays inside its box
        assert ys.min() >= np.floor(y) - 1 and ys.max() <= np.ceil(y + bh) + 1
    # the per-class counts printed for bus.jpg agree with the JSON
    printed = image_lines[0].split(": ", 1)[1].split(" | ")[0].split(", ")
    printed_counts = {part.split(" ", 1)[1]: int(part.split(" ", 1)[0]) for part in printed}  # "3 person"
    written: dict[str, int] = {}
    for r in records:
        if r["image_id"] == "bus.jpg":
            written[r["category_name"]] = written.get(r["category_name"], 0) + 1
    assert printed_counts == written


def test_no_save_and_classes(random_detect_onnx, image_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main([str(image_dir / "bus.jpg"), "-m", str(random_detect_onnx), "--no-save", "--classes", "0",
                 "--save-dir", str(out_dir), "--threads", "1"]) == 0
    assert not out_dir.exists()
    line = capsys.readouterr().out.splitlines()[0]
    counts = line.split(": ", 1)[1].split(" | ")[0]
    assert counts == "no detections" or all(part.split(" ", 1)[1] == "0" for part in counts.split(", "))  # class "0"


def _counts(line: str) -> str:
    return line.split(" | ")[0]


def test_engine_precision_and_device_options(random_seg_onnx, image_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("YOLO_EDGE_OPENVINO_CACHE", str(tmp_path / "cache"))
    common = [str(image_dir), "--model", str(random_seg_onnx), "--conf", "0.3", "--no-save"]
    assert main(common) == 0
    reference = [_counts(line) for line in capsys.readouterr().out.splitlines()]
    assert main(common + ["--engine", "openvino", "--precision", "f32", "--device", "CPU"]) == 0
    assert [_counts(line) for line in capsys.readouterr().out.splitlines()] == reference
    assert main(common + ["--precision", "bf16"]) == 2  # onnxruntime runs f32 only
    assert "onnxruntime engine runs float models at f32 only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(common + ["--engine", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_help_documents_every_option():
    text = build_parser().format_help()
    for option in ("--model", "--conf", "--iou", "--imgsz", "--classes", "--save-dir", "--json", "--no-save",
                   "--threads", "--max-det", "--agnostic", "--batch", "--engine", "--precision", "--device"):
        assert option in text
    out = subprocess.run([sys.executable, "-m", "runtime.infer", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--model" in out.stdout


def test_missing_model_explains_export(tmp_path, image_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(image_dir)]) == 2
    err = capsys.readouterr().err
    assert "no --model given and no .onnx file" in err and "python tools/export.py" in err
    assert main([str(image_dir), "--model", "nope.onnx"]) == 2
    assert "nope.onnx: model file not found" in capsys.readouterr().err


def test_bad_image_reports_file(random_detect_onnx, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"nope")
    assert main([str(bad), "--model", str(random_detect_onnx), "--no-save"]) == 1  # skipped, not a usage error
    err = capsys.readouterr().err
    assert "skipped 1 input:" in err and "broken.jpg: cannot be read as an image" in err


# ------------------------------------------------------------------------------------------------ videos, streams
from test_video import FPS, SIZE_WH, FakeCamera, clip_frames, write_video  # noqa: E402


@pytest.fixture()
def clip(tmp_path):
    return write_video(tmp_path / "clip.mp4", clip_frames())


def _frames_of(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert cap.get(cv2.CAP_PROP_FPS) == FPS
    return frames


def _no_temp_files(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".")]


def test_video_writes_annotated_video_and_jsonl(random_seg_onnx, clip, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main([str(clip), "--model", str(random_seg_onnx), "--conf", "0.3", "--save-dir", str(out_dir),
                 "--jsonl", "frames.jsonl", "--vid-stride", "2"]) == 0
    captured = capsys.readouterr()
    assert f"6 annotated frames -> {out_dir / 'clip.mp4'}" in captured.out
    assert "clip.mp4: 100%" in captured.err and "6/6" in captured.err  # the progress bar, not a line per frame
    assert not [line for line in captured.out.splitlines() if " frame " in line and "ms:" in line]
    frames = _frames_of(out_dir / "clip.mp4")
    assert len(frames) == 6 and frames[0].shape == (SIZE_WH[1], SIZE_WH[0], 3)
    assert _no_temp_files(out_dir)
    records = [json.loads(line) for line in (out_dir / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 2, 4, 6, 8, 10]
    assert [round(r["timestamp_ms"]) for r in records] == [0, 200, 400, 600, 800, 1000]
    assert {(r["source"], r["kind"], r["width"], r["height"]) for r in records} == {(str(clip), "video", *SIZE_WH)}
    dets = [d for r in records for d in r["detections"]]
    assert dets and {"category_id", "category_name", "bbox", "score", "segmentation"} <= set(dets[0])
    assert main([str(clip), "--model", str(random_seg_onnx), "--no-save", "--verbose", "--max-frames", "3",
                 "--vid-stride", "3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " frame " in line and "ms:" in line]
    assert [line.split(":")[0] for line in lines] == [f"clip.mp4 frame {3 * k} ({k + 1}/3) 256x192" for k in range(3)]


def test_video_codec_option(random_detect_onnx, clip, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main([str(clip), "-m", str(random_detect_onnx), "--save-dir", str(out_dir), "--video-codec", "MJPG",
                 "--max-frames", "2"]) == 0
    assert len(_frames_of(out_dir / "clip.avi")) == 2
    assert main([str(clip), "-m", str(random_detect_onnx), "--save-dir", str(out_dir), "--video-codec", "x"]) == 2
    assert "video codec must be a four-character code" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--vid-stride", "0"], ["--stream-buffer", "0"], ["--max-frames", "0"]],
                         ids=["vid_stride", "stream_buffer", "max_frames"])
def test_bad_stream_options_are_usage_errors(random_detect_onnx, clip, option, capsys):
    assert main([str(clip), "-m", str(random_detect_onnx), "--no-save"] + option) == 2
    assert f"{option[0][2:].replace('-', '_')} must be >= 1" in capsys.readouterr().err


def test_pose_json_carries_keypoints(random_pose_onnx, image_dir, tmp_path):
    from runtime import Predictor

    out_dir = tmp_path / "out"
    assert main([str(image_dir), "--model", str(random_pose_onnx), "--conf", "0.001", "--save-dir", str(out_dir),
                 "--no-save", "--json"]) == 0
    records = json.loads((out_dir / "predictions.json").read_text())
    assert records, "expected detections from the random model at conf 0.001"
    results = {Path(r.path).name: r for r in Predictor(random_pose_onnx, conf=0.001).predict(sorted(image_dir.iterdir()))}
    for name, result in results.items():
        flat = [r["keypoints"] for r in records if r["image_id"] == name]
        assert len(flat) == len(result)
        np.testing.assert_allclose(np.array(flat).reshape(result.keypoints.shape), result.keypoints, atol=1e-3)


def test_skipped_image_keeps_json_and_exits_1(random_detect_onnx, image_dir, tmp_path, capsys):
    complete = tmp_path / "complete"
    assert main([str(image_dir), "--model", str(random_detect_onnx), "--conf", "0.3", "--save-dir", str(complete),
                 "--json"]) == 0
    expected = json.loads((complete / "predictions.json").read_text())
    (image_dir / "a_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out_dir = tmp_path / "out"
    capsys.readouterr()
    assert main([str(image_dir), "--model", str(random_detect_onnx), "--conf", "0.3", "--save-dir", str(out_dir),
                 "--json"]) == 1
    assert json.loads((out_dir / "predictions.json").read_text()) == expected and expected
    err = capsys.readouterr().err
    assert "skipped 1 input:" in err and "a_broken.jpg: cannot be read as an image" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["bus.jpg", "predictions.json", "zidane.jpg"]


def test_sigint_during_a_video_keeps_a_playable_file(random_detect_onnx, clip, tmp_path, capsys, monkeypatch):
    # Ctrl-C while the third frame is drawn: that frame is finished, then the run stops and closes its outputs
    import signal

    import runtime.cli.outputs as outputs

    real, calls = outputs.annotate, []

    def annotate(image, result, **kwargs):
        calls.append(result.frame_index)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return real(image, result, **kwargs)

    monkeypatch.setattr(outputs, "annotate", annotate)
    out_dir = tmp_path / "out"
    code = main([str(clip), "-m", str(random_detect_onnx), "--save-dir", str(out_dir), "--jsonl", "f.jsonl"])
    assert code == 130
    assert len(_frames_of(out_dir / "clip.mp4")) == 3 == len((out_dir / "f.jsonl").read_text().splitlines())
    assert _no_temp_files(out_dir)
    captured = capsys.readouterr()
    assert "3 annotated frames" in captured.out and "stopped early" in captured.out
    assert "interrupted" in captured.err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_sigint_to_the_cli_process(random_detect_onnx, tmp_path):
    """As a user would: Ctrl-C a running `python -m runtime.infer clip.mp4`; the video written so far plays."""
    import os
    import signal
    import time

    clip = write_video(tmp_path / "long.mp4", clip_frames(12) * 20)  # 240 frames
    out_dir = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "runtime.infer", str(clip), "-m", str(random_detect_onnx),
                             "--save-dir", str(out_dir), "--jsonl", "f.jsonl", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    jsonl = out_dir / "f.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the CLI ended before it was interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    written = len(jsonl.read_text().splitlines())
    assert 5 <= written < 240
    assert len(_frames_of(out_dir / "long.mp4")) == written
    assert f"{written} annotated frames" in out and _no_temp_files(out_dir)
    assert "Traceback" not in err


def test_a_camera_that_breaks_keeps_its_video(random_detect_onnx, tmp_path, capsys, monkeypatch):
    import runtime.io.streams as streams

    cams = iter([FakeCamera(fps=100.0, fail_after=4)])
    monkeypatch.setattr(streams, "open_capture", lambda inp: next(cams, FakeCamera(opens=False)))
    monkeypatch.setattr(streams, "RETRY_DELAYS_S", (0.01,))
    out_dir = tmp_path / "out"
    assert main(["0", "-m", str(random_detect_onnx), "--save-dir", str(out_dir), "--stream-buffer", "8"]) == 1
    captured = capsys.readouterr()
    assert "camera 0: stream stopped after 4 frames; 1 reconnect attempts failed" in captured.err
    assert len([line for line in captured.out.splitlines() if line.startswith("camera 0 frame")]) == 4
    cap = cv2.VideoCapture(str(out_dir / "camera0.mp4"))
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) == 4 and cap.get(cv2.CAP_PROP_FPS) == 100
    assert _no_temp_files(out_dir)
