"""The command line: output lines, annotated images, JSON, help and errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from runtime.infer import build_parser, main

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
    assert main([str(bad), "--model", str(random_detect_onnx), "--no-save"]) == 2
    assert "broken.jpg: cannot be read as an image" in capsys.readouterr().err
