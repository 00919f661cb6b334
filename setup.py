"""Build the kernels in ext/ as private modules of the runtime package (Cython): runtime._decode,
runtime._nms, runtime._masks, runtime._preprocess, runtime._anchors, runtime._prefetch.

Built for the baseline ISA of the target (x86-64: SSE2), so a build runs on any CPU of its platform;
the vector loops that gain from AVX2 carry an AVX2 clone picked at load time (ext/isa_clones.h).
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

# runtime._masks runs detections in parallel with OpenMP (GCC / Linux; elsewhere it builds serial).
# runtime._decode, runtime._masks and runtime._nms never contract a * b + c into an FMA, so their float32 results
# stay those of separate multiply and add (numpy's, torch's) even when CFLAGS add -march=... .
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
NO_FMA = [] if sys.platform == "win32" else ["-ffp-contract=off"]
# runtime._decode's DFL clamps with a compare: no trapping math lets that vectorise (FP exceptions are masked
# anyway, results do not change).
NO_TRAPS = [] if sys.platform == "win32" else ["-fno-trapping-math"]
HEADERS = ["ext/stream_store.h", "ext/isa_clones.h"]  # shared by the kernels that include ext/

EXTENSIONS = [
    Extension("runtime._decode", ["ext/decode.pyx"], include_dirs=[np.get_include(), "ext"], depends=HEADERS,
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")], extra_compile_args=["-O3", *NO_FMA, *NO_TRAPS]),
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


setup(ext_modules=cythonize(EXTENSIONS, compiler_directives=COMPILER_DIRECTIVES))
