"""Matching two sets of detections by the parity criteria (torch-free, shared by the parity and engine tests).

A detection of the reference is matched by one of the candidate's with the same class, box IoU >= 0.99 and a
score within 0.002; matched masks must reach IoU >= 0.97 (see tests/test_parity.py for how they are applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCORE_MARGIN = 0.002
BOX_IOU_MIN = 0.99
MASK_IOU_MIN = 0.97


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (n, 4) and (m, 4) xyxy boxes."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@dataclass
class Detections:
    """One image's detections: (n, 4) xyxy boxes, scores, class ids and optionally (n, h, w) masks."""

    xyxy: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.xyxy)


@dataclass
class Tally:
    """Counts over an image set."""

    theirs: int = 0
    theirs_matched: int = 0
    ours: int = 0
    ours_unmatched: int = 0
    mask_ious: list = field(default_factory=list)
    failures: list = field(default_factory=list)


def match(theirs: Detections, ours: Detections, conf: float) -> tuple[list[tuple[int, int]], int, int, int]:
    """Greedy one-to-one matching; returns (pairs, n_theirs_above, n_ours_above, n_ours_above_unmatched)."""
    iou = box_iou(theirs.xyxy, ours.xyxy) if len(theirs) and len(ours) else np.zeros((len(theirs), len(ours)))
    ok = ((iou >= BOX_IOU_MIN) & (theirs.classes[:, None] == ours.classes[None, :])
          & (np.abs(theirs.scores[:, None] - ours.scores[None, :]) <= SCORE_MARGIN))
    used = np.zeros(len(ours), bool)
    pairs = []
    for i in np.argsort(-theirs.scores, kind="stable"):
        choices = np.flatnonzero(ok[i] & ~used)
        if len(choices):
            j = choices[np.argmax(iou[i, choices])]
            used[j] = True
            pairs.append((int(i), int(j)))
    above_theirs = theirs.scores > conf + SCORE_MARGIN
    above_ours = ours.scores > conf + SCORE_MARGIN
    return pairs, int(above_theirs.sum()), int(above_ours.sum()), int((above_ours & ~used).sum())


def compare_one(tally: Tally, name: str, theirs: Detections, ours: Detections, conf: float) -> None:
    pairs, n_theirs, n_ours, ours_unmatched = match(theirs, ours, conf)
    matched_above = sum(1 for i, _ in pairs if theirs.scores[i] > conf + SCORE_MARGIN)
    tally.theirs += n_theirs
    tally.theirs_matched += matched_above
    tally.ours += n_ours
    tally.ours_unmatched += ours_unmatched
    if matched_above < n_theirs:
        tally.failures.append(f"{name}: {n_theirs - matched_above} of {n_theirs} Ultralytics detections unmatched")
    if theirs.masks is not None and ours.masks is not None:
        assert theirs.masks.shape[1:] == ours.masks.shape[1:], f"{name}: mask shapes differ"
        for i, j in pairs:
            value = mask_iou(theirs.masks[i], ours.masks[j])
            tally.mask_ious.append(value)
            if value < MASK_IOU_MIN:
                tally.failures.append(f"{name}: mask IoU {value:.3f} for detection {i}")


def assert_parity(tally: Tally, min_detections: int) -> None:
    report = (f"theirs {tally.theirs_matched}/{tally.theirs} matched, ours unmatched {tally.ours_unmatched}/"
              f"{tally.ours}, failures: {tally.failures[:10]}")
    assert tally.theirs >= min_detections, f"too few detections to judge parity: {report}"
    assert tally.theirs_matched >= 0.99 * tally.theirs, report
    assert tally.ours_unmatched <= 0.01 * tally.ours, report
    assert all(v >= MASK_IOU_MIN for v in tally.mask_ious), report
