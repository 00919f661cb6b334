"""tools/eval_coco.py and tools/coco_data.py: scoring, category mapping, RLE masks, CLI end to end and its errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tools.coco_data import CategoryMismatchError, category_map, load_annotations, select_images
from tools.eval_coco import coco_ground_truth, format_table, main, parse_table, score_results

cv2 = pytest.importorskip("cv2")
pytest.importorskip("pycocotools")

SHARED_ANN = "coco/annotations/instances_val2017_subset.json"
SHARED_IMAGES = "coco/val2017"


# -------------------------------------------------------------------------------------------------------- helpers
def synthetic_coco(folder: Path, names: list[str], num_images: int = 3, hw: tuple[int, int] = (96, 128),
                   write_images: bool = True) -> Path:
    """A tiny COCO instances file (polygons, one RLE crowd region) and its noise images; returns the JSON path."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = hw
    images, anns = [], []
    for i in range(num_images):
        image_id = 10 + i
        name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        if write_images:
            cv2.imwrite(str(folder / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for k in range(2):
            x, y = 10 + 30 * k + 3 * i, 8 + 20 * k
            bw, bh = 25 + 5 * k, 30 + 4 * i
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1 + (i + k) % len(names),
                         "bbox": [x, y, bw, bh], "area": float(bw * bh), "iscrowd": 0,
                         "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x + bw / 2, y + bh + 0.0, x, y + bh]]})
    crowd = np.zeros((h, w), np.uint8, order="F")
    crowd[60:90, 90:120] = 1
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(crowd))
    anns.append({"id": len(anns) + 1, "image_id": 10, "category_id": 1, "bbox": [90, 60, 30, 30], "area": 900.0,
                 "iscrowd": 1, "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")}})
    dataset = {"images": images, "annotations": anns,
               "categories": [{"id": k + 1, "name": n, "supercategory": "x"} for k, n in enumerate(names)]}
    path = folder / "instances.json"
    path.write_text(json.dumps(dataset))
    return path


def gt_as_results(ann_path: Path) -> list[dict]:
    """Every non-crowd annotation as a detection with score 1: bbox and its segmentation as compressed RLE."""
    gt = coco_ground_truth(load_annotations(ann_path))
    records = []
    for ann in gt.dataset["annotations"]:
        if ann["iscrowd"]:
            continue
        rle = gt.annToRLE(ann)
        counts = rle["counts"]
        records.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": list(ann["bbox"]),
                        "score": 1.0, "segmentation": {"size": list(rle["size"]),
                                                       "counts": counts.decode() if isinstance(counts, bytes) else counts}})
    return records


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


NUMERIC_NAMES = [str(i) for i in range(80)]  # class names of the tiny and random-init test models


# -------------------------------------------------------------------------------------------------------- scoring
def test_ground_truth_as_results_scores_one(tmp_path):
    ann = synthetic_coco(tmp_path / "data", ["person", "car", "dog"], write_images=False)
    results_file = tmp_path / "gt_results.json"
    results_file.write_text(json.dumps(gt_as_results(ann)))
    records = json.loads(results_file.read_text())
    annotations = load_annotations(ann)
    ids = [img["id"] for img in annotations.images]
    scores = score_results(coco_ground_truth(annotations), records, ids, ("bbox", "segm"))
    for iou_type in ("bbox", "segm"):
        assert scores[iou_type].map50_95 == pytest.approx(1.0), iou_type
        assert scores[iou_type].map50 == pytest.approx(1.0), iou_type


def test_shared_ground_truth_as_results_scores_one(shared_file, tmp_path):
    ann = shared_file(SHARED_ANN)
    results_file = tmp_path / "gt_results.json"
    results_file.write_text(json.dumps(gt_as_results(ann)))
    annotations = load_annotations(ann)
    ids = [img["id"] for img in annotations.images]
    scores = score_results(annotations, json.loads(results_file.read_text()), ids, ("bbox", "segm"))
    assert scores["bbox"].map50_95 == pytest.approx(1.0)
    assert scores["segm"].map50_95 == pytest.approx(1.0)


def test_scoring_is_restricted_to_the_evaluated_images(tmp_path):
    ann = synthetic_coco(tmp_path / "data", ["person", "car", "dog"], write_images=False)
    records = [r for r in gt_as_results(ann) if r["image_id"] == 10]  # perfect on image 10, nothing elsewhere
    annotations = load_annotations(ann)
    assert score_results(annotations, records, [10])["bbox"].map50_95 == pytest.approx(1.0)
    assert score_results(annotations, records, [10, 11, 12])["bbox"].map50_95 < 0.9
    assert score_results(annotations, [], [10])["bbox"].map50_95 == pytest.approx(0.0)  # no detections at all
    with pytest.raises(ValueError, match="outside the evaluated set"):
        score_results(annotations, records, [11])


def test_scoring_leaves_the_records_untouched(tmp_path):
    ann = synthetic_coco(tmp_path / "data", ["person", "car", "dog"], write_images=False)
    records = gt_as_results(ann)
    box_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in records]
    before = json.dumps([records, box_only])
    score_results(load_annotations(ann), records, None, ("bbox", "segm"))
    score_results(load_annotations(ann), box_only, None, ("bbox",))
    assert json.dumps([records, box_only]) == before


# ------------------------------------------------------------------------------------------------ category mapping
COCO_CATS = [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"},
             {"id": 18, "name": "dog"}, {"id": 10, "name": "traffic light"}]


@pytest.mark.parametrize("names, expected", [
    (["person", "bicycle", "car", "dog", "traffic light"], [1, 2, 3, 18, 10]),
    (["dog", "person"], [18, 1]),  # subset, other order
    (["traffic light"], [10]),
    ({1: "person", 0: "car"}, [3, 1]),  # {index: name} like Ultralytics' model.names
    (["Traffic  Light", " DOG"], [10, 18]),  # case and spacing ignored
], ids=["same", "subset-reordered", "single", "dict", "case-spacing"])
def test_category_map(names, expected):
    assert category_map(names, COCO_CATS) == expected


def test_category_map_lists_unknown_names():
    with pytest.raises(CategoryMismatchError) as info:
        category_map(["person", "motorbike", "car", "aeroplane"], COCO_CATS, model_label="m.onnx")
    message = str(info.value)
    assert "m.onnx" in message and "motorbike" in message and "aeroplane" in message and "2 of 4" in message
    assert "person" not in message.split(":", 2)[-1]


def test_category_map_no_match_names_the_model_and_both_lists():
    with pytest.raises(CategoryMismatchError) as info:
        category_map(["0", "1", "2"], COCO_CATS, model_label="random.onnx")
    message = str(info.value)
    assert "random.onnx" in message and "none" in message
    assert "model: 0, 1, 2" in message and "person" in message and "\n" not in message


def test_category_map_rejects_two_classes_on_one_category():
    with pytest.raises(CategoryMismatchError, match="same category"):
        category_map(["dog", "Dog"], COCO_CATS)


# ---------------------------------------------------------------------------------------------------- RLE masks
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode on numpy 2
def test_predictor_rle_masks_decode_to_retina_bitmaps(tiny_seg_onnx):
    from pycocotools import mask as mask_utils

    from runtime import Predictor

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), rng.integers(0, 256, (301, 177, 3), dtype=np.uint8)]
    kwargs = dict(conf=1e-6, iou=0.7, max_det=50)
    bitmaps = Predictor(tiny_seg_onnx, retina_masks=True, **kwargs).predict(images)
    rles = Predictor(tiny_seg_onnx, rle_masks=True, **kwargs).predict(images)
    total = 0
    for image, bm, rl in zip(images, bitmaps, rles):
        assert len(bm) == len(rl)
        np.testing.assert_array_equal(bm.xyxy, rl.xyxy)
        np.testing.assert_array_equal(bm.class_ids, rl.class_ids)
        assert rl.masks_rle is not None and bm.masks is not None
        total += len(rl)
        if not len(rl):
            continue
        assert all(list(r["size"]) == list(image.shape[:2]) for r in rl.masks_rle)
        decoded = mask_utils.decode(rl.masks_rle).transpose(2, 0, 1).astype(bool)
        np.testing.assert_array_equal(decoded, bm.masks)
    assert total > 0, "the tiny model gave no detections; lower conf"


# ----------------------------------------------------------------------------------------------- CLI end to end
@pytest.mark.shared
def test_cli_end_to_end_table_matches_report(shared_file, shared_seg_onnx, shared_seg_pt, tmp_path):
    pytest.importorskip("ultralytics")
    ann, images = shared_file(SHARED_ANN), shared_file(SHARED_ANN).parents[1] / "val2017"
    report_path, results_dir = tmp_path / "report.json", tmp_path / "results"
    code, out, err = run_cli(["--model", shared_seg_onnx, "--images", images, "--ann", ann, "--limit", 4,
                              "--reference-pt", shared_seg_pt, "--out", report_path, "--save-results", results_dir,
                              "--threads", 2])
    assert code == 0, err
    report = json.loads(report_path.read_text())
    total = len(load_annotations(ann).images)
    assert f"evaluated 4 of {total} annotated images" in out
    assert report["statement"] in out and report["images"]["evaluated"] == 4
    assert report["images"]["image_ids"] == sorted(img["id"] for img in load_annotations(ann).images)[:4]

    table = parse_table(out)
    rows = report["rows"]
    assert [r["model"] for r in table] == [r["label"] for r in rows] == [shared_seg_onnx.name,
                                                                         f"{shared_seg_pt.name} (ultralytics)"]
    for printed, row in zip(table, rows):
        for group in ("box", "mask"):
            for key in ("mAP50-95", "mAP50"):
                assert float(printed[f"{group} {key}"]) == pytest.approx(row[group][key], abs=5e-5)
                assert 0.0 <= row[group][key] <= 1.0
        assert float(printed["images/s"]) == pytest.approx(row["images_per_s"], abs=5e-3)
    delta = rows[1]["delta"]
    assert float(table[1]["Δ box mAP50-95"]) == pytest.approx(delta["box mAP50-95"], abs=5e-5)
    assert delta["box mAP50-95"] == pytest.approx(rows[1]["box"]["mAP50-95"] - rows[0]["box"]["mAP50-95"])
    assert table[0]["Δ box mAP50-95"] == ""

    ours, ref = rows
    assert ours["model"]["sha256"] and len(ours["model"]["sha256"]) == 64
    assert ref["model"]["rect"] is False and ref["model"]["imgsz"] == [640, 640]  # fixed 640 export: full square
    assert report["settings"]["conf"] == 0.001 and report["settings"]["iou"] == 0.7
    for row in rows:
        saved = json.loads(Path(row["results_file"]).read_text())
        assert len(saved) == row["detections"] > 0
        assert {r["image_id"] for r in saved} <= set(report["images"]["image_ids"])
        assert isinstance(saved[0]["segmentation"]["counts"], str)


def test_cli_skip_missing_and_limit_are_stated(tiny_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES, num_images=4)
    (data / "000000000011.jpg").unlink()
    report_path = tmp_path / "r.json"
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann, "--skip-missing",
                              "--out", report_path, "--no-progress"])
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert "evaluated 3 of 4 annotated images (1 missing on disk skipped)" in out
    assert report["images"]["image_ids"] == [10, 12, 13] and report["images"]["missing_files"] == ["000000000011.jpg"]
    assert report["rows"][0]["mask"] is None and len(parse_table(out)) == 1

    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann, "--skip-missing",
                              "--limit", 2, "--out", report_path, "--no-progress"])
    assert code == 0, err
    assert "evaluated 2 of 4 annotated images" in out and "--limit 2" in out
    assert json.loads(report_path.read_text())["images"]["image_ids"] == [10, 12]


# ------------------------------------------------------------------------------------------------------ CLI errors
def _assert_failed(code: int, out: str, err: str, *needles: str, outputs: tuple[Path, ...] = ()) -> None:
    assert code == 2, out + err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    for path in outputs:
        assert not path.exists(), f"{path} was written"


def _outputs(tmp_path: Path) -> tuple[list[str], tuple[Path, Path]]:
    report, results = tmp_path / "out" / "report.json", tmp_path / "out" / "results"
    return ["--out", str(report), "--save-results", str(results), "--no-progress"], (report, results)


def test_cli_missing_images_are_listed(tiny_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES, num_images=14)
    for i in range(1, 13):
        (data / f"{10 + i:012d}.jpg").unlink()
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, "12 of 14", "000000000011.jpg", "000000000020.jpg", "and 2 more",
                   "--skip-missing", outputs=outputs)
    assert "000000000021.jpg" not in err  # at most 10 names listed


def test_cli_limit_only_needs_the_selected_images(tiny_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES, num_images=3)
    (data / "000000000012.jpg").unlink()
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann, "--limit", 2,
                              "--no-progress"])
    assert code == 0, err
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann, "--limit", 3,
                              "--no-progress"])
    _assert_failed(code, out, err, "1 of 3", "000000000012.jpg")


def test_cli_empty_image_folder(tiny_detect_onnx, tmp_path):
    ann = synthetic_coco(tmp_path / "data", NUMERIC_NAMES, write_images=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", empty, "--ann", ann, *extra])
    _assert_failed(code, out, err, str(empty), "no images", outputs=outputs)


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a COCO instances file"),
    ('{"images": [], "annotations": []}', "'categories'"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "0"}]}', "lacks 'file_name'"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
], ids=["missing", "bad-json", "not-object", "no-categories", "image-entry", "binary"])
def test_cli_unreadable_annotation_file(tiny_detect_onnx, tmp_path, content, needle):
    data = tmp_path / "data"
    synthetic_coco(data, NUMERIC_NAMES)
    ann = tmp_path / "bad.json"
    if isinstance(content, str):
        ann.write_text(content)
    elif isinstance(content, bytes):
        ann.write_bytes(content)
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, str(ann), needle, outputs=outputs)


def test_cli_mismatched_class_names(tiny_detect_onnx, tmp_path):
    data = tmp_path / "data"
    names = NUMERIC_NAMES[:78] + ["cat", "dog"]  # the model's classes "78" and "79" have no category
    ann = synthetic_coco(data, names)
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, tiny_detect_onnx.name, "2 of 80", "78, 79", outputs=outputs)


def test_cli_no_class_name_matches(tiny_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, ["person", "car", "dog"])
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, tiny_detect_onnx.name, "none", "person", outputs=outputs)


def test_cli_missing_model_file(tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES)
    extra, outputs = _outputs(tmp_path)
    missing = tmp_path / "nope.onnx"
    code, out, err = run_cli(["--model", missing, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, str(missing), "not found", outputs=outputs)


def test_cli_missing_reference_checkpoint(tiny_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES)
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann,
                              "--reference-pt", tmp_path / "nope.pt", *extra])
    _assert_failed(code, out, err, "nope.pt", "not found", outputs=outputs)


# ------------------------------------------------------------------------------------------------------------ table
def test_table_deltas_and_missing_mask_columns():
    rows = [
        {"label": "a.onnx", "box": {"mAP50-95": 0.37, "mAP50": 0.5}, "mask": {"mAP50-95": 0.3, "mAP50": 0.49},
         "images_per_s": 10.0, "delta": None},
        {"label": "b.onnx", "box": {"mAP50-95": 0.36, "mAP50": 0.52}, "mask": None, "images_per_s": 12.5,
         "delta": {"box mAP50-95": -0.01, "box mAP50": 0.02, "mask mAP50-95": None, "mask mAP50": None,
                   "images/s %": 25.0}},
    ]
    parsed = parse_table(format_table(rows))
    assert parsed[0]["box mAP50-95"] == "0.3700" and parsed[0]["Δ box mAP50"] == ""
    assert parsed[1]["mask mAP50"] == "-" and parsed[1]["Δ box mAP50-95"] == "-0.0100"
    assert parsed[1]["Δ box mAP50"] == "+0.0200" and parsed[1]["Δ images/s"] == "+25.0%"


def test_select_images_orders_by_id_and_limits(tmp_path):
    data = tmp_path / "data"
    ann = load_annotations(synthetic_coco(data, NUMERIC_NAMES, num_images=5))
    sel = select_images(ann, data, limit=3)
    assert sel.image_ids == [10, 11, 12] and sel.statement().startswith("evaluated 3 of 5 annotated images")


def test_cli_out_is_a_folder(tiny_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES)
    code, out, err = run_cli(["--model", tiny_detect_onnx, "--images", data, "--ann", ann, "--out", tmp_path])
    _assert_failed(code, out, err, "--out", "folder")


# ---------------------------------------------------------------------------------------------- keypoints (OKS)
KPT_NAMES = [f"k{i}" for i in range(17)]


def synthetic_keypoints(folder: Path | None = None, hw: tuple[int, int] = (120, 160)) -> dict:
    """A tiny COCO person_keypoints dataset: image 1 two people, image 2 one person (some keypoints unlabelled)
    plus a crowd region, image 3 nobody. Writes noise images and ``keypoints.json`` into ``folder`` when given."""
    rng = np.random.default_rng(3)
    h, w = hw
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w} for i in (1, 2, 3)]
    anns = []
    for image_id, (x0, y0, bw, bh) in ((1, (10, 10, 50, 90)), (1, (90, 15, 45, 80)), (2, (40, 20, 60, 95))):
        xs = rng.uniform(x0, x0 + bw, 17)
        ys = rng.uniform(y0, y0 + bh, 17)
        vis = np.full(17, 2)
        if image_id == 2:
            vis[[0, 3, 9]] = 0  # unlabelled points are (0, 0, 0) in COCO
        kpts = np.stack([np.where(vis > 0, xs, 0), np.where(vis > 0, ys, 0), vis], axis=1).reshape(-1)
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "bbox": [x0, y0, bw, bh],
                     "area": 0.6 * bw * bh, "iscrowd": 0, "keypoints": [round(float(v), 2) for v in kpts],
                     "num_keypoints": int((vis > 0).sum())})
    anns.append({"id": len(anns) + 1, "image_id": 2, "category_id": 1, "bbox": [110, 60, 40, 50], "area": 2000.0,
                 "iscrowd": 1, "keypoints": [0] * 51, "num_keypoints": 0})
    dataset = {"images": images, "annotations": anns,
               "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": KPT_NAMES}]}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for img in images:
            cv2.imwrite(str(folder / img["file_name"]), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        (folder / "keypoints.json").write_text(json.dumps(dataset))
    return dataset


def keypoint_results(dataset: dict, shift_px: float = 0.0, score: float = 0.9) -> list[dict]:
    """Every non-crowd person as a detection: its box, and its keypoints moved right by ``shift_px``."""
    records = []
    for ann in dataset["annotations"]:
        if ann["iscrowd"]:
            continue
        kpts = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kpts[:, 0] += shift_px
        kpts[:, 2] = 0.9  # a model's visibility score; COCOeval ignores it
        records.append({"image_id": ann["image_id"], "category_id": 1, "bbox": list(ann["bbox"]), "score": score,
                        "keypoints": kpts.reshape(-1).tolist()})
    return records


def test_oks_perfect_keypoints_score_one():
    dataset = synthetic_keypoints()
    scores = score_results(coco_ground_truth(dataset), keypoint_results(dataset), [1, 2, 3], ("bbox", "keypoints"))
    assert scores["keypoints"].map50_95 == pytest.approx(1.0)
    assert scores["keypoints"].map50 == pytest.approx(1.0)
    assert scores["bbox"].map50_95 == pytest.approx(1.0)
    assert list(scores["keypoints"].as_dict())[:2] == ["mAP50-95", "mAP50"] and len(scores["keypoints"].stats) == 10


def test_oks_shifted_keypoints_score_lower():
    dataset = synthetic_keypoints()
    gt = coco_ground_truth(dataset)
    maps = [score_results(gt, keypoint_results(dataset, shift), [1, 2, 3], ("bbox", "keypoints"))
            for shift in (0.0, 2.0, 4.0, 8.0)]
    pose = [m["keypoints"].map50_95 for m in maps]
    assert pose[0] == pytest.approx(1.0)
    assert pose[0] > pose[1] > pose[2] > pose[3] >= 0.0, pose
    assert all(m["bbox"].map50_95 == pytest.approx(1.0) for m in maps)  # the boxes did not move


def test_oks_empty_image_and_no_detections_do_not_crash():
    dataset = synthetic_keypoints()
    gt = coco_ground_truth(dataset)
    stray = {"image_id": 3, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.95, "keypoints": [10.0, 10.0, 1.0] * 17}
    for records in ([], [stray]):  # image 3 holds nobody: nothing to average, whether or not something is found
        assert score_results(gt, records, [3], ("bbox", "keypoints"))["keypoints"].map50_95 == -1.0
    scores = score_results(gt, keypoint_results(dataset) + [stray], [1, 2, 3], ("bbox", "keypoints"))
    assert 0.0 < scores["keypoints"].map50_95 < 1.0  # a confident false positive on the empty image costs
    assert score_results(gt, [], [1, 2, 3], ("bbox", "keypoints"))["keypoints"].map50_95 == pytest.approx(0.0)


def test_oks_uses_coco_sigmas():
    from pycocotools.cocoeval import Params

    from tools.coco_score import COCO_KPT_SIGMAS, oks_sigmas

    np.testing.assert_array_equal(oks_sigmas(17), Params(iouType="keypoints").kpt_oks_sigmas)
    np.testing.assert_array_equal(COCO_KPT_SIGMAS, Params(iouType="keypoints").kpt_oks_sigmas)
    np.testing.assert_allclose(oks_sigmas(5), np.full(5, 0.2))


def test_oks_wrong_keypoint_count_is_a_clear_error():
    dataset = synthetic_keypoints()
    records = keypoint_results(dataset)
    for r in records:
        r["keypoints"] = r["keypoints"][:-3]
    with pytest.raises(ValueError, match="keypoint"):
        score_results(coco_ground_truth(dataset), records, None, ("keypoints",))


@pytest.mark.parametrize("iou_type, coco_max", [("bbox", 100), ("keypoints", 20)], ids=["bbox", "keypoints"])
def test_max_dets_summary_matches_cocoeval_at_its_own_cap(iou_type, coco_max):
    dataset = synthetic_keypoints()
    gt = coco_ground_truth(dataset)
    rng = np.random.default_rng(0)
    records = keypoint_results(dataset, 2.0)
    for k in range(30):  # noisy extra detections so that precision and recall vary
        x, y = rng.uniform(0, 100, 2)
        records.append({"image_id": int(rng.integers(1, 4)), "category_id": 1, "bbox": [x, y, 30.0, 40.0],
                        "score": float(rng.uniform(0, 1)), "keypoints": [x + 5, y + 5, 1.0] * 17})
    default = score_results(gt, records, [1, 2, 3], (iou_type,))[iou_type]
    ours = score_results(gt, records, [1, 2, 3], (iou_type,), max_dets=coco_max)[iou_type]
    np.testing.assert_allclose(ours.stats, default.stats, atol=1e-12)


def test_keypoint_annotation_checks(tmp_path):
    from tools.coco_data import AnnotationError, keypoint_count, single_instance_category

    data = tmp_path / "data"
    synthetic_keypoints(data)
    ann = load_annotations(data / "keypoints.json")
    assert keypoint_count(ann, [1]) == 17
    assert single_instance_category(ann) is None  # image 1 holds two people, image 3 none
    assert single_instance_category(ann, [2]) == "person"  # the crowd region does not count
    boxes_only = load_annotations(synthetic_coco(tmp_path / "inst", ["person", "car"], write_images=False))
    with pytest.raises(AnnotationError, match="not a COCO keypoints file for m.onnx"):
        keypoint_count(boxes_only, [1], model_label="m.onnx")
    bad = synthetic_keypoints()
    bad["annotations"][0]["keypoints"] = [1, 2]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(AnnotationError, match="bad.json.*keypoints"):
        load_annotations(tmp_path / "bad.json")


def _single_person_keypoints(folder: Path) -> Path:
    """synthetic_keypoints reduced to one person per image (images 1 and 2): a single-person set."""
    dataset = synthetic_keypoints(folder)
    dataset["images"] = dataset["images"][:2]
    dataset["annotations"] = [a for a in dataset["annotations"] if a["id"] != 2]
    path = folder / "single.json"
    path.write_text(json.dumps(dataset))
    return path


def test_cli_pose_model_scores_box_and_keypoints(tiny_pose_onnx, tmp_path):
    data = tmp_path / "data"
    ann = _single_person_keypoints(data)
    report_path, results_dir = tmp_path / "r.json", tmp_path / "res"
    code, out, err = run_cli(["--model", tiny_pose_onnx, "--images", data, "--ann", ann, "--out", report_path,
                              "--save-results", results_dir, "--no-progress"])
    assert code == 0, err
    assert "single-person images only" in out and "figures run higher than on full val2017" in out
    assert "OKS with COCO's 17 sigmas" in out
    report = json.loads(report_path.read_text())
    row = report["rows"][0]
    assert row["task"] == "pose" and row["mask"] is None
    assert 0.0 <= row["box"]["mAP50-95"] <= 1.0 and 0.0 <= row["pose"]["mAP50-95"] <= 1.0
    assert report["notes"] and report["settings"]["keypoints"]["num_keypoints"] == 17
    table = parse_table(out)
    assert "pose mAP50-95" in table[0] and "mask mAP50-95" not in table[0]
    assert float(table[0]["pose mAP50-95"]) == pytest.approx(row["pose"]["mAP50-95"], abs=5e-5)
    saved = json.loads(Path(row["results_file"]).read_text())
    assert saved and all(len(r["keypoints"]) == 51 and set(r) >= {"bbox", "score", "image_id"} for r in saved)

    code, out, err = run_cli(["--model", tiny_pose_onnx, "--images", data, "--ann", data / "keypoints.json",
                              "--no-progress"])
    assert code == 0, err
    assert "single-person" not in out  # image 1 holds two people


def test_cli_pose_model_against_a_boxes_only_file(tiny_pose_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, ["person", "car"])
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", tiny_pose_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, str(ann), "not a COCO keypoints file", tiny_pose_onnx.name, outputs=outputs)


def test_cli_pose_model_keypoint_count_mismatch(tiny_pose_onnx, tmp_path):
    data = tmp_path / "data"
    dataset = synthetic_keypoints(data)
    for a in dataset["annotations"]:
        a["keypoints"] = a["keypoints"][:15]
    ann = data / "five.json"
    ann.write_text(json.dumps(dataset))
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", tiny_pose_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, "17 keypoints", "annotates 5", outputs=outputs)


# ------------------------------------------------------------------------------------------- engine / precision
class _FakePredictor:
    calls: list[dict] = []

    def __init__(self, model, **kwargs):
        if "engine" in kwargs and kwargs["engine"] == "unsupported":
            raise TypeError("Predictor.__init__() got an unexpected keyword argument 'engine'")
        type(self).calls.append(kwargs)


def test_make_predictor_passes_engine_and_precision_only_when_given(monkeypatch):
    import runtime

    from tools.coco_data import EvalError
    from tools.eval_coco import make_predictor

    monkeypatch.setattr(runtime, "Predictor", _FakePredictor)
    _FakePredictor.calls = []
    make_predictor("m.onnx")
    make_predictor("m.onnx", engine="openvino", precision="int8")
    assert "engine" not in _FakePredictor.calls[0] and "precision" not in _FakePredictor.calls[0]
    assert _FakePredictor.calls[1]["engine"] == "openvino" and _FakePredictor.calls[1]["precision"] == "int8"
    assert _FakePredictor.calls[1]["conf"] == 0.001 and _FakePredictor.calls[1]["rle_masks"] is True
    with pytest.raises(EvalError, match="--engine is not supported"):
        make_predictor("m.onnx", engine="unsupported")


# ------------------------------------------------------------------------------------ shared: pose, ours = theirs
SHARED_POSE_ANN = "coco/annotations/person_keypoints_val2017_single_dev.json"


@pytest.mark.shared
@pytest.mark.slow
def test_shared_pose_eval_matches_ultralytics_predict(shared_file, export_onnx, tmp_path):
    """Float yolo11n-pose on the 495 single-person val2017 images: our row equals Ultralytics' own predict."""
    pytest.importorskip("ultralytics")
    ann = shared_file(SHARED_POSE_ANN)
    pt = shared_file("models/yolo11n-pose.pt")
    images = ann.parents[1] / "val2017-pose"
    onnx_path = export_onnx(pt, imgsz=640)
    report_path = tmp_path / "pose.json"
    code, out, err = run_cli(["--model", onnx_path, "--images", images, "--ann", ann, "--reference-pt", pt,
                              "--out", report_path, "--threads", 2, "--no-progress"])
    assert code == 0, err
    assert "evaluated 495 of 495 annotated images" in out and "single-person images only" in out
    ours, theirs = json.loads(report_path.read_text())["rows"]
    assert theirs["kind"] == "ultralytics"
    for group in ("box", "pose"):
        assert ours[group]["mAP50-95"] == pytest.approx(theirs[group]["mAP50-95"], abs=0.003), group
        assert ours[group]["mAP50"] == pytest.approx(theirs[group]["mAP50"], abs=0.003), group
    assert 0.70 < ours["box"]["mAP50-95"] < 0.83 and 0.50 < ours["pose"]["mAP50-95"] < 0.66  # near 0.767 / 0.583
