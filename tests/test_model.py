"""The synchronous Model and the head it picks, on the tiny models (no torch needed)."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from runtime import ModelError, Predictor
from runtime.engines import open_engine
from runtime.heads import HeadSettings, head_for
from runtime.heads.dfl import DflHead
from runtime.heads.stock import StockHead
from runtime.model import Model
from runtime.records.spec import read_model_spec


def _spec(path):
    engine = open_engine(path, "onnxruntime", threads=1)
    return read_model_spec(path, engine.metadata, engine.inputs, engine.outputs)


@pytest.fixture(scope="module")
def images(pictures) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in pictures]


@pytest.mark.parametrize("model, layout, head", [
    ("tiny_detect_onnx", "truncated", DflHead),
    ("tiny_seg_onnx", "truncated", DflHead),
    ("tiny_pose_onnx", "truncated", DflHead),
    ("tiny_stock_onnx", "standard", StockHead),
], ids=["detect", "segment", "pose", "stock"])
def test_head_for_picks_the_head_of_the_layout(model, layout, head, request):
    spec = _spec(request.getfixturevalue(model))
    settings = HeadSettings(conf=0.4, max_det=7)
    chosen = head_for(spec, settings)
    assert spec.layout == layout and type(chosen) is head
    assert chosen.spec is spec and chosen.settings is settings
    assert [h.accepts(spec) for h in (DflHead, StockHead)] == [head is DflHead, head is StockHead]


def test_head_for_refuses_a_layout_no_head_reads(tiny_detect_onnx):
    spec = dataclasses.replace(_spec(tiny_detect_onnx), layout="one-to-one")
    with pytest.raises(ModelError, match=r"tiny-detect.*\.onnx: no head reads a one-to-one detect model"):
        head_for(spec, HeadSettings())


def test_the_spec_reads_what_the_tiny_files_say(tiny_seg_onnx, tiny_pose_onnx):
    seg, pose = _spec(tiny_seg_onnx), _spec(tiny_pose_onnx)
    assert (seg.task, seg.nc, seg.nm, seg.strides, seg.reg_max) == ("segment", 80, 32, (8, 16, 32), 16)
    assert (seg.input_dtype, seg.batch, seg.input_hw, seg.proto) == ("uint8", None, (64, 64), "proto")
    assert [lv.extra for lv in seg.levels] == ["mc_p3", "mc_p4", "mc_p5"]
    assert (pose.task, pose.names, pose.kpt_shape) == ("pose", ("person",), (17, 3))


@pytest.mark.parametrize("model", ["tiny_seg_onnx", "tiny_pose_onnx", "tiny_stock_onnx"])
def test_model_runs_synchronously(model, images, request):
    """A Model starts no thread of its own: loading it and running batches leaves the threads as they were."""
    path = request.getfixturevalue(model)
    before = set(threading.enumerate())
    model_ = Model(path, batch=2)
    results = model_(images)
    results += model_(images[::-1])
    started = [t.name for t in set(threading.enumerate()) - before]
    assert not started, f"the Model started threads: {started}"
    assert len(results) == 4 and sum(len(r) for r in results) > 0
    reference = Predictor(path, threads=1).predict(images + images[::-1])
    for ours, ref in zip(results, reference):
        np.testing.assert_array_equal(ours.xyxy, ref.xyxy)
        np.testing.assert_array_equal(ours.class_ids, ref.class_ids)


def test_model_steps_run_on_any_thread(tiny_seg_onnx, images):
    """prepare, infer and results may each run on a different thread (as the Pipeline runs them)."""
    model = Model(tiny_seg_onnx)
    reference = model(images)
    with ThreadPoolExecutor(3) as pool:
        prepared = pool.submit(model.prepare, images).result()
        inferred = pool.submit(model.infer, prepared).result()
        rows = [pool.submit(model.results, inferred, [k]) for k in range(len(images))]
        results = [r for future in rows for r in future.result()]
    assert sum(len(r) for r in results) > 0
    for ours, ref in zip(results, reference):
        np.testing.assert_array_equal(ours.xyxy, ref.xyxy)
        np.testing.assert_array_equal(ours.masks, ref.masks)
