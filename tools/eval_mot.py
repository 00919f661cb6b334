"""MOTA, IDF1 and HOTA of the trackers on MOTChallenge-format ground truth.

    python tools/eval_mot.py SEQ [SEQ ...] [--trackers bytetrack,botsort,tracktrack,ocsort]
                             [--seed 0] [--miss 0.1] [--jitter 0.05] [--false-positives 1.0] [--low-score 0.15]
                             [--results RESULT.txt ...] [--json OUT.json]

Each SEQ is a MOTChallenge ground-truth file (``frame,id,x,y,w,h,conf,...``, one box per line) or a folder holding
``gt.txt`` or ``gt/gt.txt``; rows with conf 0 are ignored, as MOTChallenge does. With no detector at hand the
trackers are fed detections derived from the ground truth with seeded noise: each box is missed with probability
``--miss``, its centre and size jittered by ``--jitter`` times its size (normal), its score drawn in 0.5..0.95 (a
``--low-score`` fraction in 0.12..0.3, the band only a second association stage uses), and ``--false-positives``
spurious boxes (Poisson mean per frame, scores 0.1..0.6) added. There are no images, so camera-motion compensation
stays off.

``--results`` scores existing MOTChallenge result files instead (one per SEQ, in order): used to check this
evaluation against the figures motmetrics publishes for the result files it ships.

Metrics: MOTA and IDF1 from ``motmetrics`` (IoU >= 0.5 matches), HOTA (with DetA and AssA) from ``trackeval``'s
HOTA (IoU similarity, averaged over thresholds 0.05..0.95), both maintained and numpy-2 compatible.

motmetrics ships the TUD-Campus and TUD-Stadtmitte ground truth (``motmetrics/data/``); :func:`motmetrics_data`
finds it in the installed package (nothing is copied here).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from runtime.errors import InputError  # noqa: E402

Sequence = dict[int, tuple[np.ndarray, np.ndarray]]  # frame -> (ids (n,), tlwh (n, 4))


def motmetrics_data() -> Path:
    """The folder of sequences shipped inside the installed motmetrics package."""
    import motmetrics

    return Path(motmetrics.__file__).parent / "data"


def gt_file(path: str | Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "gt.txt", path / "gt" / "gt.txt"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{path}: no MOTChallenge ground truth (a gt.txt file, or a folder with gt.txt or gt/gt.txt)")


def read_mot(path: Path, keep_zero_conf: bool = True) -> Sequence:
    """``frame -> (ids, tlwh)`` from a MOTChallenge text file; rows whose conf (7th column) is 0 are dropped unless
    ``keep_zero_conf``."""
    try:
        rows = np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a MOTChallenge text file ({e})") from None
    if rows.size and rows.shape[1] < 6:
        raise InputError(f"{path}: MOTChallenge rows need at least 6 columns, found {rows.shape[1]}")
    if not keep_zero_conf and rows.shape[1] >= 7:
        rows = rows[rows[:, 6] != 0]
    sequence: Sequence = {}
    for frame in np.unique(rows[:, 0]).astype(int) if rows.size else []:
        chosen = rows[rows[:, 0] == frame]
        sequence[int(frame)] = (chosen[:, 1].astype(np.int64), chosen[:, 2:6].astype(np.float64))
    return sequence


def noisy_detections(gt: Sequence, n_frames: int, seed: int, miss: float, jitter: float, false_positives: float,
                     low_score: float):
    """Per-frame :class:`runtime.track.Detections` derived from the ground truth (see the module docstring)."""
    from runtime.track import Detections

    rng = np.random.default_rng(seed)
    all_boxes = np.concatenate([tlwh for _, tlwh in gt.values()]) if gt else np.array([[0, 0, 50, 100.0]])
    extent = np.maximum((all_boxes[:, :2] + all_boxes[:, 2:]).max(0), 1)
    out = []
    for frame in range(1, n_frames + 1):
        _, tlwh = gt.get(frame, (np.zeros(0), np.zeros((0, 4))))
        tlwh = tlwh[rng.random(len(tlwh)) >= miss]
        size = tlwh[:, 2:]
        centre = tlwh[:, :2] + size / 2 + rng.normal(0, jitter, size.shape) * size
        size = size * np.exp(rng.normal(0, jitter, size.shape))
        scores = rng.uniform(0.5, 0.95, len(tlwh))
        low = rng.random(len(tlwh)) < low_score
        scores[low] = rng.uniform(0.12, 0.3, int(low.sum()))
        n_false = rng.poisson(false_positives)
        template = all_boxes[rng.integers(0, len(all_boxes), n_false), 2:]
        false_centre = rng.uniform(0, 1, (n_false, 2)) * extent
        centre, size = np.concatenate([centre, false_centre]), np.concatenate([size, template])
        scores = np.concatenate([scores, rng.uniform(0.1, 0.6, n_false)])
        xyxy = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        out.append(Detections(xyxy, scores, np.zeros(len(xyxy), np.int32)))
    return out


def run_tracker(name: str, detections: list) -> Sequence:
    from runtime.track import make_tracker

    tracker = make_tracker(name)
    result: Sequence = {}
    for frame, dets in enumerate(detections, start=1):
        tracks = tracker.update(dets)
        tlwh = tracks.xyxy.astype(np.float64)
        tlwh[:, 2:] -= tlwh[:, :2]
        result[frame] = (tracks.track_ids, tlwh)
    return result


def iou_distances(gt_boxes: np.ndarray, track_boxes: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """1 - IoU, NaN (no match possible) below ``min_iou``: motmetrics' ``iou_matrix(max_iou=0.5)``, which calls
    ``np.asfarray`` (removed in numpy 2) in motmetrics 1.4.0."""
    distance = 1 - box_iou_tlwh(gt_boxes, track_boxes)
    distance[distance > 1 - min_iou] = np.nan
    return distance


def clear_and_identity(gt: Sequence, tracks: Sequence, frames: list[int]) -> dict[str, float]:
    """MOTA, IDF1 and friends from motmetrics (IoU distance, matches need IoU >= 0.5)."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    empty = (np.zeros(0, np.int64), np.zeros((0, 4)))
    for frame in frames:
        gt_ids, gt_boxes = gt.get(frame, empty)
        tr_ids, tr_boxes = tracks.get(frame, empty)
        acc.update(gt_ids, tr_ids, iou_distances(gt_boxes, tr_boxes), frameid=frame)
    names = ["mota", "idf1", "motp", "num_switches", "num_false_positives", "num_misses", "recall", "precision"]
    summary = mm.metrics.create().compute(acc, metrics=names, name="seq")
    return {k: float(summary[k].iloc[0]) for k in names}


def box_iou_tlwh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a2, b2 = a[:, :2] + a[:, 2:], b[:, :2] + b[:, 2:]
    inter = np.clip(np.minimum(a2[:, None], b2[None]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None).prod(2)
    union = a[:, 2:].prod(1)[:, None] + b[:, 2:].prod(1)[None] - inter
    return inter / np.maximum(union, np.finfo(float).eps)


def hota(gt: Sequence, tracks: Sequence, frames: list[int]) -> dict[str, float]:
    """HOTA, DetA and AssA (averaged over IoU thresholds 0.05..0.95) from trackeval's HOTA metric."""
    from trackeval.metrics import HOTA

    def dense(ids_per_frame):
        uniq = np.unique(np.concatenate(ids_per_frame)) if ids_per_frame else np.zeros(0)
        lookup = {v: i for i, v in enumerate(uniq.tolist())}
        return [np.array([lookup[v] for v in ids.tolist()], dtype=int) for ids in ids_per_frame], len(uniq)

    empty = (np.zeros(0, np.int64), np.zeros((0, 4)))
    gt_frames = [gt.get(f, empty) for f in frames]
    tr_frames = [tracks.get(f, empty) for f in frames]
    gt_ids, n_gt_ids = dense([ids for ids, _ in gt_frames])
    tr_ids, n_tr_ids = dense([ids for ids, _ in tr_frames])
    data = {"num_timesteps": len(frames), "num_gt_ids": n_gt_ids, "num_tracker_ids": n_tr_ids,
            "num_gt_dets": sum(len(i) for i in gt_ids), "num_tracker_dets": sum(len(i) for i in tr_ids),
            "gt_ids": gt_ids, "tracker_ids": tr_ids,
            "similarity_scores": [box_iou_tlwh(g[1], t[1]) for g, t in zip(gt_frames, tr_frames)]}
    metric = HOTA()
    res = metric.eval_sequence(data)
    return {"hota": float(np.mean(res["HOTA"])), "deta": float(np.mean(res["DetA"])),
            "assa": float(np.mean(res["AssA"]))}


def evaluate(gt: Sequence, tracks: Sequence) -> dict[str, float]:
    frames = list(range(1, max(list(gt) + list(tracks) + [0]) + 1))
    return {**clear_and_identity(gt, tracks, frames), **hota(gt, tracks, frames)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tools/eval_mot.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sequences", nargs="+", help="MOTChallenge gt.txt files or sequence folders")
    p.add_argument("--trackers", default="bytetrack,botsort,tracktrack,ocsort", help="comma-separated names or YAMLs")
    p.add_argument("--results", nargs="*", default=None, help="score these result files (one per sequence) instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--miss", type=float, default=0.1, help="probability a ground-truth box is not detected")
    p.add_argument("--jitter", type=float, default=0.05, help="box noise, fraction of the box size")
    p.add_argument("--false-positives", type=float, default=1.0, help="spurious boxes per frame (Poisson mean)")
    p.add_argument("--low-score", type=float, default=0.15, help="fraction of true boxes with a low score")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paths = [gt_file(s) for s in args.sequences]
        if args.results is not None and len(args.results) != len(paths):
            raise InputError(f"--results: {len(args.results)} files for {len(paths)} sequences")
        rows = []
        for k, path in enumerate(paths):
            gt = read_mot(path, keep_zero_conf=False)
            name = path.parent.name if path.name == "gt.txt" else path.stem
            if name == "gt":
                name = path.parent.parent.name
            if args.results is not None:
                runs = {Path(args.results[k]).name: read_mot(Path(args.results[k]))}
            else:
                n_frames = max(gt, default=0)
                dets = noisy_detections(gt, n_frames, args.seed, args.miss, args.jitter, args.false_positives,
                                        args.low_score)
                runs = {t: run_tracker(t, dets) for t in args.trackers.split(",") if t}
            for tracker, tracks in runs.items():
                rows.append({"sequence": name, "tracker": tracker, **evaluate(gt, tracks)})
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    header = f"{'sequence':<16}{'tracker':<14}{'MOTA':>7}{'IDF1':>7}{'HOTA':>7}{'DetA':>7}{'AssA':>7}{'IDsw':>6}" \
             f"{'FP':>6}{'FN':>6}"
    print(header)
    for r in rows:
        print(f"{r['sequence']:<16}{r['tracker']:<14}{100 * r['mota']:7.1f}{100 * r['idf1']:7.1f}"
              f"{100 * r['hota']:7.1f}{100 * r['deta']:7.1f}{100 * r['assa']:7.1f}{int(r['num_switches']):6d}"
              f"{int(r['num_false_positives']):6d}{int(r['num_misses']):6d}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
