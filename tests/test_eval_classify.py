"""tools/eval_classify.py: top-1 / top-5 accuracy on a synthetic CLASS/IMAGE tree whose labels are placed at known
ranks of the model's own predictions, folder matching by name or by order, label-free agreement, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import needs_export
from runtime import Predictor
from test_classify import TINY_NAMES, picture, tiny_classifier
from tools.eval_classify import main

RANKS = (0, 0, 0, 0, 2, 2, -1, -1)  # label = the model's class of this rank (-1: last): top-1 4/8, top-5 6/8


def build_tree(root: Path, model: Path, names, folder_name=lambda k, names: names[k]) -> Path:
    """One picture per entry of RANKS, filed under the class the model ranks RANKS[k]-th for it."""
    predictor = Predictor(model)
    for k, rank in enumerate(RANKS):
        image = picture(240 + 20 * k, 320 - 10 * k, seed=100 + k)
        order = np.argsort(-predictor.predict(image)[0].probs, kind="stable")
        folder = root / folder_name(int(order[rank]), names)
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"img{k}.png"), image)
    for k, name in enumerate(names):  # every class has a folder, some empty (order matching needs all of them)
        (root / folder_name(k, names)).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("eval_cls") / "tiny-cls.onnx")


@pytest.mark.parametrize("by", ["name", "order"])
def test_accuracy_on_a_tree_with_known_ranks(tiny_cls, tmp_path, capsys, by):
    rename = (lambda k, names: names[k]) if by == "name" else (lambda k, names: f"n{k:04d}")
    tree = build_tree(tmp_path / "tree", tiny_cls, TINY_NAMES, rename)
    out = tmp_path / "eval.json"
    assert main(["--model", str(tiny_cls), "--images", str(tree), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    row = report["rows"][0]
    assert row["images"] == len(RANKS)
    assert row["top1"] == pytest.approx(4 / 8) and row["top5"] == pytest.approx(6 / 8)
    assert row["top1_agreement"] == 1.0
    assert report["matched_by"] == ("name" if by == "name" else "sorted folder order")
    assert "50.00" in capsys.readouterr().out


def test_fidelity_to_itself_and_to_another_model(tiny_cls, tmp_path, capsys):
    other = tiny_classifier(tmp_path / "other.onnx", seed=5)
    folder = tmp_path / "flat"
    folder.mkdir()
    for k in range(6):
        cv2.imwrite(str(folder / f"{k}.png"), picture(200, 300, seed=k))
    out = tmp_path / "fid.json"
    assert main(["--fidelity-to", str(tiny_cls), "--model", str(other), "--images", str(folder),
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["top1_agreement"] == 1.0 and rows[0]["top5_overlap"] == 1.0
    assert rows[1]["top5_overlap"] < 1.0 and rows[1]["images"] == 6


def test_bad_trees_are_one_line_and_exit_2(tiny_cls, tmp_path, capsys):
    loose = tmp_path / "loose"
    (loose / "cat").mkdir(parents=True)
    cv2.imwrite(str(loose / "x.png"), picture(50, 50))
    cv2.imwrite(str(loose / "cat" / "y.png"), picture(50, 50))
    unknown = tmp_path / "unknown"
    (unknown / "zebra").mkdir(parents=True)
    cv2.imwrite(str(unknown / "zebra" / "z.png"), picture(50, 50))
    for tree, message in ((loose, "outside any class folder"), (unknown, "'zebra'"),
                          (tmp_path / "missing", "image folder not found")):
        assert main(["--model", str(tiny_cls), "--images", str(tree)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


@needs_export
@pytest.mark.slow
def test_ultralytics_reference_row_agrees(tmp_path, capsys):
    from classify_models import CLASSIFY_NAMES, random_classifier_pt
    from tools.export import export_truncated

    pt = random_classifier_pt(tmp_path, "yolov8n-cls.yaml")
    onnx = export_truncated(pt, tmp_path / "cls.onnx")
    tree = build_tree(tmp_path / "tree", onnx, CLASSIFY_NAMES)
    out = tmp_path / "eval.json"
    assert main(["--model", str(onnx), "--images", str(tree), "--reference-pt", str(pt), "--out", str(out)]) == 0
    ours, theirs = json.loads(out.read_text())["rows"]
    assert theirs["model"].startswith("ultralytics ")
    assert (theirs["top1"], theirs["top5"]) == (ours["top1"], ours["top5"]) == (0.5, 0.75)
    assert theirs["top1_agreement"] == 1.0
