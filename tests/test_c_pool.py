"""Build the plain-C pool driver (tests/c/test_pool.c) and run it, plainly and
under ThreadSanitizer (which sees the pool's ordering races even when a run's
timing hides them)."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
SOURCES = [os.path.join(ROOT, "tests", "c", "test_pool.c"),
           os.path.join(CSRC, "pool.c"), os.path.join(CSRC, "runtime.c")]

pytestmark = [pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler"),
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX build line and fork")]


def build(exe, *flags):
    return subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", CSRC, *flags, *SOURCES,
                           "-lpthread", "-o", str(exe)], capture_output=True, text=True)


def test_c_pool_driver(tmp_path):
    built = build(tmp_path / "test_pool", "-O2")
    assert built.returncode == 0, built.stderr
    out = subprocess.run([str(tmp_path / "test_pool")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and " 0 failed" in out.stdout, out.stdout + out.stderr


def test_c_pool_driver_under_thread_sanitizer(tmp_path):
    built = build(tmp_path / "test_pool_tsan", "-O1", "-g", "-fsanitize=thread")
    if built.returncode != 0:
        pytest.skip(f"no ThreadSanitizer with this compiler: {built.stderr.strip()[-200:]}")
    # die_after_fork=0: the driver's children start threads after a threaded fork on purpose
    env = dict(os.environ, TSAN_OPTIONS="die_after_fork=0 halt_on_error=1 exitcode=66")
    out = subprocess.run([str(tmp_path / "test_pool_tsan"), "quick"], capture_output=True, text=True, timeout=900, env=env)
    if "FATAL: ThreadSanitizer" in out.stderr and "unexpected memory mapping" in out.stderr:
        pytest.skip("ThreadSanitizer cannot run on this kernel's address layout")
    assert out.returncode == 0 and " 0 failed" in out.stdout, out.stdout + out.stderr[-4000:]
    assert "ThreadSanitizer" not in out.stderr, out.stderr[-4000:]
