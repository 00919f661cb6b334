"""Build the kernels in ext/ as private modules of the runtime package.

Cython: _nms, _masks, _preprocess and _anchors of runtime.kernels. Numba, ahead of time:
runtime.kernels._decode_aot (from runtime/kernels/_decode_kernels.py; see ext/decode_aot.py).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
}

# _masks runs detections in parallel with OpenMP (GCC / Linux; elsewhere it builds serial).
# _masks and _nms never contract a * b + c into an FMA, so their float32 results
# stay those of separate multiply and add (numpy's, torch's) even when CFLAGS add -march=... .
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
NO_FMA = [] if sys.platform == "win32" else ["-ffp-contract=off"]
HEADERS = ["ext/stream_store.h", "ext/isa_clones.h"]  # shared by the kernels that include ext/

EXTENSIONS = [
    Extension("runtime.kernels._nms", ["ext/nms.pyx"], include_dirs=[np.get_include()],
              extra_compile_args=["-O3", *NO_FMA]),
    Extension("runtime.kernels._masks", ["ext/masks.pyx"], include_dirs=[np.get_include(), "ext"], depends=HEADERS,
              extra_compile_args=["-O3", *NO_FMA, *OPENMP], extra_link_args=OPENMP),
    Extension("runtime.kernels._preprocess", ["ext/preprocess.pyx"], include_dirs=["ext"], depends=HEADERS,
              extra_compile_args=["-O3"]),
    Extension("runtime.kernels._anchors", ["ext/anchors.pyx"], extra_compile_args=["-O3"]),
]


def decode_aot_extension():
    root = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location("decode_aot", root / "ext" / "decode_aot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.decode_aot_extension(root)


setup(ext_modules=cythonize(EXTENSIONS, compiler_directives=COMPILER_DIRECTIVES) + [decode_aot_extension()])
