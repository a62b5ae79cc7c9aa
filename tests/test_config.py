"""Run-time configuration: show_config, set_num_threads/set_simd, and the
environment variables read at import (invalid values warn and fall back)."""
import json
import os
import subprocess
import sys

import pytest

import optimc

LEVELS = ["baseline", "avx2", "avx512"]
CPU_SIMD = optimc.show_config(print_it=False)["cpu_simd"]

# Imports optimc with the environment given and reports what it saw.
PROBE = r'''
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import optimc
cfg = optimc.show_config(print_it=False)
print(json.dumps({"warnings": [(w.category.__name__, str(w.message), w.filename) for w in caught],
                  "num_threads": cfg["num_threads"], "simd": cfg["simd"]}))
'''


def import_with(**env):
    full = {k: v for k, v in os.environ.items() if k not in ("OPTIMC_NUM_THREADS", "OPTIMC_SIMD")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=full, timeout=120,
                         cwd=os.path.dirname(os.path.abspath(__file__)))   # not a clone's root (see _snapshot)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def default_threads():
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(n, 256)


@pytest.mark.parametrize("text, want", [("1", 1), ("3", 3), (" 7\n", 7), ("256", 256), ("", None)])
def test_valid_num_threads_env_is_used_silently(text, want):
    got = import_with(OPTIMC_NUM_THREADS=text)
    assert got["warnings"] == []
    assert got["num_threads"] == (want or default_threads())


@pytest.mark.parametrize("text", ["abc", "0", "257", "100000", "99999999999999999999999", "-2", "+2",
                                  "2.5", "4x", " ", "٣"])
def test_invalid_num_threads_env_warns_and_uses_the_cpu_count(text):
    got = import_with(OPTIMC_NUM_THREADS=text)
    assert got["num_threads"] == default_threads()
    [(category, message, filename)] = got["warnings"]
    assert category == "RuntimeWarning"
    assert "OPTIMC_NUM_THREADS" in message and repr(text) in message and "1..256" in message
    assert f"using {default_threads()}" in message
    assert filename == "<string>"      # points at the user's `import optimc`


@pytest.mark.parametrize("level", LEVELS[:LEVELS.index(CPU_SIMD) + 1])
def test_simd_env_at_or_below_the_cpu_is_used_silently(level):
    got = import_with(OPTIMC_SIMD=level)
    assert got["warnings"] == [] and got["simd"] == level


@pytest.mark.parametrize("text", ["avx9", "AVX2", " avx2", "sse"])
def test_unknown_simd_env_warns_and_uses_the_cpu_level(text):
    got = import_with(OPTIMC_SIMD=text)
    assert got["simd"] == CPU_SIMD
    [(category, message, _)] = got["warnings"]
    assert category == "RuntimeWarning"
    assert "OPTIMC_SIMD" in message and repr(text) in message and f"using {CPU_SIMD!r}" in message


@pytest.mark.skipif(CPU_SIMD == LEVELS[-1], reason="this CPU has the highest level")
def test_simd_env_above_the_cpu_warns():
    above = LEVELS[-1]
    got = import_with(OPTIMC_SIMD=above)
    assert got["simd"] == CPU_SIMD
    [(category, message, _)] = got["warnings"]
    assert category == "RuntimeWarning"
    assert repr(above) in message and "above what this CPU supports" in message and repr(CPU_SIMD) in message


def test_both_env_vars_invalid_give_two_warnings():
    got = import_with(OPTIMC_NUM_THREADS="abc", OPTIMC_SIMD="avx9")
    assert sorted(m.split("=")[0] for _, m, _ in got["warnings"]) == ["OPTIMC_NUM_THREADS", "OPTIMC_SIMD"]


def test_show_config_prints_once_and_returns_none(capsys):
    assert optimc.show_config() is None
    out = capsys.readouterr().out
    cfg = optimc.show_config(print_it=False)
    assert capsys.readouterr().out == ""
    lines = out.splitlines()
    assert [line.split(":")[0].strip() for line in lines] == list(cfg)
    for line, (key, value) in zip(lines, cfg.items()):
        assert line.split(":", 1)[1].strip() == str(value)


def test_show_config_dict():
    cfg = optimc.show_config(print_it=False)
    assert set(cfg) == {"simd", "cpu_simd", "num_threads", "thread_threshold", "compile_flags", "cpu_features"}
    assert set(cfg["cpu_features"]) == {"f16c", "avx512bf16", "vbmi"}
    assert cfg["simd"] in LEVELS and cfg["cpu_simd"] in LEVELS
    assert cfg["num_threads"] == optimc.get_num_threads()
    assert "-ffast-math" not in cfg["compile_flags"]


def test_cpu_features_switch_and_refuse_unknown_names():
    from optimc import _core
    on = _core.config()["cpu_features"]
    try:
        for name in on:
            assert _core.set_cpu_feature(name, False) is False
            assert _core.config()["cpu_features"][name] is False
            assert _core.set_cpu_feature(name, True) == on[name]   # back on only where the CPU has it
    finally:
        for name in on:
            _core.set_cpu_feature(name, True)
    with pytest.raises(ValueError, match="name: expected 'f16c', 'avx512bf16' or 'vbmi', got 'sse'"):
        _core.set_cpu_feature("sse", True)
    assert _core.config()["cpu_features"] == on


def test_set_num_threads_range_and_types():
    before = optimc.get_num_threads()
    try:
        for n in (1, 5, 256):
            optimc.set_num_threads(n)
            assert optimc.get_num_threads() == n
        optimc.set_num_threads(3)
        for bad in (0, -1, 257, 100000):
            with pytest.raises(ValueError, match="1..256"):
                optimc.set_num_threads(bad)
            assert optimc.get_num_threads() == 3
        for bad in ("2", 2.0, True, None):
            with pytest.raises(TypeError, match="n: expected an int"):
                optimc.set_num_threads(bad)
            assert optimc.get_num_threads() == 3
    finally:
        optimc.set_num_threads(before)


def test_set_simd_levels():
    try:
        for level in LEVELS:
            if LEVELS.index(level) <= LEVELS.index(CPU_SIMD):
                assert optimc.set_simd(level) == level
                assert optimc.show_config(print_it=False)["simd"] == level
            else:
                with pytest.raises(ValueError, match="at most"):
                    optimc.set_simd(level)
        optimc.set_simd("baseline")
        with pytest.raises(ValueError, match="expected 'baseline', 'avx2' or 'avx512'"):
            optimc.set_simd("avx9")
        assert optimc.show_config(print_it=False)["simd"] == "baseline"
    finally:
        optimc.set_simd(CPU_SIMD)
