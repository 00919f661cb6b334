"""tools/eval_obb.py: rotated-box mAP on synthetic ground truth (perfect, rotated away, empty), the same numbers
as Ultralytics' own matching and ap_per_class on the same predictions, label files and the command line.

Perfect predictions score PERFECT (0.995), the ceiling of Ultralytics' 101-point rule, which Ultralytics itself
reports for them."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.kernels.obb import rotated_corners
from tools.eval_obb import PERFECT, ImageBoxes, main, match_image, polygons_to_xywhr, read_labels, rotated_map


def synthetic_truth(seed: int = 0, images: int = 6, classes: int = 3) -> list[ImageBoxes]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(images):
        n = 0 if k == 2 else int(rng.integers(1, 8))  # image 2 has no objects
        xy = rng.uniform(60, 500, (n, 2))
        w = rng.uniform(30, 80, (n, 1))
        h = w * rng.uniform(0.2, 0.5, (n, 1))  # elongated: rotation matters
        theta = rng.uniform(-np.pi / 4, 3 * np.pi / 4, (n, 1))
        out.append(ImageBoxes(np.concatenate([xy, w, h, theta], 1).astype(np.float32), rng.integers(0, classes, n)))
    return out


def as_predictions(truths: list[ImageBoxes], seed: int = 1, turn: float = 0.0, jitter: float = 0.0,
                   extra: int = 0) -> list[ImageBoxes]:
    rng = np.random.default_rng(seed)
    preds = []
    for t in truths:
        boxes = t.xywhr.astype(np.float64).copy()
        boxes[:, 4] += turn
        boxes[:, :4] += rng.normal(0, jitter, boxes[:, :4].shape) * boxes[:, 2:3] * 0.1
        classes = t.class_ids.copy()
        if extra:  # false positives somewhere else
            fp = np.column_stack([rng.uniform(0, 600, (extra, 2)), np.full((extra, 2), 40.0), np.zeros(extra)])
            boxes = np.concatenate([boxes, fp])
            classes = np.concatenate([classes, rng.integers(0, 3, extra)])
        preds.append(ImageBoxes(boxes.astype(np.float32), classes, rng.uniform(0.05, 1, len(classes)).astype(np.float32)))
    return preds


def test_perfect_rotated_away_and_empty():
    truths = synthetic_truth()
    perfect = rotated_map(as_predictions(truths), truths)
    assert perfect["map50_95"] == pytest.approx(PERFECT) and perfect["map50"] == pytest.approx(PERFECT)
    turned = rotated_map(as_predictions(truths, turn=0.35), truths)
    assert turned["map50_95"] < 0.5 * perfect["map50_95"]
    assert rotated_map(as_predictions(truths, turn=np.pi), truths)["map50_95"] == pytest.approx(PERFECT)  # same boxes
    noisy = rotated_map(as_predictions(truths, jitter=1.0, extra=3), truths)
    assert 0 < noisy["map50_95"] < noisy["map50"] < 1
    nothing = [ImageBoxes(np.zeros((0, 5), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(truths)
    assert rotated_map(nothing, truths)["map50_95"] == 0.0
    empty_truth = [ImageBoxes.empty()] * 3
    assert rotated_map(as_predictions(empty_truth), empty_truth)["map50_95"] == 0.0
    assert rotated_map(as_predictions(truths, extra=2)[:3], empty_truth)["objects"] == 0


def test_each_truth_is_claimed_once():
    truth = ImageBoxes(np.array([[100, 100, 60, 20, 0.2]], np.float32), np.array([0]))
    pred = ImageBoxes(np.array([[100, 100, 60, 20, 0.2]] * 2, np.float32), np.array([0, 0]), np.array([0.9, 0.8]))
    tp = match_image(pred, truth)
    assert tp[0].all() and not tp[1].any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_numbers_as_ultralytics(seed):
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.models.yolo.obb.val import OBBValidator
    from ultralytics.utils.metrics import ap_per_class

    truths = synthetic_truth(seed, images=8)
    preds = as_predictions(truths, seed=seed + 10, jitter=1.5, extra=4)
    validator = OBBValidator()
    validator.iouv, validator.niou = torch.linspace(0.5, 0.95, 10), 10
    tps, confs, classes = [], [], []
    for p, t in zip(preds, truths):
        order = np.argsort(-p.scores, kind="stable")
        pred = {"cls": torch.from_numpy(p.class_ids[order].astype(np.float32)),
                "bboxes": torch.from_numpy(p.xywhr[order]), "conf": torch.from_numpy(p.scores[order])}
        batch = {"cls": torch.from_numpy(t.class_ids.astype(np.float32)), "bboxes": torch.from_numpy(t.xywhr)}
        tps.append(validator._process_batch(pred, batch)["tp"])
        confs.append(p.scores[order])
        classes.append(p.class_ids[order].astype(np.float32))
    target = np.concatenate([t.class_ids for t in truths]).astype(np.float32)
    ap = ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(classes), target)[5]
    ours = rotated_map(preds, truths)
    assert ours["map50_95"] == pytest.approx(float(ap.mean()), abs=1e-9)
    assert ours["map50"] == pytest.approx(float(ap[:, 0].mean()), abs=1e-9)
    assert 0.05 < ours["map50_95"] < 0.95  # a real test: neither trivial end


def write_labels(folder, name: str, truth: ImageBoxes, hw: tuple[int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    corners = rotated_corners(truth.xywhr) / np.array([hw[1], hw[0]], np.float32)
    lines = [f"{c} " + " ".join(f"{v:.6f}" for v in quad.reshape(-1)) for c, quad in zip(truth.class_ids, corners)]
    (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def test_label_files_round_trip(tmp_path):
    truth = synthetic_truth(3, images=1)[0]
    write_labels(tmp_path, "a", truth, (600, 640))
    back = read_labels(tmp_path / "a.txt", (600, 640))
    assert np.array_equal(back.class_ids, truth.class_ids)
    assert rotated_map([ImageBoxes(truth.xywhr, truth.class_ids, np.ones(len(truth), np.float32))], [back])["map50_95"] == pytest.approx(PERFECT)
    assert (back.xywhr[:, 2] >= back.xywhr[:, 3]).all()  # the long side first, as Ultralytics' labels
    assert read_labels(tmp_path / "missing.txt", (10, 10)).xywhr.shape == (0, 5)
    assert polygons_to_xywhr(np.zeros((0, 4, 2))).shape == (0, 5)


def test_command_line(tiny_onnx, tiny_detect_onnx, pictures, tmp_path, capsys):
    import cv2

    from runtime import Predictor

    model = tiny_onnx("obb")
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    for p in pictures:
        cv2.imwrite(str(images / p.name), cv2.imread(str(p)))
    for p in pictures:  # the model's own confident detections as labels: it must score high on them
        r = Predictor(model, conf=0.5).predict(str(p))[0]
        write_labels(tmp_path / "data" / "labels", p.stem, ImageBoxes(r.xywhr, r.class_ids), r.orig_hw)
    assert main(["--model", str(model), "--images", str(images), "--out", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "mAP50-95" in out and (tmp_path / "rows.json").is_file()
    assert main(["--fidelity-to", str(model), "--model", str(model), "--images", str(images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(f" {PERFECT:.4f} " in line for line in lines[1:])
    (tmp_path / "data" / "labels" / f"{pictures[0].stem}.txt").write_text("0 0.1 0.2\n")
    assert main(["--model", str(model), "--images", str(images)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{pictures[0].stem}.txt:1" in err
    assert main(["--model", str(tiny_detect_onnx), "--images", str(images)]) == 2
    assert "not an oriented-box" in capsys.readouterr().err
