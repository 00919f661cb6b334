"""Which Ultralytics heads the exporter takes, and the modules of the branch it exports.

Detect, Segment and Pose (YOLOv8 / YOLO11 style) have one branch. YOLOv10's ``v10Detect`` and YOLO26's heads
(``Detect`` with ``reg_max`` 1, ``Segment26``, ``Pose26``) carry two: the one-to-many convs (``cv2``, ``cv3``, ...)
trained for NMS and the one-to-one convs (``one2one_cv2``, ...) trained to need none. The branch is chosen with
Ultralytics' words: ``nms`` None (the default, as in Ultralytics since 8.4.142) exports the one-to-many branch,
``nms`` False the one-to-one branch. A file holds one branch: the other's convs are a quarter or more of a YOLO26n's
head (see README, "YOLO26 and YOLOv10"), and no caller reads both.

Per level the exported outputs are the branch's last convs: box (``4 * reg_max``: DFL logits, or YOLO26's four
distances), class logits, then mask coefficients (``cv4``) or keypoints (``cv4`` for Pose; ``cv4`` then
``cv4_kpts`` for Pose26) or the angle logit (``cv4``, OBB), plus the prototypes (``Proto`` on P3; ``Proto26`` fuses
every level) for segment. Classifiers are exported by :mod:`tools.export_classify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BRANCHES = ("one2many", "one2one")


@dataclass(frozen=True)
class HeadKind:
    """What the exporter needs to know about one head class."""

    task: str
    extra_convs: tuple[str, ...]  # module lists applied in turn to get the extra channels, one2many names
    kpt_rule: str | None = None  # "grid2x" (v8 Pose) or "anchor" (Pose26)
    proto_on_levels: bool = False  # Proto26 takes every level, Proto only P3


SUPPORTED: dict[str, HeadKind] = {
    "Detect": HeadKind("detect", ()),
    "v10Detect": HeadKind("detect", ()),
    "Segment": HeadKind("segment", ("cv4",)),
    "Segment26": HeadKind("segment", ("cv4",), proto_on_levels=True),
    "Pose": HeadKind("pose", ("cv4",), kpt_rule="grid2x"),
    "Pose26": HeadKind("pose", ("cv4", "cv4_kpts"), kpt_rule="anchor"),
    "OBB": HeadKind("obb", ("cv4",)),  # one angle logit per anchor, before the sigmoid
}

# heads we know and refuse, with why (the exporter names the head in one line)
REFUSED: dict[str, str] = {
    "SemanticSegment": "semantic segmentation (a per-pixel class map, no detection head)",
    "Depth": "monocular depth (a per-pixel depth map, no detection head)",
    "YOLOEDetect": "YOLOE open-vocabulary head (class scores from a text-prompt branch; fuse it to fixed classes "
                   "with Ultralytics' set_classes and export that)",
    "YOLOESegment": "YOLOE open-vocabulary head (class scores from a text-prompt branch)",
    "YOLOESegment26": "YOLOE open-vocabulary head (class scores from a text-prompt branch)",
    "WorldDetect": "YOLO-World open-vocabulary head (class scores from text embeddings)",
    "OBB26": "YOLO26 oriented boxes (end-to-end angle head, not supported yet)",
    "RTDETRDecoder": "RT-DETR transformer decoder (not a YOLO head)",
}


def has_one2one(head: Any) -> bool:
    """Whether the head carries a one-to-one branch (YOLOv10, YOLO26)."""
    return getattr(head, "one2one_cv2", None) is not None


def branch_for(nms: bool | None) -> str:
    """Ultralytics' ``nms`` argument -> the branch: None / True one-to-many, False one-to-one."""
    return "one2one" if nms is False else "one2many"


def branch_module(head: Any, name: str, branch: str) -> Any:
    """The module list ``name`` (one-to-many name, e.g. "cv2") of ``branch``."""
    return getattr(head, f"one2one_{name}" if branch == "one2one" else name)


def truncated_forward(kind: HeadKind, branch: str):
    """A replacement head ``forward`` returning the raw per-level outputs of ``branch``, then the prototypes."""

    def forward(self, x):
        box, cls = branch_module(self, "cv2", branch), branch_module(self, "cv3", branch)
        extra = [branch_module(self, name, branch) for name in kind.extra_convs]
        outs = []
        for i in range(self.nl):
            outs.append(box[i](x[i]))  # box: DFL logits (4 * reg_max) or distances (reg_max 1)
            outs.append(cls[i](x[i]))  # class logits, before the sigmoid
            if extra:
                y = x[i]
                for convs in extra:
                    y = convs[i](y)
                outs.append(y)  # mask coefficients (nm), raw keypoints (nk) or the angle logit (1)
        if kind.task == "segment":
            outs.append(self.proto(x if kind.proto_on_levels else x[0]))  # (B, nm, 2 * H / 8, 2 * W / 8)
        return tuple(outs)

    return forward
