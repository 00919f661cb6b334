"""tools/eval_mot.py: its MOTA / IDF1 reproduce the figures motmetrics publishes for the result files it ships,
trackeval's HOTA behaves as HOTA must, and the tracker run end to end on the shipped TUD ground truth."""

from __future__ import annotations

import numpy as np
import pytest

mm = pytest.importorskip("motmetrics", reason="motmetrics is not installed (pip install -e '.[dev]')")
pytest.importorskip("trackeval", reason="trackeval is not installed (pip install -e '.[dev]')")

from tools.eval_mot import evaluate, gt_file, main, motmetrics_data, read_mot  # noqa: E402

# motmetrics' README: its shipped TUD result files scored against the shipped ground truth.
PUBLISHED = {"TUD-Campus": dict(mota=0.526, idf1=0.558, num_switches=7, num_false_positives=13, num_misses=150),
             "TUD-Stadtmitte": dict(mota=0.564, idf1=0.645, num_switches=7, num_false_positives=45, num_misses=452)}


@pytest.mark.parametrize("sequence", sorted(PUBLISHED))
def test_scores_of_the_shipped_results_match_motmetrics_published_figures(sequence):
    folder = motmetrics_data() / sequence
    got = evaluate(read_mot(gt_file(folder), keep_zero_conf=False), read_mot(folder / "test.txt"))
    want = PUBLISHED[sequence]
    assert got["mota"] == pytest.approx(want["mota"], abs=5e-4)
    assert got["idf1"] == pytest.approx(want["idf1"], abs=5e-4)
    for key in ("num_switches", "num_false_positives", "num_misses"):
        assert got[key] == want[key], key
    assert 0 < got["hota"] < 1


def test_hota_is_one_for_the_ground_truth_and_drops_with_identity_swaps():
    gt = read_mot(gt_file(motmetrics_data() / "TUD-Campus"), keep_zero_conf=False)
    perfect = evaluate(gt, gt)
    assert perfect["hota"] == pytest.approx(1.0) and perfect["mota"] == pytest.approx(1.0)
    swapped = {f: ((ids + 1000 * (f > 35)), boxes) for f, (ids, boxes) in gt.items()}  # every id changes mid-way
    got = evaluate(gt, swapped)
    assert got["deta"] == pytest.approx(1.0) and got["assa"] < 0.8 and got["hota"] < perfect["hota"]


def test_trackers_run_on_tud_campus(capsys):
    assert main([str(motmetrics_data() / "TUD-Campus"), "--trackers", "bytetrack,ocsort"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    mota = float(lines[1].split()[2])
    assert 50 < mota <= 100  # noisy detections of the ground truth: far better than nothing, never perfect here


def test_missing_sequence_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no MOTChallenge ground truth" in capsys.readouterr().err
