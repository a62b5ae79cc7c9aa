"""Build optimc._core: the C kernels (csrc/) and their CPython binding."""
import sys

import numpy as np
from setuptools import Extension, setup

# Never -ffast-math/-Ofast: it changes floating-point behaviour process-wide.
# Contraction off: no a*b+c fused behind our back, so every SIMD level and
# every thread split computes the same bits.
CFLAGS = ["-std=c11", "-O3", "-fno-math-errno", "-ffp-contract=off", "-fvisibility=hidden"]
if sys.platform == "win32":
    CFLAGS = ["/O2", "/fp:precise"]

SOURCES = [
    "csrc/module.c",
    "csrc/engine.c",
    "csrc/pool.c",
    "csrc/runtime.c",
    "csrc/kernels_baseline.c",
    "csrc/kernels_avx2.c",
    "csrc/kernels_avx512.c",
]

setup(
    ext_modules=[
        Extension(
            "optimc._core",
            sources=SOURCES,
            include_dirs=[np.get_include(), "csrc"],
            depends=["csrc/optimc.h", "csrc/kernels.h", "csrc/kernels_impl.h", "csrc/pool.h", "csrc/runtime.h"]
            + [f"csrc/rules/{n}.h" for n in (
                "all", "common", "aux", "sgd", "adagrad", "rmsprop", "adadelta",
                "adam", "adamax", "nadam", "radam", "lion")],
            extra_compile_args=CFLAGS,
            define_macros=[("OPTIMC_CFLAGS", '"' + " ".join(CFLAGS) + '"')],
            libraries=["m"] if sys.platform != "win32" else [],
        )
    ]
)
