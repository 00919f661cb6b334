"""From one image's raw network outputs to a Result: decode, NMS, masks, back to image pixels."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from . import _prefetch
from ._anchors import take_kept
from .decode import Candidates, TruncatedDecoder, decode_standard
from .letterbox import Letterbox
from .masks import MaskAssembler, letterbox_mask_geometry, native_mask_geometry
from .nms import nms_candidates
from .result import Result
from .spec import STANDARD_LAYOUT, ModelSpec


@dataclass(frozen=True)
class PostprocessSettings:
    """Thresholds and output forms; validated by the Predictor."""

    conf: float
    iou: float
    max_det: int
    classes: tuple[int, ...] | None
    agnostic: bool
    multi_label: bool
    retina_masks: bool
    rle_masks: bool
    max_candidates: int = 30000


_NO_LEVELS = np.zeros(0, np.int64)


@functools.lru_cache(maxsize=64)
def _mask_assembler(form: str, proto_shape: tuple[int, int, int], out_hw: tuple[int, int],
                    threads: int | None) -> MaskAssembler:
    """The assembler of masks at the letterboxed input size (form "letterbox") or at the original
    image size ("native"), built once per shape pair and thread setting."""
    geometry = (native_mask_geometry if form == "native" else letterbox_mask_geometry)(proto_shape[1:], out_hw)
    return MaskAssembler(geometry, proto_shape, threads)


def _anchor_geometry(spec: ModelSpec, outputs: dict[str, np.ndarray], anchor_ids: np.ndarray,
                     level_ends: np.ndarray):
    """Cell-centre x, y (grid units) and stride of each global anchor id, each (n,) float32;
    ``level_ends``: the decoder's cumulative anchor counts."""
    level = np.searchsorted(level_ends, anchor_ids, side="right")
    local = anchor_ids - np.concatenate(([0], level_ends[:-1]))[level]
    widths = np.array([outputs[lv.cls].shape[3] for lv in spec.levels])[level]
    ax = (local % widths).astype(np.float32) + np.float32(0.5)
    ay = (local // widths).astype(np.float32) + np.float32(0.5)
    return ax, ay, np.asarray(spec.strides, np.float32)[level]


def _decode_keypoints(spec: ModelSpec, outputs: dict[str, np.ndarray], raw: np.ndarray,
                      anchor_ids: np.ndarray, decoder: TruncatedDecoder | None) -> np.ndarray:
    """(n, nk) keypoint channels -> (n, K, D) float32 in input pixels (D=3 carries visibility)."""
    k, d = spec.kpt_shape
    kpts = raw.reshape(len(raw), k, d).astype(np.float32, copy=True)
    if decoder is None:
        return kpts  # standard layout: already decoded inside the exported graph
    ax, ay, stride = _anchor_geometry(spec, outputs, anchor_ids, decoder.level_ends)
    kpts[:, :, 0] = (kpts[:, :, 0] * 2 + (ax[:, None] - 0.5)) * stride[:, None]
    kpts[:, :, 1] = (kpts[:, :, 1] * 2 + (ay[:, None] - 0.5)) * stride[:, None]
    if d == 3:
        kpts[:, :, 2] = 1 / (1 + np.exp(-kpts[:, :, 2]))
    return kpts


class Postprocessor:
    """Raw outputs of one model to Results: decode, NMS, masks or keypoints, back to image pixels.

    Everything that depends only on the model, the settings and the output shapes (the decoder's
    arguments and level offsets) is prepared once, so an image costs little more than the kernels.
    """

    def __init__(self, spec: ModelSpec, settings: PostprocessSettings) -> None:
        self.spec = spec
        self.settings = settings
        self._decoders: dict[tuple, TruncatedDecoder] = {}
        levels = spec.levels
        self._box_names = tuple(lv.box for lv in levels)
        self._cls_names = tuple(lv.cls for lv in levels)
        self._extra_names = tuple(lv.extra for lv in levels)  # read by _extra_maps for segment and pose only

    def _decoder(self, outputs: dict[str, np.ndarray]) -> TruncatedDecoder:
        """The decoder for these outputs' level shapes (truncated layout), built on first use.

        Keyed by the first class map's shape: every level's size follows from the input size."""
        key = outputs[self._cls_names[0]].shape[1:]
        decoder = self._decoders.get(key)
        if decoder is None:
            s = self.settings
            decoder = TruncatedDecoder([outputs[n].shape[1:] for n in self._box_names],
                                       [outputs[n].shape[1:] for n in self._cls_names], self.spec.strides, s.conf,
                                       multi_label=s.multi_label, classes=s.classes, max_candidates=s.max_candidates,
                                       dfl_bins=self.spec.dfl_bins)
            self._decoders[key] = decoder
        return decoder

    def _decode(self, outputs: dict[str, np.ndarray], i: int, decoder: TruncatedDecoder | None) -> Candidates:
        """Candidates of row ``i``; ``decoder`` is None for a standard (stock Ultralytics) layout."""
        spec, s = self.spec, self.settings
        if decoder is None:
            return decode_standard(outputs[spec.output0][i], spec.nc, s.conf, multi_label=s.multi_label,
                                   classes=s.classes, max_candidates=s.max_candidates)
        return decoder.decode_row([outputs[n] for n in self._box_names], [outputs[n] for n in self._cls_names], i)

    def _extra_maps(self, outputs: dict[str, np.ndarray], i: int,
                    decoder: TruncatedDecoder | None) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """Per-level (C, N_l) float32 maps of the extra channels (mask coefficients or raw keypoints)
        and their cumulative anchor counts; no maps for a detect model."""
        spec = self.spec
        if spec.task not in ("segment", "pose"):
            return (), _NO_LEVELS
        if decoder is None:
            extra = np.ascontiguousarray(outputs[spec.output0][i][4 + spec.nc:], dtype=np.float32)
            return (extra,), np.array([extra.shape[1]], np.int64)
        return tuple(outputs[n][i].reshape(outputs[n].shape[1], -1) for n in self._extra_names), decoder.level_ends

    def read_ahead_arrays(self, outputs: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, ...]:
        """What postprocessing row ``i`` reads in bulk, in the order a second core should read it ahead:
        the class logits the decode scan reaches last (the later levels, then the first level's last
        two thirds of class rows; the scan starts at the first level's first row), then the mask
        prototypes. The network's outputs are cold when a run returns: the layers after each output
        have evicted it."""
        spec = self.spec
        arrays: list[np.ndarray] = []
        if spec.layout != STANDARD_LAYOUT:
            first, *later = self._cls_names
            arrays += [outputs[name][i] for name in reversed(later)]
            first_level = outputs[first][i]
            arrays.append(first_level[first_level.shape[0] // 3:])
        if spec.proto is not None:
            arrays.append(outputs[spec.proto][i])
        return tuple(arrays)

    def __call__(self, outputs: dict[str, np.ndarray], i: int, letterbox: Letterbox, path: str | None = None,
                 mask_threads: int | None = None, read_ahead: bool = False) -> Result:
        """The Result of row ``i`` of a batch of raw outputs; stage times go to ``speed_ms``.

        ``mask_threads`` caps the mask kernels' threads (None: :data:`runtime.masks.DEFAULT_THREADS`);
        1 when several images are postprocessed at once. ``read_ahead``: a worker thread on another
        core reads :meth:`read_ahead_arrays` into the shared cache while this one decodes and runs
        NMS, for when that core is otherwise idle (one image at a time).
        """
        t0 = time.perf_counter()
        ticket = _prefetch.submit(*self.read_ahead_arrays(outputs, i)) if read_ahead else 0
        try:
            result, t1, t2 = self._result(outputs, i, letterbox, path, mask_threads, ticket)
        except BaseException:
            if ticket:
                _prefetch.release(ticket)  # the outputs may be freed once this returns
            raise
        t3 = time.perf_counter()
        result.speed_ms.update(decode=(t1 - t0) * 1e3, nms=(t2 - t1) * 1e3, masks=(t3 - t2) * 1e3)
        return result

    def _result(self, outputs: dict[str, np.ndarray], i: int, letterbox: Letterbox, path: str | None,
                mask_threads: int | None, read_ahead_ticket: int) -> tuple[Result, float, float]:
        """The Result of row ``i``, and the times decode and NMS ended. The read-ahead worker is
        stopped once NMS is done: by then it has read what it can in time."""
        spec, settings = self.spec, self.settings
        decoder = None if spec.layout == STANDARD_LAYOUT else self._decoder(outputs)
        cand = self._decode(outputs, i, decoder)
        t1 = time.perf_counter()
        keep = nms_candidates(cand.boxes_xyxy, cand.scores, cand.class_ids, settings.iou, settings.max_det,
                              settings.agnostic)
        t2 = time.perf_counter()
        if read_ahead_ticket:
            _prefetch.release(read_ahead_ticket)
        maps, level_ends = self._extra_maps(outputs, i, decoder) if len(keep) else ((), _NO_LEVELS)
        boxes_in, scores, class_ids, anchor_ids, extra = take_kept(
            keep, cand.boxes_xyxy, cand.scores, cand.class_ids, cand.anchor_ids, maps, level_ends)
        boxes_src = letterbox.boxes_to_source(boxes_in)
        masks = rle = keypoints = None
        mask_form = None
        if spec.task == "segment" and len(keep):
            coeffs = extra
            protos = outputs[spec.proto][i]
            if settings.rle_masks or settings.retina_masks:
                assembler = _mask_assembler("native", protos.shape, letterbox.src_hw, mask_threads)
                crop_boxes, mask_form = boxes_src, "native"
            else:
                assembler = _mask_assembler("letterbox", protos.shape, letterbox.dst_hw, mask_threads)
                crop_boxes, mask_form = boxes_in, "letterbox"
            if settings.rle_masks:
                rle, areas = assembler.rle(protos, coeffs, crop_boxes)
                empty = not areas.all()
            else:
                masks, areas, empty = assembler.masks(protos, coeffs, crop_boxes)
            if empty:  # Ultralytics drops detections whose mask is empty
                nonempty = areas > 0
                boxes_src, scores, class_ids = boxes_src[nonempty], scores[nonempty], class_ids[nonempty]
                if masks is not None:
                    masks = masks[nonempty]
                if rle is not None:
                    rle = [r for r, k in zip(rle, nonempty) if k]
        elif spec.task == "pose" and len(keep):
            kpts = _decode_keypoints(spec, outputs, extra, anchor_ids, decoder)
            kpts[..., :2] = letterbox.points_to_source(kpts[..., :2])
            keypoints = kpts
        elif spec.task == "segment":  # no detections: empty arrays of the shapes a detection would have
            if settings.rle_masks:
                rle, mask_form = [], "native"
            elif settings.retina_masks:
                masks, mask_form = np.zeros((0,) + tuple(letterbox.src_hw), bool), "native"
            else:
                masks, mask_form = np.zeros((0,) + tuple(letterbox.dst_hw), bool), "letterbox"
        elif spec.task == "pose":
            keypoints = np.zeros((0,) + tuple(spec.kpt_shape), np.float32)
        return Result(boxes_src, scores, class_ids, spec.names, letterbox, masks=masks, mask_form=mask_form,
                      keypoints=keypoints, masks_rle=rle, path=path), t1, t2
