"""Batch jobs over large sets of images and videos, on this machine or on a Ray cluster.

* ``python -m runtime.batch SOURCE --model M.onnx --out DIR`` (:mod:`runtime.batch.cli`): resumable Parquet or
  JSONL shards of the CLI's ``--jsonl`` records, skipped inputs listed, ``--ray`` to run on Ray Data.
* :class:`runtime.batch.ray_predictor.BatchPredictor`: a callable class for your own Ray pipelines
  (``ds.map_batches(BatchPredictor, fn_constructor_kwargs={"model": "m.onnx"}, concurrency=4)``); it takes the
  ``image`` column of ``ray.data.read_images`` (RGB) or the ``image_bgr`` column of
  :func:`runtime.batch.ray_predictor.read_media` and returns the rows of :mod:`runtime.batch.rows`.

Nothing here imports Ray until a Ray job or the callable class runs.
"""

from runtime.batch.job import BatchJob, JobReport
from runtime.batch.rows import COLUMNS, record_to_row, row_to_record

__all__ = ["BatchJob", "JobReport", "COLUMNS", "record_to_row", "row_to_record"]
