"""Ahead-of-time build of the Numba decode kernels (runtime/_decode_kernels.py) into runtime._decode_aot.

The kernels are written once, as Numba functions. Compiled ahead of time they import without Numba or
LLVM, which keeps a cold process (the CLI) fast and small; the JIT path (with its on-disk cache) stays
for level counts not compiled here and for development.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

LEVEL_COUNTS = (3, 4)  # P3-P5 models and P3-P6 models


def load_kernel_source(repo_root: Path):
    """Import runtime/_decode_kernels.py by path, without importing the runtime package."""
    path = repo_root / "runtime" / "_decode_kernels.py"
    spec = importlib.util.spec_from_file_location("runtime._decode_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode_aot_compiler(repo_root: Path):
    """A numba.pycc.CC exporting decode_truncated_image_<L> and decode_standard_image."""
    import warnings

    from numba import types

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc announces its pending deprecation
        from numba.pycc import CC

    kernels = load_kernel_source(repo_root)
    cc = CC("_decode_aot", kernels)  # placed beside the kernels' module: runtime._decode_aot
    f32_2d = types.Array(types.float32, 2, "C")
    i64_1d = types.Array(types.int64, 1, "C")
    f64_1d = types.Array(types.float64, 1, "C")
    bool_1d = types.Array(types.boolean, 1, "C")
    result = types.Tuple((f32_2d, types.Array(types.float32, 1, "C"), types.Array(types.int32, 1, "C"), i64_1d))
    for levels in LEVEL_COUNTS:
        level_maps = types.UniTuple(f32_2d, levels)
        signature = result(level_maps, level_maps, i64_1d, f64_1d, f64_1d, types.float64, types.float32, bool_1d,
                           types.boolean, types.int64)
        cc.export(f"decode_truncated_image_{levels}", signature)(kernels.decode_truncated_image.py_func)
    signature = result(f32_2d, types.int64, types.float32, bool_1d, types.boolean, types.int64)
    cc.export("decode_standard_image", signature)(kernels.decode_standard_image.py_func)
    return cc
