"""Build the kernels in ext/ as private modules of the runtime package.

Cython: runtime._nms, runtime._masks, runtime._preprocess, runtime._anchors, runtime._prefetch. Numba, ahead of
time: runtime._decode_aot (from runtime/_decode_kernels.py; see ext/decode_aot.py).
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

# runtime._masks runs detections in parallel with OpenMP (GCC / Linux; elsewhere it builds serial).
# runtime._masks and runtime._nms never contract a * b + c into an FMA, so their float32 results
# stay those of separate multiply and add (numpy's, torch's) even when CFLAGS add -march=... .
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
NO_FMA = [] if sys.platform == "win32" else ["-ffp-contract=off"]
HEADERS = ["ext/stream_store.h", "ext/isa_clones.h"]  # shared by the kernels that include ext/

EXTENSIONS = [
    Extension("runtime._nms", ["ext/nms.pyx"], include_dirs=[np.get_include()],
              extra_compile_args=["-O3", *NO_FMA]),
    Extension("runtime._masks", ["ext/masks.pyx"], include_dirs=[np.get_include(), "ext"], depends=HEADERS,
              extra_compile_args=["-O3", *NO_FMA, *OPENMP], extra_link_args=OPENMP),
    Extension("runtime._preprocess", ["ext/preprocess.pyx"], include_dirs=["ext"], depends=HEADERS,
              extra_compile_args=["-O3"]),
    Extension("runtime._anchors", ["ext/anchors.pyx"], extra_compile_args=["-O3"]),
    Extension("runtime._prefetch", ["ext/prefetch.pyx"], include_dirs=[np.get_include(), "ext"],
              depends=["ext/prefetch_worker.h"], extra_compile_args=["-O3"], extra_link_args=["-pthread"]),
]


def decode_aot_extension():
    root = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location("decode_aot", root / "ext" / "decode_aot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.decode_aot_extension(root)


setup(ext_modules=cythonize(EXTENSIONS, compiler_directives=COMPILER_DIRECTIVES) + [decode_aot_extension()])
