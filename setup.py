"""Build the Cython kernels in ext/ as private modules of the runtime package."""

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

EXTENSIONS = [
    Extension("runtime._nms", ["ext/nms.pyx"], include_dirs=[np.get_include()], extra_compile_args=["-O3"]),
    Extension("runtime._masks", ["ext/masks.pyx"], include_dirs=[np.get_include()], extra_compile_args=["-O3"]),
    Extension("runtime._preprocess", ["ext/preprocess.pyx"], extra_compile_args=["-O3"]),
]

setup(ext_modules=cythonize(EXTENSIONS, compiler_directives=COMPILER_DIRECTIVES))
