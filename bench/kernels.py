"""Micro-benchmarks of the host-side kernels alone, on seeded synthetic but realistic inputs.

    python bench/kernels.py [--sizes 320,640,1280] [--dets 1,10,100,300] [--repeat R] [--warmup W]
                            [--seed S] [--max-mask-mib 512] [--json OUT.json]

For every input size S (square letterbox S x S; YOLOv8 head: strides 8/16/32, reg_max 16, 80 classes,
32 prototypes at S/4) and every detection count d, a synthetic scene of d objects is built and these
kernels are timed per call (median and p90 over --repeat calls, after --warmup untimed calls):

* ``decode_predict`` / ``decode_val``: :func:`runtime.kernels.decode.decode_truncated` at conf 0.25 / 0.001 over
  the whole head (each object lights up a 3x3 patch of anchors; background logits ~ N(-10, 1), so conf
  0.001 also lets a few percent of the background through, as a real val run does);
* ``nms``: :func:`runtime.kernels.nms.nms` on 8 jittered boxes per object (8 d candidates, ~d kept), iou 0.7;
* ``masks_letterbox``: :func:`runtime.kernels.masks.assemble_masks` at the letterbox geometry (S x S);
* ``masks_native``: the same at the native geometry of a 4:3 image whose long side is S;
* ``rle_native``: :func:`runtime.kernels.masks.encode_masks_rle` at that native geometry (val mode's path);
* ``rle_baseline``: the obvious alternative, ``assemble_masks`` (native) then ``pycocotools.mask.encode``,
  timed in the same run so ``rle_native`` can be read as a ratio against it.

Columns: ``n_in`` items fed (anchors for decode, candidates for NMS, detections for masks),
``n_out`` items produced, ``median`` / ``p90`` microseconds per call, ``us/det`` = median / d and
``slope`` = the marginal cost of one more detection versus the smallest d of the sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from bench.machine import (  # noqa: E402
    format_machine, format_table, int_list, machine_facts, runtime_facts, summarize,
)

SCHEMA_VERSION = 1
STRIDES = (8, 16, 32)
REG_MAX, NC, NM = 16, 80, 32
KERNELS = ("decode_predict", "decode_val", "nms", "masks_letterbox", "masks_native", "rle_native", "rle_baseline")
CANDIDATES_PER_OBJECT = 8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/kernels.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int_list, default=[320, 640, 1280],
                   help="square input sizes, multiples of 32 (default 320,640,1280)")
    p.add_argument("--dets", type=int_list, default=[1, 10, 100, 300], help="detection counts (default 1,10,100,300)")
    p.add_argument("--repeat", type=int, default=20, help="timed calls per point (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per point (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kernels", type=lambda s: [k for k in s.split(",") if k], default=list(KERNELS),
                   help=f"subset of {','.join(KERNELS)}")
    p.add_argument("--max-mask-mib", type=float, default=512.0,
                   help="skip bitmap points whose (d, H, W) mask array would exceed this (default 512)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT")
    return p


# ------------------------------------------------------------------------------------------------ scenes
class Scene:
    """d objects on an S x S letterbox (and on a 4:3 native image of long side S), seeded."""

    def __init__(self, size: int, dets: int, seed: int) -> None:
        if size % max(STRIDES):
            raise SystemExit(f"error: size {size} is not a multiple of {max(STRIDES)}")
        rng = np.random.default_rng([seed, size, dets])
        self.size, self.dets = size, dets
        self.native_hw = (round(size * 3 / 4), size)
        # object boxes in letterbox pixels: sizes 3 % .. 40 % of the side, fully inside the image
        wh = rng.uniform(0.03, 0.40, (dets, 2)) * size
        ctr = rng.uniform(wh / 2, size - wh / 2)
        self.boxes = np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=1).astype(np.float32)
        self.classes = rng.integers(0, NC, dets)
        # head outputs
        self.box_levels, self.cls_levels = [], []
        for s in STRIDES:
            h = w = size // s
            self.box_levels.append(rng.normal(0, 2, (4 * REG_MAX, h, w)).astype(np.float32))
            self.cls_levels.append(rng.normal(-10, 1, (NC, h, w)).astype(np.float32))
        for (cx, cy), (bw, bh), c in zip(ctr, wh, self.classes):
            level = 0 if max(bw, bh) < size / 8 else (1 if max(bw, bh) < size / 4 else 2)
            s = STRIDES[level]
            n = size // s
            gx, gy = int(cx // s), int(cy // s)
            ys, xs = slice(max(gy - 1, 0), min(gy + 2, n)), slice(max(gx - 1, 0), min(gx + 2, n))
            patch = self.cls_levels[level][c, ys, xs]
            patch[...] = rng.normal(1.5, 0.5, patch.shape)
        # NMS candidates: CANDIDATES_PER_OBJECT jittered copies of every object box
        k = CANDIDATES_PER_OBJECT
        jitter = rng.normal(0, 0.04, (dets, k, 4)) * np.repeat(wh, 2, axis=1)[:, None, :]
        self.cand_boxes = (self.boxes[:, None, :] + jitter).reshape(-1, 4).astype(np.float32)
        self.cand_scores = rng.uniform(0.25, 0.95, dets * k).astype(np.float32)
        self.cand_classes = np.repeat(self.classes, k).astype(np.int32)
        # masks: prototypes at S/4, coefficients per detection
        mh = size // 4
        yy, xx = np.mgrid[0:mh, 0:mh].astype(np.float32) / mh
        base = [np.sin((i % 7 + 1) * np.pi * xx + i) * np.cos((i % 5 + 1) * np.pi * yy - i) for i in range(NM)]
        self.protos = (np.stack(base) + rng.normal(0, 0.3, (NM, mh, mh))).astype(np.float32)
        self.coeffs = rng.normal(0, 0.5, (dets, NM)).astype(np.float32)
        # the same boxes in native-image pixels (inverse of a centred letterbox)
        g = size / max(self.native_hw)
        pad_y = (size - self.native_hw[0] * g) / 2
        self.native_boxes = ((self.boxes - np.array([0, pad_y, 0, pad_y], np.float32)) / g).astype(np.float32)
        self.native_boxes[:, 1::2] = self.native_boxes[:, 1::2].clip(0, self.native_hw[0])


# ------------------------------------------------------------------------------------------------ timing
def time_calls(fn, repeat: int, warmup: int) -> tuple[dict, object]:
    out = None
    for _ in range(max(warmup, 0)):
        out = fn()
    samples = []
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        out = fn()
        samples.append((time.perf_counter() - t) * 1e6)
    stats = summarize(samples)
    return {"median_us": stats["p50"], "p90_us": stats["p90"], "mean_us": stats["mean"], "min_us": stats["min"],
            "calls": stats["count"]}, out


def bench_point(scene: Scene, kernel: str, repeat: int, warmup: int, max_mask_mib: float) -> dict:
    from runtime.kernels.decode import decode_truncated
    from runtime.kernels.masks import (
        assemble_masks,
        encode_masks_rle,
        letterbox_mask_geometry,
        native_mask_geometry,
    )
    from runtime.kernels.nms import nms

    S, d = scene.size, scene.dets
    proto_hw = scene.protos.shape[1:]
    row = {"kernel": kernel, "size": S, "dets": d}
    if kernel in ("decode_predict", "decode_val"):
        conf = 0.25 if kernel == "decode_predict" else 0.001
        fn = lambda: decode_truncated(scene.box_levels, scene.cls_levels, STRIDES, conf)  # noqa: E731
        stats, out = time_calls(fn, repeat, warmup)
        row.update(n_in=sum(c.shape[1] * c.shape[2] for c in scene.cls_levels), n_out=len(out), conf=conf)
    elif kernel == "nms":
        fn = lambda: nms(scene.cand_boxes, scene.cand_scores, scene.cand_classes, 0.7, 300, False)  # noqa: E731
        stats, out = time_calls(fn, repeat, warmup)
        row.update(n_in=len(scene.cand_scores), n_out=len(out))
    else:
        native = kernel != "masks_letterbox"
        if native:
            geometry, boxes, hw = native_mask_geometry(proto_hw, scene.native_hw), scene.native_boxes, scene.native_hw
        else:
            geometry, boxes, hw = letterbox_mask_geometry(proto_hw, (S, S)), scene.boxes, (S, S)
        bitmap_mib = d * hw[0] * hw[1] / 2**20
        if kernel != "rle_native" and bitmap_mib > max_mask_mib:
            row.update(n_in=d, n_out=None, skipped=f"{bitmap_mib:.0f} MiB of masks > --max-mask-mib {max_mask_mib:g}")
            return row
        if kernel == "rle_native":
            fn = lambda: encode_masks_rle(scene.protos, scene.coeffs, boxes, geometry)  # noqa: E731
        elif kernel == "rle_baseline":
            from pycocotools import mask as mask_utils

            def fn():
                masks, areas = assemble_masks(scene.protos, scene.coeffs, boxes, geometry)
                return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).view(np.uint8))), areas
        else:
            fn = lambda: assemble_masks(scene.protos, scene.coeffs, boxes, geometry)  # noqa: E731
        stats, out = time_calls(fn, repeat, warmup)
        row.update(n_in=d, n_out=int((out[1] > 0).sum()), out_hw=list(hw))
    row.update(stats)
    row["us_per_det"] = stats["median_us"] / d
    return row


def add_slopes(rows: list[dict]) -> None:
    """Marginal us per extra detection versus the smallest d of the same kernel and size."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "median_us" in r:
            groups.setdefault((r["kernel"], r["size"]), []).append(r)
    for group in groups.values():
        base = min(group, key=lambda r: r["dets"])
        for r in group:
            dd = r["dets"] - base["dets"]
            r["slope_us_per_det"] = (r["median_us"] - base["median_us"]) / dd if dd > 0 else None


def add_baseline_ratios(rows: list[dict]) -> None:
    """rle_baseline / rle_native at the same (size, dets): how many times faster our RLE path is."""
    ours = {(r["size"], r["dets"]): r for r in rows if r["kernel"] == "rle_native" and "median_us" in r}
    for r in rows:
        if r["kernel"] == "rle_baseline" and "median_us" in r and (r["size"], r["dets"]) in ours:
            o = ours[(r["size"], r["dets"])]
            r["ratio_vs_rle_native"] = r["median_us"] / o["median_us"] if o["median_us"] > 0 else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [k for k in args.kernels if k not in KERNELS]
    if unknown:
        print(f"error: unknown kernels {unknown}; choose from {','.join(KERNELS)}", file=sys.stderr)
        return 2
    facts = machine_facts()
    print(format_machine(facts))
    rows = []
    for size in args.sizes:
        for d in args.dets:
            scene = Scene(size, d, args.seed)
            for kernel in args.kernels:
                rows.append(bench_point(scene, kernel, args.repeat, args.warmup, args.max_mask_mib))
    rt = runtime_facts()
    add_slopes(rows)
    add_baseline_ratios(rows)

    table = []
    for r in rows:
        if "skipped" in r:
            table.append([r["kernel"], r["size"], r["dets"], r["n_in"], "skipped", None, None, None, None, None])
            continue
        table.append([r["kernel"], r["size"], r["dets"], r["n_in"], r["n_out"], r["median_us"], r["p90_us"],
                      r["us_per_det"], r.get("slope_us_per_det"), r.get("ratio_vs_rle_native")])
    print(f"\n{args.repeat} timed calls per point after {args.warmup} warm-up calls; times in microseconds per call")
    print(format_table(["kernel", "size", "dets", "n_in", "n_out", "median us", "p90 us", "us/det", "slope us/det",
                        "x rle_native"], table))
    skipped = [r for r in rows if "skipped" in r]
    for r in skipped:
        print(f"  skipped {r['kernel']} size {r['size']} dets {r['dets']}: {r['skipped']}")

    report = {
        "tool": "bench/kernels.py",
        "schema": SCHEMA_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {"sizes": args.sizes, "dets": args.dets, "repeat": args.repeat, "warmup": args.warmup,
                     "seed": args.seed, "kernels": args.kernels, "max_mask_mib": args.max_mask_mib,
                     "strides": list(STRIDES), "reg_max": REG_MAX, "nc": NC, "nm": NM,
                     "candidates_per_object": CANDIDATES_PER_OBJECT},
        "machine": facts,
        "runtime": rt,
        "kernels": list(args.kernels),
        "rows": rows,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        from runtime.io.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
