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


NUMERIC_NAMES = [str(i) for i in range(80)]  # class names of the random-init test models


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
def test_predictor_rle_masks_decode_to_retina_bitmaps(random_seg_onnx):
    from pycocotools import mask as mask_utils

    from runtime import Predictor

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), rng.integers(0, 256, (301, 177, 3), dtype=np.uint8)]
    kwargs = dict(conf=1e-6, iou=0.7, max_det=50)
    bitmaps = Predictor(random_seg_onnx, retina_masks=True, **kwargs).predict(images)
    rles = Predictor(random_seg_onnx, rle_masks=True, **kwargs).predict(images)
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
    assert total > 0, "the random model gave no detections; lower conf"


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


def test_cli_skip_missing_and_limit_are_stated(random_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES, num_images=4)
    (data / "000000000011.jpg").unlink()
    report_path = tmp_path / "r.json"
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann, "--skip-missing",
                              "--out", report_path, "--no-progress"])
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert "evaluated 3 of 4 annotated images (1 missing on disk skipped)" in out
    assert report["images"]["image_ids"] == [10, 12, 13] and report["images"]["missing_files"] == ["000000000011.jpg"]
    assert report["rows"][0]["mask"] is None and len(parse_table(out)) == 1

    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann, "--skip-missing",
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


def test_cli_missing_images_are_listed(random_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES, num_images=14)
    for i in range(1, 13):
        (data / f"{10 + i:012d}.jpg").unlink()
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, "12 of 14", "000000000011.jpg", "000000000020.jpg", "and 2 more",
                   "--skip-missing", outputs=outputs)
    assert "000000000021.jpg" not in err  # at most 10 names listed


def test_cli_limit_only_needs_the_selected_images(random_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES, num_images=3)
    (data / "000000000012.jpg").unlink()
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann, "--limit", 2,
                              "--no-progress"])
    assert code == 0, err
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann, "--limit", 3,
                              "--no-progress"])
    _assert_failed(code, out, err, "1 of 3", "000000000012.jpg")


def test_cli_empty_image_folder(random_detect_onnx, tmp_path):
    ann = synthetic_coco(tmp_path / "data", NUMERIC_NAMES, write_images=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", empty, "--ann", ann, *extra])
    _assert_failed(code, out, err, str(empty), "no images", outputs=outputs)


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a COCO instances file"),
    ('{"images": [], "annotations": []}', "'categories'"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "0"}]}', "lacks 'file_name'"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
], ids=["missing", "bad-json", "not-object", "no-categories", "image-entry", "binary"])
def test_cli_unreadable_annotation_file(random_detect_onnx, tmp_path, content, needle):
    data = tmp_path / "data"
    synthetic_coco(data, NUMERIC_NAMES)
    ann = tmp_path / "bad.json"
    if isinstance(content, str):
        ann.write_text(content)
    elif isinstance(content, bytes):
        ann.write_bytes(content)
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, str(ann), needle, outputs=outputs)


def test_cli_mismatched_class_names(random_detect_onnx, tmp_path):
    data = tmp_path / "data"
    names = NUMERIC_NAMES[:78] + ["cat", "dog"]  # the model's classes "78" and "79" have no category
    ann = synthetic_coco(data, names)
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, random_detect_onnx.name, "2 of 80", "78, 79", outputs=outputs)


def test_cli_no_class_name_matches(random_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, ["person", "car", "dog"])
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, random_detect_onnx.name, "none", "person", outputs=outputs)


def test_cli_missing_model_file(tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES)
    extra, outputs = _outputs(tmp_path)
    missing = tmp_path / "nope.onnx"
    code, out, err = run_cli(["--model", missing, "--images", data, "--ann", ann, *extra])
    _assert_failed(code, out, err, str(missing), "not found", outputs=outputs)


def test_cli_missing_reference_checkpoint(random_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES)
    extra, outputs = _outputs(tmp_path)
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann,
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


def test_cli_out_is_a_folder(random_detect_onnx, tmp_path):
    data = tmp_path / "data"
    ann = synthetic_coco(data, NUMERIC_NAMES)
    code, out, err = run_cli(["--model", random_detect_onnx, "--images", data, "--ann", ann, "--out", tmp_path])
    _assert_failed(code, out, err, "--out", "folder")
