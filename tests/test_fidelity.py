"""tools/fidelity.py and eval_coco --fidelity-to: label-free scores against a reference model's own detections."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tools.fidelity import FidelityError, label_free_scores, pseudo_ground_truth, score_fidelity

pytest.importorskip("pycocotools")

GT_CONF = 0.05  # the random-init test models score low: 0.25 would leave them without ground truth


# -------------------------------------------------------------------------------------------------------- helpers
def run_cli(argv: list) -> tuple[int, str, str]:
    from tools.eval_coco import main

    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """Ultralytics' two bundled photos (real scenes: the random models' scores vary on them)."""
    pytest.importorskip("ultralytics")
    from ultralytics.utils import ASSETS

    folder = tmp_path_factory.mktemp("photos")
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copy(Path(ASSETS) / name, folder / name)
    return folder


def perturbed_copy(onnx_path: Path, out: Path, rel_noise: float, seed: int = 0) -> Path:
    """``onnx_path`` with Gaussian noise of ``rel_noise`` x each conv weight's spread (a stand-in for quantization)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim == 4:
            noisy = w + rng.normal(0.0, rel_noise * float(w.std()), w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def noisy_pose_onnx(random_pose_onnx, tmp_path_factory) -> Path:
    return perturbed_copy(random_pose_onnx, tmp_path_factory.mktemp("noisy") / "pose-noisy.onnx", 0.01)


def _images(n: int = 2) -> list[dict]:
    return [{"id": i + 1, "file_name": f"{i}.jpg", "height": 100, "width": 120} for i in range(n)]


def _pose_record(image_id: int, x: float, score: float, vis: list[float]) -> dict:
    kpts = np.column_stack([x + np.arange(17.0), 20 + np.arange(17.0), vis]).reshape(-1).tolist()
    return {"image_id": image_id, "category_id": 1, "bbox": [x, 10.0, 30.0, 60.0], "score": score, "keypoints": kpts}


# -------------------------------------------------------------------------------------------- pseudo ground truth
def test_pseudo_ground_truth_from_pose_records():
    vis = [0.9] * 10 + [0.2] * 7
    records = [_pose_record(1, 5.0, 0.8, vis), _pose_record(1, 60.0, 0.1, vis), _pose_record(2, 20.0, 0.3, [0.1] * 17)]
    pgt = pseudo_ground_truth(records, _images(), ["person"], task="pose", gt_conf=0.25)
    anns = pgt.datasets["keypoints"]["annotations"]
    assert pgt.num_objects == 2 and [a["image_id"] for a in anns] == [1, 2]  # the 0.1 detection is not an object
    kpts = np.asarray(anns[0]["keypoints"]).reshape(-1, 3)
    np.testing.assert_array_equal(kpts[:10, 2], 2)
    np.testing.assert_array_equal(kpts[10:], 0)
    np.testing.assert_allclose(kpts[:10, 0], 5.0 + np.arange(10))
    assert anns[0]["num_keypoints"] == 10 and anns[1]["num_keypoints"] == 0
    assert anns[0]["area"] == pytest.approx(0.53 * 30 * 60) and anns[0]["iscrowd"] == 0
    assert pgt.iou_types == ("bbox", "keypoints") and pgt.category_ids == [1] and pgt.num_keypoints == 17


def test_pseudo_ground_truth_leaves_empty_masks_out_of_the_mask_scoring():
    from pycocotools import mask as mask_utils

    full = np.zeros((100, 120), np.uint8, order="F")
    full[10:40, 10:50] = 1
    rles = [mask_utils.encode(np.asfortranarray(m)) for m in (full, np.zeros_like(full))]
    records = [{"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 30.0], "score": 0.9,
                "segmentation": {"size": [100, 120], "counts": r["counts"].decode()}} for r in rles]
    pgt = pseudo_ground_truth(records, _images(1), ["thing"], task="segment")
    assert len(pgt.datasets["bbox"]["annotations"]) == 2 and len(pgt.datasets["segm"]["annotations"]) == 1
    assert pgt.datasets["segm"]["annotations"][0]["area"] == 1200
    scores = score_fidelity(pgt, records)  # the reference's own records: the control
    assert scores["bbox"].map50_95 == pytest.approx(1.0) and scores["segm"].map50_95 == pytest.approx(1.0)


def test_control_with_low_score_extras_scores_one_and_moved_keypoints_lower():
    vis = [0.9] * 17
    reference = [_pose_record(1, 5.0, 0.8, vis), _pose_record(2, 40.0, 0.6, vis)]
    extras = [_pose_record(1, 70.0, 0.2, vis), _pose_record(2, 0.0, 0.01, vis)]  # below gt_conf: not objects
    pgt = pseudo_ground_truth(reference + extras, _images(), ["person"], task="pose")
    control = score_fidelity(pgt, reference + extras)
    assert control["bbox"].map50_95 == pytest.approx(1.0) and control["keypoints"].map50_95 == pytest.approx(1.0)
    moved = json.loads(json.dumps(reference + extras))
    for r in moved:
        r["keypoints"][0::3] = [v + 1.5 for v in r["keypoints"][0::3]]
    shifted = score_fidelity(pgt, moved)
    assert shifted["bbox"].map50_95 == pytest.approx(1.0) and shifted["keypoints"].map50_95 < 0.95


# ---------------------------------------------------------------------------------------------- real predictors
def test_pose_model_against_itself_scores_one(random_pose_onnx, photo_dir):
    from runtime import Predictor
    from tools.eval_coco import make_predictor

    paths = sorted(photo_dir.iterdir())
    reference = Predictor(random_pose_onnx, conf=GT_CONF, iou=0.7, max_det=300)  # a user's own settings
    scores = label_free_scores(reference, make_predictor(random_pose_onnx), paths, gt_conf=GT_CONF)
    assert scores["gt_objects"] > 0 and scores["candidate_detections"] > scores["gt_objects"]
    assert scores["box"]["mAP50-95"] == pytest.approx(1.0, abs=1e-6)
    assert scores["pose"]["mAP50-95"] == pytest.approx(1.0, abs=1e-6) and scores["mask"] is None
    same = make_predictor(random_pose_onnx)
    assert label_free_scores(same, same, paths, gt_conf=GT_CONF)["pose"]["mAP50"] == pytest.approx(1.0)


def test_perturbed_pose_model_scores_lower(random_pose_onnx, noisy_pose_onnx, photo_dir, tmp_path):
    from tools.eval_coco import make_predictor

    paths = sorted(photo_dir.iterdir())
    reference = make_predictor(random_pose_onnx)
    scores = label_free_scores(reference, make_predictor(noisy_pose_onnx), paths, gt_conf=GT_CONF)
    assert 0.3 < scores["box"]["mAP50-95"] < 0.99  # 1% weight noise: about 0.88 box, 0.65 pose
    assert 0.1 < scores["pose"]["mAP50-95"] < 0.99
    worse = label_free_scores(reference, make_predictor(perturbed_copy(random_pose_onnx, tmp_path / "n.onnx", 0.02)),
                              paths, gt_conf=GT_CONF)
    assert worse["box"]["mAP50-95"] < scores["box"]["mAP50-95"]
    assert worse["pose"]["mAP50-95"] < scores["pose"]["mAP50-95"]


def test_segment_model_against_itself_scores_one(random_seg_onnx, photo_dir):
    from tools.eval_coco import make_predictor

    paths = sorted(photo_dir.iterdir())
    scores = label_free_scores(make_predictor(random_seg_onnx), make_predictor(random_seg_onnx), paths,
                               gt_conf=GT_CONF)
    assert scores["box"]["mAP50-95"] == pytest.approx(1.0, abs=1e-6)
    assert scores["mask"]["mAP50-95"] == pytest.approx(1.0, abs=1e-6) and scores["pose"] is None


def test_incompatible_models_and_no_ground_truth(random_pose_onnx, random_detect_onnx, photo_dir):
    from tools.eval_coco import make_predictor

    paths = sorted(photo_dir.iterdir())
    pose = make_predictor(random_pose_onnx)
    with pytest.raises(FidelityError, match="detect model cannot be scored against the pose model"):
        label_free_scores(pose, make_predictor(random_detect_onnx), paths)
    with pytest.raises(FidelityError, match="no object with score >= 1"):
        label_free_scores(pose, pose, paths, gt_conf=1.0)


# ------------------------------------------------------------------------------------------------------------ CLI
def test_cli_label_free_end_to_end(random_pose_onnx, noisy_pose_onnx, photo_dir, tmp_path):
    from tools.eval_coco import parse_table

    report_path, results_dir = tmp_path / "lf.json", tmp_path / "res"
    code, out, err = run_cli(["--fidelity-to", random_pose_onnx, "--model", noisy_pose_onnx, "--images", photo_dir,
                              "--gt-conf", GT_CONF, "--out", report_path, "--save-results", results_dir,
                              "--no-progress"])
    assert code == 0, err
    assert f"against {random_pose_onnx.name}'s own detections with score >= {GT_CONF:g}" in out
    table = parse_table(out)
    assert [r["model"] for r in table] == [f"{random_pose_onnx.name} (control: itself)", noisy_pose_onnx.name]
    assert table[0]["box mAP50-95"] == table[0]["pose mAP50-95"] == "1.0000"
    report = json.loads(report_path.read_text())
    assert report["mode"] == "label-free" and report["settings"]["gt_conf"] == GT_CONF
    control, noisy = report["rows"]
    assert noisy["pose"]["mAP50-95"] < 0.99
    assert noisy["delta"]["pose mAP50-95"] == pytest.approx(noisy["pose"]["mAP50-95"] - 1.0)
    gt = json.loads((results_dir / f"0-{random_pose_onnx.name}.pseudo-gt.json").read_text())
    assert len(gt["annotations"]) == report["reference"]["ground_truth_objects"] > 0
    assert [img["file_name"] for img in gt["images"]] == ["bus.jpg", "zidane.jpg"]


@pytest.mark.parametrize("extra, needle", [
    ([], "give --ann"),
    (["--ann", "x.json"], "two different evaluations"),
    (["--reference-pt", "x.pt"], "--reference-pt only applies with --ann"),
    (["--gt-conf", "0"], "--gt-conf must be within"),
    (["--model", "SELF"], "leave it out of --model"),
], ids=["neither", "both", "reference-pt", "gt-conf", "self"])
def test_cli_label_free_usage_errors(random_pose_onnx, noisy_pose_onnx, photo_dir, tmp_path, extra, needle):
    report = tmp_path / "r.json"
    base = ["--model", noisy_pose_onnx, "--images", photo_dir, "--out", report, "--no-progress"]
    if extra:  # every case but "neither" is a label-free run
        base += ["--fidelity-to", random_pose_onnx]
    extra = [random_pose_onnx if e == "SELF" else e for e in extra]
    code, out, err = run_cli(base + extra)
    assert code == 2 and needle in err and err.count("error:") == 1, err
    assert not report.exists()


def test_cli_gt_conf_needs_fidelity_to(random_pose_onnx, photo_dir, tmp_path):
    code, out, err = run_cli(["--model", random_pose_onnx, "--images", photo_dir, "--ann", tmp_path / "a.json",
                              "--gt-conf", "0.3"])
    assert code == 2 and "--gt-conf only applies with --fidelity-to" in err
