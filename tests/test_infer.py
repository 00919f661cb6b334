"""The command line: output lines, annotated images, JSON, help, errors, videos, streams and Ctrl-C.

Everything runs on the tiny models (tests/tiny_models.py) and drawn pictures: no torch needed. Live sources are
fake cameras on a fake clock, and the Ctrl-C test interrupts the CLI process at a frame it chooses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import runtime.io.streams as streams
from fakes import FakeCamera, FakeClock
from runtime.cli.infer import build_parser, main
from scenes import CLIP_FPS as FPS
from scenes import CLIP_SIZE_WH as SIZE_WH
from scenes import clip_frames, write_video

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def image_dir(tmp_path, pictures):
    folder = tmp_path / "images"
    folder.mkdir()
    for p in pictures:
        shutil.copy(p, folder / p.name)
    return folder


def test_prints_saves_and_writes_json(tiny_seg_onnx, image_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code = main([str(image_dir), "--model", str(tiny_seg_onnx), "--save-dir", str(out_dir), "--json"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    image_lines = [line for line in lines if line.startswith(("portrait.jpg", "wide.jpg"))]
    assert len(image_lines) == 2
    assert image_lines[0].startswith("portrait.jpg 810x1080: ") and "ms: pre " in image_lines[0]
    for stage in ("infer", "decode", "nms", "masks"):
        assert f"{stage} " in image_lines[0]
    for name in ("portrait.jpg", "wide.jpg"):
        saved = cv2.imread(str(out_dir / name))
        original = cv2.imread(str(image_dir / name))
        assert saved is not None and saved.shape == original.shape
    records = json.loads((out_dir / "predictions.json").read_text())
    assert records, "expected detections of the tiny model at conf 0.25"
    pycocotools_mask = pytest.importorskip("pycocotools.mask")
    for record in records:
        assert set(record) >= {"image_id", "category_id", "category_name", "bbox", "score", "segmentation"}
        mask = pycocotools_mask.decode({"size": record["segmentation"]["size"],
                                        "counts": record["segmentation"]["counts"].encode()})
        h, w = (1080, 810) if record["image_id"] == "portrait.jpg" else (720, 1280)
        assert mask.shape == (h, w)
        x, y, bw, bh = record["bbox"]
        ys, xs = np.nonzero(mask)
        assert xs.min() >= np.floor(x) - 1 and xs.max() <= np.ceil(x + bw) + 1  # mask stays inside its box
        assert ys.min() >= np.floor(y) - 1 and ys.max() <= np.ceil(y + bh) + 1
    # the per-class counts printed for portrait.jpg agree with the JSON
    printed = image_lines[0].split(": ", 1)[1].split(" | ")[0].split(", ")
    printed_counts = {part.split(" ", 1)[1]: int(part.split(" ", 1)[0]) for part in printed}  # "3 person"
    written: dict[str, int] = {}
    for r in records:
        if r["image_id"] == "portrait.jpg":
            written[r["category_name"]] = written.get(r["category_name"], 0) + 1
    assert printed_counts == written


def test_no_save_and_classes(tiny_detect_onnx, image_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    image = str(image_dir / "portrait.jpg")
    assert main([image, "-m", str(tiny_detect_onnx), "--no-save", "--save-dir", str(out_dir), "--threads", "1"]) == 0
    every = capsys.readouterr().out.splitlines()[0].split(": ", 1)[1].split(" | ")[0].split(", ")
    kept = every[0].split(" ", 1)[1]  # the class printed first ("3 41" -> "41")
    assert len(every) > 1, "expected detections of several classes"
    assert main([image, "-m", str(tiny_detect_onnx), "--no-save", "--classes", kept, "--save-dir", str(out_dir),
                 "--threads", "1"]) == 0
    assert not out_dir.exists()
    line = capsys.readouterr().out.splitlines()[0]
    assert line.split(": ", 1)[1].split(" | ")[0] == every[0]  # that class alone, as many as before


def _counts(line: str) -> str:
    return line.split(" | ")[0]


def test_engine_precision_and_device_options(tiny_seg_onnx, image_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("YOLO_EDGE_OPENVINO_CACHE", str(tmp_path / "cache"))
    common = [str(image_dir), "--model", str(tiny_seg_onnx), "--no-save"]
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


def test_bad_image_reports_file(tiny_detect_onnx, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"nope")
    assert main([str(bad), "--model", str(tiny_detect_onnx), "--no-save"]) == 1  # skipped, not a usage error
    err = capsys.readouterr().err
    assert "skipped 1 input:" in err and "broken.jpg: cannot be read as an image" in err


# ------------------------------------------------------------------------------------------------ videos, streams
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


def test_video_writes_annotated_video_and_jsonl(tiny_seg_onnx, clip, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main([str(clip), "--model", str(tiny_seg_onnx), "--save-dir", str(out_dir), "--jsonl", "frames.jsonl",
                 "--vid-stride", "2"]) == 0
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
    assert main([str(clip), "--model", str(tiny_seg_onnx), "--no-save", "--verbose", "--max-frames", "3",
                 "--vid-stride", "3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " frame " in line and "ms:" in line]
    assert [line.split(":")[0] for line in lines] == [f"clip.mp4 frame {3 * k} ({k + 1}/3) 256x192" for k in range(3)]


def test_video_codec_option(tiny_detect_onnx, clip, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main([str(clip), "-m", str(tiny_detect_onnx), "--save-dir", str(out_dir), "--video-codec", "MJPG",
                 "--max-frames", "2"]) == 0
    assert len(_frames_of(out_dir / "clip.avi")) == 2
    assert main([str(clip), "-m", str(tiny_detect_onnx), "--save-dir", str(out_dir), "--video-codec", "x"]) == 2
    assert "video codec must be a four-character code" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--vid-stride", "0"], ["--stream-buffer", "0"], ["--max-frames", "0"]],
                         ids=["vid_stride", "stream_buffer", "max_frames"])
def test_bad_stream_options_are_usage_errors(tiny_detect_onnx, clip, option, capsys):
    assert main([str(clip), "-m", str(tiny_detect_onnx), "--no-save"] + option) == 2
    assert f"{option[0][2:].replace('-', '_')} must be >= 1" in capsys.readouterr().err


def test_pose_json_carries_keypoints(tiny_pose_onnx, image_dir, tmp_path):
    from runtime import Predictor

    out_dir = tmp_path / "out"
    assert main([str(image_dir), "--model", str(tiny_pose_onnx), "--save-dir", str(out_dir), "--no-save",
                 "--json"]) == 0
    records = json.loads((out_dir / "predictions.json").read_text())
    assert records, "expected detections of the tiny model at conf 0.25"
    results = {Path(r.path).name: r for r in Predictor(tiny_pose_onnx).predict(sorted(image_dir.iterdir()))}
    for name, result in results.items():
        flat = [r["keypoints"] for r in records if r["image_id"] == name]
        assert len(flat) == len(result)
        np.testing.assert_allclose(np.array(flat).reshape(result.keypoints.shape), result.keypoints, atol=1e-3)


def test_skipped_image_keeps_json_and_exits_1(tiny_detect_onnx, image_dir, tmp_path, capsys):
    complete = tmp_path / "complete"
    assert main([str(image_dir), "--model", str(tiny_detect_onnx), "--save-dir", str(complete), "--json"]) == 0
    expected = json.loads((complete / "predictions.json").read_text())
    (image_dir / "a_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out_dir = tmp_path / "out"
    capsys.readouterr()
    assert main([str(image_dir), "--model", str(tiny_detect_onnx), "--save-dir", str(out_dir), "--json"]) == 1
    assert json.loads((out_dir / "predictions.json").read_text()) == expected and expected
    err = capsys.readouterr().err
    assert "skipped 1 input:" in err and "a_broken.jpg: cannot be read as an image" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["portrait.jpg", "predictions.json", "wide.jpg"]


def test_sigint_during_a_video_keeps_a_playable_file(tiny_detect_onnx, clip, tmp_path, capsys, monkeypatch):
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
    code = main([str(clip), "-m", str(tiny_detect_onnx), "--save-dir", str(out_dir), "--jsonl", "f.jsonl"])
    assert code == 130
    assert len(_frames_of(out_dir / "clip.mp4")) == 3 == len((out_dir / "f.jsonl").read_text().splitlines())
    assert _no_temp_files(out_dir)
    captured = capsys.readouterr()
    assert "3 annotated frames" in captured.out and "stopped early" in captured.out
    assert "interrupted" in captured.err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


# Run the CLI as `python -m runtime.infer` does, but with drawing that stops at frame STOP_AT until the test has
# sent Ctrl-C: it says so on the file descriptor READY_FD, then waits for stdin to close.
_CLI_STOPPING_AT_A_FRAME = """
import os, sys
import runtime.cli.outputs as outputs
from runtime.cli.infer import main

stop_at, ready_fd, real, drawn = int(sys.argv[1]), int(sys.argv[2]), outputs.annotate, []

def annotate(image, result, **kwargs):
    drawn.append(result.frame_index)
    if len(drawn) == stop_at + 1:
        os.write(ready_fd, b"x")
        sys.stdin.buffer.read()  # returns once the test closes stdin (after its Ctrl-C)
    return real(image, result, **kwargs)

outputs.annotate = annotate
sys.exit(main(sys.argv[3:]))
"""


def test_sigint_to_the_cli_process(tiny_detect_onnx, tmp_path):
    """As a user would: Ctrl-C a running CLI on a long video while it draws frame 5; that frame is finished,
    the video written so far plays and the run exits 130."""
    import os
    import signal

    stop_at = 5
    clip = write_video(tmp_path / "long.mp4", clip_frames(12) * 20)  # 240 frames
    out_dir = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    ready_r, ready_w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", _CLI_STOPPING_AT_A_FRAME, str(stop_at), str(ready_w),
                                 str(clip), "-m", str(tiny_detect_onnx), "--save-dir", str(out_dir), "--jsonl",
                                 "f.jsonl", "--threads", "1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, pass_fds=(ready_w,))
        os.close(ready_w)
        ready = os.read(ready_r, 1)  # b"" if the process ended without reaching the frame
    finally:
        os.close(ready_r)
    if not ready:
        raise AssertionError(f"the CLI ended before frame {stop_at}: {proc.communicate()}")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(input="", timeout=120)  # closes stdin: the frame is drawn, then the run stops
    assert proc.returncode == 130, err
    written = stop_at + 1
    assert len((out_dir / "f.jsonl").read_text().splitlines()) == written
    assert len(_frames_of(out_dir / "long.mp4")) == written
    assert f"{written} annotated frames" in out and "stopped early" in out and _no_temp_files(out_dir)
    assert "interrupted" in err and "Traceback" not in err


def test_a_camera_that_breaks_keeps_its_video(tiny_detect_onnx, tmp_path, capsys, monkeypatch):
    cams = iter([FakeCamera(fps=100.0, fail_after=4)])
    monkeypatch.setattr(streams, "open_capture", lambda inp: next(cams, FakeCamera(opens=False)))
    monkeypatch.setattr(streams, "CLOCK", FakeClock())  # the reconnect backoff returns at once
    out_dir = tmp_path / "out"
    assert main(["0", "-m", str(tiny_detect_onnx), "--save-dir", str(out_dir), "--stream-buffer", "8",
                 "--reconnect", "3"]) == 1
    captured = capsys.readouterr()
    assert "camera 0: stream stopped after 4 frames; 3 reconnect attempts failed" in captured.err
    assert "outages: camera 0 1x, 3.5 s in all" in captured.err
    assert len([line for line in captured.out.splitlines() if line.startswith("camera 0 frame")]) == 4
    cap = cv2.VideoCapture(str(out_dir / "camera0.mp4"))
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) == 4 and cap.get(cv2.CAP_PROP_FPS) == 100
    assert _no_temp_files(out_dir)
