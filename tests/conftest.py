"""Test set-up: make sure the tests exercise the built extension."""
import os

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
