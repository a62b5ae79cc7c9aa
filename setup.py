"""Build optimc._core: the C kernels (csrc/, plain C) and their CPython
binding (csrc/binding/). POSIX only: the thread pool uses pthreads."""
import glob

import numpy as np
from setuptools import Extension, setup

# Never -ffast-math/-Ofast: it changes floating-point behaviour process-wide.
# Contraction off: no a*b+c fused behind our back, so every SIMD level and
# every thread split computes the same bits.
CFLAGS = ["-std=c11", "-O3", "-fno-math-errno", "-ffp-contract=off", "-fvisibility=hidden"]

# The one list of C sources: the kernel library, then the binding.
KERNEL_SOURCES = ["csrc/engine.c", "csrc/pool.c", "csrc/runtime.c", "csrc/sparse.c",
                  "csrc/quantize.c", "csrc/lowprec.c",
                  "csrc/kernels_baseline.c", "csrc/kernels_avx2.c", "csrc/kernels_avx512.c",
                  "csrc/lbfgs.c", "csrc/muon.c"]
BINDING_SOURCES = sorted(glob.glob("csrc/binding/*.c"))

setup(
    ext_modules=[
        Extension(
            "optimc._core",
            sources=KERNEL_SOURCES + BINDING_SOURCES,
            include_dirs=[np.get_include(), "csrc"],
            depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/rules/*.h") + glob.glob("csrc/binding/*.h")),
            extra_compile_args=CFLAGS,
            define_macros=[("OPTIMC_CFLAGS", '"' + " ".join(CFLAGS) + '"')],
            libraries=["m"],
        )
    ]
)
