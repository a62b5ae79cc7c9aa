"""Build the plain-C kernel test driver (tests/c/test_kernels.c) and run it:
the kernels are testable without Python."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX build line")
def test_c_driver(tmp_path):
    exe = tmp_path / "test_kernels"
    sources = [os.path.join(ROOT, "tests", "c", "test_kernels.c")] + [
        os.path.join(CSRC, f) for f in
        ("engine.c", "pool.c", "runtime.c", "kernels_baseline.c", "kernels_avx2.c", "kernels_avx512.c")]
    subprocess.run(["cc", "-std=c11", "-O2", "-ffp-contract=off", "-fno-math-errno", "-Wall",
                    "-I", CSRC, *sources, "-lm", "-lpthread", "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 failed" in out.stdout
