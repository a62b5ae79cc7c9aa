"""Run-time configuration of the C engine: SIMD level and threads.

The environment variables OPTIMC_NUM_THREADS and OPTIMC_SIMD set the initial
values (read by the C engine, csrc/runtime.c); an invalid value falls back to
the default there, and this module warns about it at import."""
import os
import re
import warnings

from . import _core

MAX_THREADS = 256                        # csrc/runtime.h: OPTIMC_MAX_THREADS
LEVELS = ("baseline", "avx2", "avx512")  # lowest first, as in csrc/optimc.h


def show_config(print_it=True):
    """Print the SIMD level in use (and the CPU's best), the thread count, the
    bytes a step must move (reads + writes) to be split over threads, the
    compile flags and the CPU features in use past the SIMD level (each gives
    the same bits as the code without it). With ``print_it=False`` return them as a dict instead of
    printing (printing and returning would show them twice in a notebook)."""
    cfg = _core.config()
    if not print_it:
        return cfg
    for k, v in cfg.items():
        print(f"{k:>16}: {v}")
    return None


def set_num_threads(n):
    """Use `n` threads (1..256) for large steps (results are identical for any n).
    The environment variable OPTIMC_NUM_THREADS sets the initial value."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int, got {n!r}")
    _core.set_num_threads(n)


def get_num_threads():
    return _core.config()["num_threads"]


def set_simd(level):
    """Use SIMD level 'baseline', 'avx2' or 'avx512' (at most the CPU's).
    The environment variable OPTIMC_SIMD lowers the level at import."""
    return _core.set_simd(level)


# The same rules as csrc/runtime.c (optimc_parse_num_threads / optimc_parse_simd):
# unset or empty means the default; tests/test_config.py checks that both agree.
def _valid_num_threads(text):
    m = re.fullmatch(r"\s*([0-9]+)\s*", text, re.ASCII)
    return m is not None and 1 <= int(m[1]) <= MAX_THREADS


def _warn_about_environment():
    cfg = _core.config()
    text = os.environ.get("OPTIMC_NUM_THREADS", "")
    if text and not _valid_num_threads(text):
        warnings.warn(f"OPTIMC_NUM_THREADS={text!r} is not a whole number of threads in 1..{MAX_THREADS}; "
                      f"using {cfg['num_threads']} (the CPUs available) instead", RuntimeWarning, stacklevel=4)
    text = os.environ.get("OPTIMC_SIMD", "")
    if text and text not in LEVELS:
        warnings.warn(f"OPTIMC_SIMD={text!r} is not one of {', '.join(map(repr, LEVELS))}; "
                      f"using {cfg['simd']!r} (the best this CPU supports) instead", RuntimeWarning, stacklevel=4)
    elif text and LEVELS.index(text) > LEVELS.index(cfg["cpu_simd"]):
        warnings.warn(f"OPTIMC_SIMD={text!r} is above what this CPU supports; using {cfg['simd']!r} instead",
                      RuntimeWarning, stacklevel=4)


_warn_about_environment()
