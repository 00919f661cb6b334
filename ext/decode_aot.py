"""Ahead-of-time build of the Numba decode kernels (runtime/kernels/_decode_kernels.py) into runtime.kernels._decode_aot.

The kernels are written once, as Numba functions. Compiled ahead of time they import without Numba or
LLVM, which keeps a cold process (the CLI) fast and small; the JIT path (with its on-disk cache) stays
for level counts not compiled here and for development.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

LEVEL_COUNTS = (3, 4)  # P3-P5 models and P3-P6 models


SOURCE_NAME = "_runtime_decode_kernels_source"


def load_kernel_source(repo_root: Path):
    """Import runtime/kernels/_decode_kernels.py by path as a top-level module, without the runtime package
    (whose imports, OpenCV among them, are not in the build environment)."""
    path = repo_root / "runtime" / "kernels" / "_decode_kernels.py"
    spec = importlib.util.spec_from_file_location(SOURCE_NAME, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[SOURCE_NAME] = module  # Numba looks the module up while compiling
    spec.loader.exec_module(module)
    return module


def decode_aot_compiler(repo_root: Path):
    """A numba.pycc.CC exporting decode_truncated_image_<L> and decode_standard_image."""
    import os
    import tempfile
    import warnings

    # Compile from source: never load the JIT's on-disk cache, whose entries import the runtime package.
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-aot-build-")

    from numba import types

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc announces its pending deprecation
        from numba.pycc import CC
        from numba.pycc import compiler as pycc_compiler

    class ReleaseGilFlags(pycc_compiler.Flags):
        """pycc's compile flags plus release_gil: the exported wrappers drop the GIL around the kernel,
        as the JIT's nogil=True does, so other Python threads run while an image decodes."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True

    pycc_compiler.Flags = ReleaseGilFlags  # pycc builds its Flags() when it compiles the exports
    kernels = load_kernel_source(repo_root)
    cc = CC("_decode_aot", kernels)
    cc.target_cpu = "host"  # built where it runs (pip builds from source), like the JIT would compile
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


def decode_aot_extension(repo_root: Path):
    """The setuptools Extension building runtime.kernels._decode_aot."""
    extension = decode_aot_compiler(repo_root).distutils_extension()
    extension.name = "runtime.kernels._decode_aot"
    return extension
