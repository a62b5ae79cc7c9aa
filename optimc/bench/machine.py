"""Where the benchmark ran: the machine, the build, and how busy the machine was."""

from __future__ import annotations

import os
import platform
import subprocess
import time

import numpy as np

from .. import _core

__all__ = ["machine_info", "cpu_times", "git_revision"]


def cpu_times():
    """(busy, steal) CPU seconds of the whole machine from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / hz, steal / hz


def git_revision():
    """The source tree's commit (and whether it has local changes), if it is a checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "csrc",
                                "optimc", "setup.py"], capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _first_line_value(path, prefix):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info(torch) -> dict:
    import optimc
    info = dict(platform=platform.platform(), python=platform.python_version(),
                numpy=np.__version__, optimc=optimc.__version__,
                torch=getattr(torch, "__version__", None) if torch is not None else None,
                cpu_count=os.cpu_count(), config=optimc.show_config(print_it=False),
                source=git_revision(), extension=getattr(_core, "__file__", None))
    try:
        info["extension_built"] = time.strftime(
            "%Y-%m-%dT%H:%M:%S%z", time.localtime(os.path.getmtime(_core.__file__)))
    except (OSError, TypeError):
        pass
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    info["cpu_model"] = _first_line_value("/proc/cpuinfo", "model name") or platform.processor()
    mem = _first_line_value("/proc/meminfo", "MemTotal")
    if mem:
        info["memory_gib"] = round(int(mem.split()[0]) / 2 ** 20, 1)
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = os.getloadavg()
    info["env"] = {k: os.environ[k] for k in ("OPTIMC_SIMD", "OPTIMC_NUM_THREADS",
                                              "OMP_NUM_THREADS", "OPENBLAS_CORETYPE",
                                              "OPENBLAS_L2_SIZE") if k in os.environ}
    return info
