"""Build the plain-C kernel test driver (tests/c/test_kernels.c) and run it:
the kernels are testable without Python."""
import ast
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")


def kernel_sources():
    """setup.py's one list of the kernel library's sources (no Python in them)."""
    text = open(os.path.join(ROOT, "setup.py")).read()
    listed = re.search(r"KERNEL_SOURCES = (\[.*?\])", text, re.S).group(1)
    return [os.path.join(ROOT, f) for f in ast.literal_eval(listed)]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX build line")
def test_c_driver(tmp_path):
    exe = tmp_path / "test_kernels"
    sources = [os.path.join(ROOT, "tests", "c", "test_kernels.c")] + kernel_sources()
    subprocess.run(["cc", "-std=c11", "-O2", "-ffp-contract=off", "-fno-math-errno", "-Wall",
                    "-I", CSRC, *sources, "-lm", "-lpthread", "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 failed" in out.stdout
