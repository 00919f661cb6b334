"""End-to-end latency and throughput of the runtime on real images, per stage, per batch size.

    python bench/latency.py --model yolov8n-seg.onnx [--images DIR] [--batch 1,4,8] [--threads N]
                            [--warmup W] [--repeat R] [--mode predict|val] [--limit N]
                            [--compare-ultralytics yolov8n-seg.pt] [--baseline FLOAT.onnx]
                            [--cold-start]
                            [--engine onnxruntime,openvino,openvino:f32] [--device CPU]
                            [--json OUT.json]
    python bench/latency.py --model yolov8n-seg.onnx --video clip.mp4 [--compare-ultralytics yolov8n-seg.pt]
                            [--live-fps 30] [--stream-buffer N] [--json OUT.json]

For every batch size: model load (Predictor construction), preprocess, inference, decode, NMS,
masks, postprocess (= decode + NMS + masks) and total (= the sum of all per-image stages) as
p50 / p90 / p99 ms per image, images/s, and the peak RSS after loading and warming up that batch
size. Images are decoded into memory before timing (file reading is not a stage here; Ultralytics'
speed dict leaves it out too), and each one is read through, untimed, right before every timed call
that gets it: an application has the image it just decoded in cache, and a pipeline that came first
would otherwise pay for pulling a cold image from memory (about 1 ms on a busy VM) that the next
one gets for free. The batch sizes are timed interleaved, block by block of images, so
their throughput ratios hold on a machine whose load drifts.

``--compare-ultralytics`` times Ultralytics' own ``YOLO(x).predict`` on the same images with the
same settings, interleaved image by image with our batch-1 predictor (so load from other processes
hits both alike), and prints theirs / ours per stage and the host share of both. ``--baseline`` times a
second model of ours (the float model a W8A8 one was built from) at the same batch sizes, interleaved
block by block with ``--model``, and prints baseline / model per stage. ``--cold-start``
times ``python -m runtime.infer IMAGE --model M --no-save`` as a whole child process.

``--engine`` names one or more inference engines, each optionally with a precision
(``openvino:f32``); every model is then timed on each of them, all interleaved block by block in
this one process, and the report prints first engine / each other engine per stage. The machine
header lists both engines' versions and the ISA flags or capabilities each can use.

Absolute numbers depend on the machine and its load; compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `runtime` and `bench` importable
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from bench.machine import (  # noqa: E402
    format_machine,
    current_rss_mib,
    format_table,
    int_list,
    machine_facts,
    peak_rss_mib,
    runtime_facts,
    ratio,
    reset_peak_rss,
    summarize,
)
from bench.predictors import EngineChoice, engine_list, make_predictor  # noqa: E402
from bench.video import run_video  # noqa: E402
from runtime.engines import DEFAULT_ENGINE  # noqa: E402
from runtime.errors import YoloRuntimeError  # noqa: E402

SCHEMA_VERSION = 1
OUR_STAGES = ("preprocess", "inference", "decode", "nms", "masks")
STAGES = ("load",) + OUR_STAGES + ("postprocess", "total")
COMPARE_STAGES = ("preprocess", "inference", "postprocess", "total")
MODES = {
    # Ultralytics' predict defaults: letterbox-resolution masks as bitmaps.
    "predict": dict(conf=0.25, iou=0.7, max_det=300, retina_masks=False, rle_masks=False),
    # Ultralytics' val settings: original-resolution masks, here straight to COCO RLE.
    "val": dict(conf=0.001, iou=0.7, max_det=300, retina_masks=True, rle_masks=True),
}


# ------------------------------------------------------------------------------------------------ arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/latency.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="our (truncated-head) ONNX export")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of images (default: <shared>/coco/val2017, shared = $YOLO_SHARED_DIR or ../shared)")
    p.add_argument("--batch", type=int_list, default=[1], help="comma-separated batch sizes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (and torch's, when "
                                                              "comparing); default: the libraries' defaults")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches before each timed run (default 3)")
    p.add_argument("--repeat", type=int, default=1, help="timed passes over the images (default 1)")
    p.add_argument("--mode", choices=sorted(MODES), default="predict",
                   help="predict: conf 0.25, letterbox masks; val: conf 0.001, native masks as COCO RLE")
    p.add_argument("--limit", type=int, default=None, help="use at most N images (sorted by name)")
    p.add_argument("--compare-ultralytics", type=Path, default=None, metavar="MODEL",
                   help="also time Ultralytics' own predict with this model (.pt, .onnx or an Ultralytics OpenVINO "
                        "export folder such as its NNCF INT8 one), interleaved with ours at batch 1")
    p.add_argument("--baseline", type=Path, default=None, metavar="ONNX",
                   help="also time this model of ours (e.g. the float model of a W8A8 --model) interleaved with "
                        "--model, and print baseline / model per stage")
    p.add_argument("--track", nargs="?", const="bytetrack", default=None, metavar="TRACKER",
                   help="with --video: also run each segment through Predictor.track (default bytetrack), "
                        "interleaved, and print what tracking adds per frame")
    p.add_argument("--cold-start", action="store_true",
                   help="also time `python -m runtime.infer IMAGE --model M --no-save` as a whole process")
    p.add_argument("--cold-repeat", type=int, default=3, help="timed cold-start runs after one warm-up (default 3)")
    p.add_argument("--engine", type=engine_list, default=[EngineChoice(DEFAULT_ENGINE)], metavar="E[:P],...",
                   help="comma-separated inference engines to time, each optionally with a precision, e.g. "
                        "onnxruntime,openvino,openvino:f32 (default onnxruntime; the first is the reference of "
                        "the engine ratios)")
    p.add_argument("--device", default=None, help="OpenVINO device (default CPU)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write every figure to this JSON file")
    p.add_argument("--video", type=Path, default=None, metavar="FILE",
                   help="time Predictor.stream on this video file instead (frames/s, per-frame latency, stage "
                        "shares; with --compare-ultralytics, Ultralytics' predict(stream=True) on its own ONNX "
                        "export); see bench/video.py")
    p.add_argument("--live-fps", type=float, default=None, metavar="F",
                   help="with --video: also replay the file as a live source at F frames/s (drops, latency)")
    p.add_argument("--stream-buffer", type=int, default=1, metavar="N",
                   help="with --live-fps: frames the live source may queue (default 1)")
    p.add_argument("--segment-frames", type=int, default=30, metavar="N",
                   help="with --video and --compare-ultralytics: time both sides on segments of N frames, "
                        "interleaved (default 30; 0: the whole file, one side after the other)")
    return p


def shared_dir() -> Path:
    env = os.environ.get("YOLO_SHARED_DIR")
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared"


def resolve_images(folder: Path | None, limit: int | None) -> list[Path]:
    folder = folder if folder is not None else shared_dir() / "coco" / "val2017"
    if not folder.is_dir():
        raise SystemExit(f"error: image folder {folder} not found (pass --images DIR or set YOLO_SHARED_DIR)")
    from runtime.errors import InputError
    from runtime.io.sources import list_images

    try:
        files = list_images(folder)
    except InputError as exc:
        raise SystemExit(f"error: {exc}") from None
    if limit is not None:
        files = files[: max(limit, 0)]
    if not files:
        raise SystemExit(f"error: no images in {folder}")
    return files


def load_images(paths: list[Path]) -> list[np.ndarray]:
    import cv2

    images = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"error: cannot read image {p}")
        images.append(img)
    return images


def freshly_decoded(images: list[np.ndarray]) -> list[np.ndarray]:
    """The images, each read through once so it sits in cache as right after decoding (untimed)."""
    for img in images:
        img.max()
    return images


# ------------------------------------------------------------------------------------------------ our runtime
def _stage_block(samples: dict[str, list[float]]) -> dict:
    out = {}
    for stage in STAGES:
        s = summarize(samples.get(stage, []))
        s["images_per_s"] = 1e3 / s["mean"] if s["mean"] > 0 else None
        out[stage] = s
    return out


def _per_image(result) -> dict[str, float]:
    sp = {k: float(result.speed_ms.get(k, 0.0)) for k in OUR_STAGES}
    sp["postprocess"] = sp["decode"] + sp["nms"] + sp["masks"]
    sp["total"] = sp["preprocess"] + sp["inference"] + sp["postprocess"]
    return sp


def run_ours(models: list[tuple[Path, EngineChoice]], images: list[np.ndarray], batches: list[int],
             settings: dict, args) -> list[list[dict]]:
    """Time our Predictor for every (model, engine) at every batch size; one list of JSON
    blocks (one per batch size) per model and engine.

    Phase 1, one model and batch size after the other: construct the Predictor (model load), run the
    warm-up calls, and read the peak RSS. Phase 2, interleaved: the images are cut into blocks of
    lcm(batch sizes) images and every block is run through every (model, batch size) Predictor,
    starting with a different one each block, so drifting load from other processes hits all alike
    and the ratios between batch sizes, models and engines stay meaningful on a shared machine.
    """
    configs = []
    for index, (model, engine), batch in [(i, m, b) for i, m in enumerate(models) for b in batches]:
        reset_ok = reset_peak_rss()
        rss_before = current_rss_mib()
        t0 = time.perf_counter()
        predictor = make_predictor(model, settings, args.threads, batch, engine, args.device)
        load_ms = (time.perf_counter() - t0) * 1e3
        effective = predictor.batch
        for w in range(max(args.warmup, 0)):
            start = (w * effective) % len(images)
            predictor.predict_batch((images[start:] + images[:start])[:effective])
        peak = peak_rss_mib()
        configs.append({"index": index, "batch": batch, "predictor": predictor, "effective": effective, "load_ms": load_ms,
                        "engine_label": engine.label,
                        "peak": peak, "added": peak - rss_before if reset_ok else None, "reset_ok": reset_ok,
                        "samples": {k: [] for k in STAGES}, "detections": [], "wall": 0.0, "calls": 0})

    block = 1
    for c in configs:
        block = math.lcm(block, c["effective"])
    block = min(block, len(images))
    k = 0
    for _ in range(max(args.repeat, 1)):
        for b0 in range(0, len(images), block):
            chunk_all = images[b0:b0 + block]
            for j in range(len(configs)):
                c = configs[(k + j) % len(configs)]
                step = c["effective"]
                for i in range(0, len(chunk_all), step):
                    chunk = freshly_decoded(chunk_all[i:i + step])
                    t = time.perf_counter()
                    results = c["predictor"].predict_batch(chunk)
                    c["wall"] += time.perf_counter() - t
                    c["calls"] += 1
                    for res in results:
                        for key, v in _per_image(res).items():
                            c["samples"][key].append(v)
                        c["detections"].append(len(res))
            k += 1
    peak_all = peak_rss_mib()

    runs: list[list[dict]] = [[] for _ in models]
    for c in configs:
        c["samples"]["load"].append(c["load_ms"])
        effective, batch = c["effective"], c["batch"]
        fixed = c["predictor"].spec.batch is not None
        note = None
        if fixed:
            note = f"fixed-batch model: every call runs batch {effective}"
            if batch != effective:
                note += f" (batch {batch} was asked for)"
        rest = (len(images) % block) % effective
        if rest:
            note = (note + "; " if note else "") + f"one call per pass holds only {rest} images" + (
                " (padded)" if fixed else "")
        n = len(c["detections"])
        runs[c["index"]].append({
            "batch": batch,
            "engine_label": c["engine_label"],
            "engine": c["predictor"].engine.settings,
            "batch_effective": effective,
            "fixed_batch_model": fixed,
            "note": note,
            "images": n,
            "calls": c["calls"],
            "wall_s": c["wall"],
            "images_per_s": n / c["wall"] if c["wall"] > 0 else None,
            "detections_per_image": float(np.mean(c["detections"])) if c["detections"] else 0.0,
            "peak_rss_mib": c["peak"],
            "rss_added_mib": c["added"],
            "peak_rss_scope": ("load + warm-up of this batch size (earlier sizes' predictors still resident)"
                               if c["reset_ok"] else "process so far"),
            "stages": _stage_block(c["samples"]),
        })
    for model_runs in runs:
        for r in model_runs:
            r["process_peak_rss_mib"] = peak_all
    return runs


def print_run(run: dict) -> None:
    runs_as = f" (runs as {run['batch_effective']})" if run["batch_effective"] != run["batch"] else ""
    head = (f"\nbatch {run['batch']}{runs_as}: "
            f"{run['images']} images in {run['wall_s']:.2f} s = {run['images_per_s']:.1f} images/s, "
            f"{run['detections_per_image']:.1f} detections/image, peak RSS {run['peak_rss_mib']:.0f} MiB"
            + (f" (+{run['rss_added_mib']:.0f} MiB for this batch size)" if run["rss_added_mib"] is not None else ""))
    print(head)
    if run["note"]:
        print(f"  note: {run['note']}")
    rows = []
    for stage in STAGES:
        s = run["stages"][stage]
        label = "load (once)" if stage == "load" else stage
        rows.append([label, s["p50"], s["p90"], s["p99"], s["mean"], None if stage == "load" else s["images_per_s"]])
    print(format_table(["stage", "p50 ms", "p90 ms", "p99 ms", "mean ms", "images/s"], rows))


def baseline_report(baseline: Path, baseline_runs: list[dict], runs: list[dict]) -> dict:
    """Baseline / model p50 ratio per stage and batch size (> 1: the model is faster)."""
    ratios = {}
    for base, run in zip(baseline_runs, runs):
        ratios[str(run["batch"])] = {k: ratio(base["stages"][k]["p50"], run["stages"][k]["p50"])
                                     for k in STAGES if k != "load"}
        ratios[str(run["batch"])]["images_per_s"] = ratio(run["images_per_s"] or 0.0, base["images_per_s"] or 0.0)
    return {"model": str(baseline), "runs": baseline_runs,
            "ratio_baseline_over_model": ratios}


def print_baseline(baseline: dict, engine_label: str | None = None) -> None:
    on = f" on {engine_label}" if engine_label else ""
    print(f"\nbaseline {baseline['model']}{on}, timed interleaved with the model above:")
    for run in baseline["runs"]:
        print_run(run)
    rows = [[f"batch {b}"] + [r[k] for k in ("inference", "postprocess", "total", "images_per_s")]
            for b, r in baseline["ratio_baseline_over_model"].items()]
    print("\nbaseline / model (p50; images/s: model / baseline; > 1: the model is faster)")
    print(format_table(["", "inference", "postprocess", "total", "images/s"], rows))


# ------------------------------------------------------------------------------------------------ engines
def format_engine(settings: dict) -> str:
    """One line of what an engine runs with: version, device, precision, threads."""
    parts = [f"{settings.get('engine')} {settings.get('version')}", f"device {settings.get('device')}",
             f"precision {settings.get('precision')}", f"threads {settings.get('threads') or 'default'}"]
    if settings.get("providers"):
        parts.append(f"providers {settings['providers']}")
    return ", ".join(parts)


def engine_ratios(engines: list[EngineChoice], engine_runs: list[list[dict]]) -> dict:
    """First engine / each other engine, p50 per stage and batch size (> 1: that engine is faster);
    images/s the other way round. Empty with one engine."""
    out = {}
    for engine, these in zip(engines[1:], engine_runs[1:]):
        per_batch = {}
        for ref, run in zip(engine_runs[0], these):
            block = {k: ratio(ref["stages"][k]["p50"], run["stages"][k]["p50"]) for k in STAGES if k != "load"}
            block["images_per_s"] = ratio(run["images_per_s"] or 0.0, ref["images_per_s"] or 0.0)
            per_batch[str(run["batch"])] = block
        out[engine.label] = per_batch
    return out


def print_engine_ratios(first: str, ratios: dict) -> None:
    columns = ("preprocess", "inference", "decode", "nms", "masks", "postprocess", "total", "images_per_s")
    rows = [[f"{label} batch {b}"] + [r[k] for k in columns] for label, per_batch in ratios.items()
            for b, r in per_batch.items()]
    print(f"\n{first} / engine (p50 per stage; images/s: engine / {first}; > 1: the engine is faster)")
    print(format_table(["engine"] + [c.replace("images_per_s", "images/s") for c in columns], rows))


# ------------------------------------------------------------------------------------------------ Ultralytics
def _encode_masks_pycocotools(result) -> tuple[float, int]:
    """COCO RLE of every mask as the classic SegmentationValidator.pred_to_json does it; (ms, n)."""
    from pycocotools import mask as mask_utils

    t = time.perf_counter()
    n = 0
    if result.masks is not None:
        data = result.masks.data.cpu().numpy()
        for m in data:
            mask_utils.encode(np.asarray(m[:, :, None], order="F", dtype="uint8"))[0]
            n += 1
    return (time.perf_counter() - t) * 1e3, n


def run_compare(model: Path, reference: Path, images: list[np.ndarray], settings: dict, args, mode: str) -> dict:
    """Ultralytics' predict vs our batch-1 Predictor, interleaved per image."""
    import torch
    from ultralytics import YOLO

    ours = make_predictor(model, settings, args.threads, 1, args.engine[0], args.device)
    imgsz = list(ours.imgsz)
    rect = ours.spec.input_hw is None  # a fixed-size export letterboxes to a square: theirs must too
    yolo = YOLO(str(reference), task=ours.spec.task)
    kw = dict(conf=settings["conf"], iou=settings["iou"], max_det=settings["max_det"], imgsz=imgsz, rect=rect,
              retina_masks=settings["retina_masks"], device="cpu", verbose=False, save=False, batch=1)

    def theirs_one(img):
        res = yolo.predict(img, **kw)[0]
        sp = {k: float(res.speed[k]) for k in ("preprocess", "inference", "postprocess")}
        if mode == "val":
            rle_ms, _ = _encode_masks_pycocotools(res)
            sp["rle_encode"] = rle_ms
            sp["postprocess"] += rle_ms
        sp["total"] = sp["preprocess"] + sp["inference"] + sp["postprocess"]
        boxes = res.boxes if res.boxes is not None else res.obb  # oriented-box models fill obb instead
        return sp, len(boxes) if boxes is not None else 0

    for w in range(max(args.warmup, 1)):
        img = images[w % len(images)]
        theirs_one(img)
        ours.predict_batch([img])
        if w == 0 and args.threads is not None:
            # after Ultralytics' first predict: its select_device() resets torch to min(8, cores - 1) threads
            torch.set_num_threads(args.threads)

    s_ours: dict[str, list[float]] = {k: [] for k in COMPARE_STAGES}
    s_theirs: dict[str, list[float]] = {k: [] for k in COMPARE_STAGES + ("rle_encode",)}
    det_ours, det_theirs = [], []
    for _ in range(max(args.repeat, 1)):
        for img in images:
            res = ours.predict_batch(freshly_decoded([img]))[0]
            for k, v in _per_image(res).items():
                if k in s_ours:
                    s_ours[k].append(v)
            det_ours.append(len(res))
            sp, nd = theirs_one(freshly_decoded([img])[0])
            for k, v in sp.items():
                s_theirs[k].append(v)
            det_theirs.append(nd)

    ours_stats = {k: summarize(v) for k, v in s_ours.items()}
    theirs_stats = {k: summarize(v) for k, v in s_theirs.items() if v}
    ratios = {k: ratio(theirs_stats[k]["p50"], ours_stats[k]["p50"]) for k in COMPARE_STAGES}
    ratios_mean = {k: ratio(theirs_stats[k]["mean"], ours_stats[k]["mean"]) for k in COMPARE_STAGES}

    def host_share(st):
        inf = st["inference"]["p50"]
        return (st["preprocess"]["p50"] + st["postprocess"]["p50"]) / inf if inf > 0 else None

    import ultralytics

    return {
        "reference": str(reference),
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "settings": {k: v for k, v in kw.items() if k not in ("verbose", "save")},
        "postprocess_includes_rle_encode": mode == "val",
        "images": len(det_ours),
        "detections_per_image": {"ours": float(np.mean(det_ours)), "theirs": float(np.mean(det_theirs))},
        "ours": ours_stats,
        "theirs": theirs_stats,
        "ratio_theirs_over_ours": ratios,
        "ratio_theirs_over_ours_mean": ratios_mean,
        "host_share": {"ours": host_share(ours_stats), "theirs": host_share(theirs_stats)},
    }


def print_compare(cmp: dict) -> None:
    print(f"\nUltralytics {cmp['ultralytics']} predict ({cmp['reference']}, torch {cmp['torch']}, "
          f"{cmp['torch_threads']} threads) vs ours at batch 1, interleaved over {cmp['images']} images; "
          f"detections/image ours {cmp['detections_per_image']['ours']:.1f} / theirs "
          f"{cmp['detections_per_image']['theirs']:.1f}")
    if cmp["postprocess_includes_rle_encode"]:
        print("  val mode: their postprocess includes pycocotools mask.encode of every mask "
              f"(p50 {cmp['theirs']['rle_encode']['p50']:.2f} ms); ours includes our RLE encoding")
    rows = []
    for k in COMPARE_STAGES:
        rows.append([k, cmp["ours"][k]["p50"], cmp["theirs"][k]["p50"], cmp["ratio_theirs_over_ours"][k]])
    rows.append(["host share", cmp["host_share"]["ours"], cmp["host_share"]["theirs"], None])
    print(format_table(["stage (p50 ms)", "ours", "theirs", "theirs/ours"], rows))
    print("  host share = (preprocess + postprocess) / inference")


# ------------------------------------------------------------------------------------------------ cold start
# The child runs `python -m runtime.infer ARGS` through runpy and, on its way out, writes its own peak
# RSS (VmHWM of its address space) to stderr. wait4's ru_maxrss cannot serve: Linux carries the
# high-water mark of the address space a process had before exec into it, and subprocess spawns the
# child with this (large, bench-sized) process's memory mapped.
_PEAK_MARK = "__cold_start_peak_rss_kib="
_CHILD = ("import runpy, sys\n"
          "try:\n"
          "    runpy.run_module('runtime.infer', run_name='__main__', alter_sys=True)\n"
          "finally:\n"
          "    try:\n"
          "        hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
          "    except OSError:\n"
          "        hwm = []\n"
          f"    sys.stderr.write('\\n{_PEAK_MARK}' + (hwm[0] if hwm else '-1') + '\\n')\n")


def _run_child(args: list[str], env: dict, cwd: Path) -> tuple[float, float, int, str]:
    """Run ``python -m runtime.infer ARGS`` as a child; (wall s, its own peak RSS MiB, return code,
    stderr tail)."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _CHILD] + args, env=env, cwd=str(cwd),
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    head, _, kib = text.rpartition(_PEAK_MARK)
    try:
        peak_kib = int(kib.split()[0])
    except (ValueError, IndexError):
        peak_kib, head = -1, text
    if peak_kib < 0:
        peak_kib = usage.ru_maxrss  # no /proc: an upper bound (KiB on Linux)
    return wall, peak_kib / 1024, proc.returncode, head[-2000:]


def run_cold_start(model: Path, image: Path, repeat: int, threads: int | None,
                   engine: EngineChoice = EngineChoice(DEFAULT_ENGINE), device: str | None = None) -> dict:
    """Wall time and peak RSS of the CLI as a child process, after one untimed run (which fills the OS
    file cache and OpenVINO's compiled-model cache)."""
    args = [str(image), "--model", str(model), "--no-save"]
    if threads is not None:
        args += ["--threads", str(threads)]
    if engine.name != DEFAULT_ENGINE or engine.precision is not None:
        args += ["--engine", engine.name] + (["--precision", engine.precision] if engine.precision else [])
    if device is not None:
        args += ["--device", device]
    cmd = [sys.executable, "-m", "runtime.infer"] + args
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    warm_wall, warm_rss, rc, tail = _run_child(args, env, REPO_ROOT)  # fills the OS and OpenVINO caches
    if rc != 0:
        raise SystemExit(f"error: cold-start command failed (rc {rc}): {' '.join(cmd)}\n{tail}")
    walls, rsses = [], []
    for _ in range(max(repeat, 1)):
        wall, rss, rc, tail = _run_child(args, env, REPO_ROOT)
        if rc != 0:
            raise SystemExit(f"error: cold-start command failed (rc {rc}): {' '.join(cmd)}\n{tail}")
        walls.append(wall * 1e3)
        rsses.append(rss)
    return {
        "command": cmd,
        "warmup_run": {"wall_ms": warm_wall * 1e3, "peak_rss_mib": warm_rss},
        "wall_ms": summarize(walls),
        "peak_rss_mib": {"max": max(rsses), "min": min(rsses), "runs": rsses},
    }


def print_cold(cold: dict, engine_label: str | None = None) -> None:
    w = cold["wall_ms"]
    on = f" on {engine_label}" if engine_label else ""
    print(f"\nCLI cold start{on} ({w['count']} runs after 1 warm-up): wall p50 {w['p50']:.0f} ms "
          f"(min {w['min']:.0f}, max {w['max']:.0f}), child peak RSS {cold['peak_rss_mib']['max']:.0f} MiB")


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model.is_file():
        print(f"error: model {args.model} not found (export one: python tools/export.py M.pt -o M.onnx)",
              file=sys.stderr)
        return 2
    if args.video is not None:
        if args.compare_ultralytics is not None and not args.compare_ultralytics.is_file():
            print(f"error: --compare-ultralytics model {args.compare_ultralytics} not found", file=sys.stderr)
            return 2
        return run_video(args)
    if args.live_fps is not None:
        print("error: --live-fps needs --video FILE", file=sys.stderr)
        return 2
    for what, path in (("baseline model", args.baseline), ("--compare-ultralytics model", args.compare_ultralytics)):
        # Ultralytics also loads its OpenVINO exports, which are folders (e.g. the NNCF INT8 peer)
        exists = path is not None and (path.is_file() or (what != "baseline model" and path.is_dir()))
        if path is not None and not exists:
            print(f"error: {what} {path} not found", file=sys.stderr)
            return 2
    try:
        paths = resolve_images(args.images, args.limit)
        images = load_images(paths)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = MODES[args.mode]
    facts = machine_facts()
    print(format_machine(facts))

    engines: list[EngineChoice] = args.engine
    models = [(args.model, e) for e in engines]
    if args.baseline is not None:
        models += [(args.baseline, e) for e in engines]
    try:
        all_runs = run_ours(models, images, args.batch, settings, args)
        spec_probe = make_predictor(args.model, settings, args.threads, None, engines[0], args.device).spec
    except YoloRuntimeError as exc:  # an engine that is not installed, or an option it refuses
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine_runs, baseline_runs = all_runs[:len(engines)], all_runs[len(engines):]
    runs = engine_runs[0]
    rt = runtime_facts()
    print(f"runtime {rt['version']}: decode kernels {rt['decode_backend']}")
    first = runs[0]
    print(f"\nmodel {args.model} ({spec_probe.task}, input {spec_probe.input_hw or 'dynamic H/W'}, batch "
          f"{spec_probe.batch or 'dynamic'}), mode {args.mode} (conf {settings['conf']}, iou {settings['iou']}, "
          f"max_det {settings['max_det']}, masks {'native RLE' if settings['rle_masks'] else 'letterbox bitmaps'}), "
          f"{len(images)} images x {max(args.repeat, 1)} passes, warmup {args.warmup}")
    for engine, these in zip(engines, engine_runs):
        print(f"\nengine {engine.label}: {format_engine(these[0]['engine'])}")
        for run in these:
            print_run(run)
    base = next((r for r in runs if r["batch_effective"] == 1), first)
    scaling = {str(r["batch"]): ratio(r["images_per_s"] or 0.0, base["images_per_s"] or 0.0) for r in runs}
    if len(runs) > 1:
        print(f"\nthroughput vs batch {base['batch']}{f' on {engines[0].label}' if len(engines) > 1 else ''}: "
              + ", ".join(f"batch {k}: {v:.2f}x" for k, v in scaling.items() if v is not None))

    baselines: list[dict | None] = [None] * len(engines)
    for k, these in enumerate(baseline_runs):
        baselines[k] = baseline_report(args.baseline, these, engine_runs[k])
        print_baseline(baselines[k], engines[k].label if len(engines) > 1 else None)

    ratios = engine_ratios(engines, engine_runs)
    if ratios:
        print_engine_ratios(engines[0].label, ratios)

    compare = None
    if args.compare_ultralytics is not None:
        compare = run_compare(args.model, args.compare_ultralytics, images, settings, args, args.mode)
        print_compare(compare)

    colds: list[dict | None] = [None] * len(engines)
    if args.cold_start:
        for k, engine in enumerate(engines):
            try:
                colds[k] = run_cold_start(args.model, paths[0], args.cold_repeat, args.threads, engine, args.device)
            except SystemExit as exc:
                print(exc, file=sys.stderr)
                return 2
            print_cold(colds[k], engine.label if len(engines) > 1 else None)

    report = {
        "tool": "bench/latency.py",
        "schema": SCHEMA_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "model": str(args.model),
            "images": str(args.images or paths[0].parent),
            "n_images": len(images),
            "batch": list(args.batch),
            "threads": args.threads,
            "warmup": args.warmup,
            "repeat": max(args.repeat, 1),
            "mode": args.mode,
            **settings,
            "compare_ultralytics": str(args.compare_ultralytics) if args.compare_ultralytics else None,
            "baseline": str(args.baseline) if args.baseline else None,
            "cold_start": bool(args.cold_start),
            "engines": [e.label for e in engines],
            "device": args.device,
        },
        "machine": facts,
        "runtime": rt,
        "model": {
            "task": spec_probe.task,
            "layout": spec_probe.layout,
            "input_hw": list(spec_probe.input_hw) if spec_probe.input_hw else None,
            "imgsz": list(spec_probe.imgsz),
            "fixed_batch": spec_probe.batch,
            "classes": spec_probe.nc,
        },
        "stages": list(STAGES),
        "runs": runs,
        "throughput_vs_batch1": scaling,
        "baseline": baselines[0],
        "compare_ultralytics": compare,
        "cold_start": colds[0],
        "engines": [{"label": e.label, "engine": e.name, "precision_asked": e.precision,
                     "settings": these[0]["engine"], "runs": these, "baseline": baselines[k], "cold_start": colds[k],
                     "ratio_first_over_this": ratios.get(e.label)}
                    for k, (e, these) in enumerate(zip(engines, engine_runs))],
    }
    if args.json is not None:
        from runtime.io.files import atomic_write_text

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
