"""Build the kernels in ext/ as private modules of runtime.kernels (Cython): _decode, _nms, _masks, _preprocess,
_anchors, _resample and _obb.

Built for the baseline ISA of the target (x86-64: SSE2), so a build runs on any CPU of its platform;
the vector loops that gain from wider units carry AVX2 (and AVX-512) clones picked at load time (ext/isa_clones.h).
"""

import sys

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
# _decode, _masks and _nms never contract a * b + c into an FMA, so their float32 results
# stay those of separate multiply and add (numpy's, torch's) even when CFLAGS add -march=... .
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
NO_FMA = [] if sys.platform == "win32" else ["-ffp-contract=off"]
# runtime._decode's DFL clamps with a compare: no trapping math lets that vectorise (FP exceptions are masked
# anyway, results do not change).
NO_TRAPS = [] if sys.platform == "win32" else ["-fno-trapping-math"]
HEADERS = ["ext/stream_store.h", "ext/isa_clones.h"]  # shared by the kernels that include ext/

EXTENSIONS = [
    Extension("runtime.kernels._decode", ["ext/decode.pyx"], include_dirs=[np.get_include(), "ext"], depends=HEADERS,
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")], extra_compile_args=["-O3", *NO_FMA, *NO_TRAPS]),
    Extension("runtime.kernels._nms", ["ext/nms.pyx"], include_dirs=[np.get_include()],
              extra_compile_args=["-O3", *NO_FMA]),
    Extension("runtime.kernels._masks", ["ext/masks.pyx"], include_dirs=[np.get_include(), "ext"], depends=HEADERS,
              extra_compile_args=["-O3", *NO_FMA, *OPENMP], extra_link_args=OPENMP),
    Extension("runtime.kernels._preprocess", ["ext/preprocess.pyx"], include_dirs=["ext"], depends=HEADERS,
              extra_compile_args=["-O3"]),
    Extension("runtime.kernels._anchors", ["ext/anchors.pyx"], extra_compile_args=["-O3"]),
    Extension("runtime.kernels._resample", ["ext/resample.pyx"], include_dirs=["ext"], depends=HEADERS,
              extra_compile_args=["-O3"]),
    Extension("runtime.kernels._obb", ["ext/obb.pyx"], include_dirs=[np.get_include()], extra_compile_args=["-O3", *NO_FMA]),
]


setup(ext_modules=cythonize(EXTENSIONS, compiler_directives=COMPILER_DIRECTIVES))
