"""Test set-up: make sure the tests exercise the built extension; one thread for torch."""
import os
import sys

import pytest


def pytest_report_header(config):
    import optimc
    cfg = optimc.show_config(print_it=False)
    return [f"optimc {optimc.__version__} from {os.path.dirname(optimc.__file__)}",
            f"optimc engine: simd={cfg['simd']} threads={cfg['num_threads']} flags: {cfg['compile_flags']}"]


def pytest_configure(config):
    try:
        import optimc._core  # noqa: F401
    except ImportError as e:  # a source tree without the built extension
        raise pytest.UsageError(
            f"optimc's C extension is not built ({e}); install first: pip install '.[test]'") from e


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # The reference libraries' own thread pools: torch's OpenMP threads spin while
    # they wait, so where CI's legs share two cores (and on any busy machine) one
    # torch step can take ten times longer than with one thread. The parity tests
    # step small tensors, which torch does not split over threads anyway, so one
    # thread gives the same results. (torch is set up only if a test imported it.)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads") and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
