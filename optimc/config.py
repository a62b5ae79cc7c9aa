"""Run-time configuration of the C engine: SIMD level and threads."""
from . import _core


def show_config(print_it=True):
    """The SIMD level in use (and the CPU's best), thread count, the bytes a
    step must move (reads + writes) to be split over threads, and the compile flags.
    Prints them and returns them as a dict."""
    cfg = _core.config()
    if print_it:
        for k, v in cfg.items():
            print(f"{k:>16}: {v}")
    return cfg


def set_num_threads(n):
    """Use `n` threads for large steps (results are identical for any n).
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
