"""Tests of the benchmark (``python -m optimc bench``, optimc/bench/) at tiny sizes.

They check that its cases follow optimc.ALL and the optimizers' state, that its NumPy
steps compute what optimc computes, that it runs and writes its tables and files, and
what its report says. No timing is asserted.
"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import optimc
from optimc.bench import cases as C
from optimc.bench import cli, competitors, numpy_steps, report, sections

TINY = ["--sample-time", "0.0002", "--case-time", "0.002", "--min-rounds", "2"]
TINY_PROFILE = dict(sample_time=0.0002, case_time=0.002, min_rounds=2, max_rounds=2,
                    check_steps=3)
NAMES = [cls.__name__ for cls in optimc.ALL]
KEYS = [n.lower() for n in NAMES]


def _run(tmp_path, capsys, *extra):
    out = tmp_path / "res"
    rc = cli.main(["--out", str(out), *TINY, *extra])
    text = capsys.readouterr().out
    return rc, out, text


# --- the cases -------------------------------------------------------------------

def test_cases_are_optimc_all():
    cases = C.algorithm_cases()
    assert list(cases) == KEYS
    assert [c.cls for c in cases.values()] == list(optimc.ALL)
    assert cli.build_parser().parse_args([]).optimizers == KEYS


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_traffic_is_what_the_engine_moves(name, dtype):
    """Bytes per element from the state buffers = param r/w, grad r, state r/w as the
    engine counts them from ``state_bytes``, in one pass; a two-pass step moves the
    arrays its passes name, and its last pass writes the param."""
    case = C.algorithm_cases()[name.lower()]
    p = np.zeros(1000, dtype)
    opt = case.build([p])
    if name in C.TWO_PASS:
        assert len(case.passes) == 2 and "param" in case.passes[-1].write
        assert case.bytes_per_element(dtype) * p.size == sum(
            (len(ps.read) + len(ps.write)) * p.nbytes for ps in case.passes)
    else:
        assert case.bytes_per_element(dtype) * p.size == 3 * p.nbytes + 2 * opt.state_bytes
        assert [(len(ps.read), len(ps.write)) for ps in case.passes] == [
            (2 + case.n_state, 1 + case.n_state)]
    assert case.hyper == {k: v for k, v in opt.param_groups[0].items() if k != "params"}


def test_traffic_known_values():
    cases = C.algorithm_cases()
    assert cases["sgd"].bytes_per_element(np.float32) == 12        # p r/w, g r
    assert cases["momentum"].bytes_per_element(np.float32) == 20   # + momentum_buffer r/w
    assert cases["adam"].bytes_per_element(np.float32) == 28       # + exp_avg, exp_avg_sq
    assert cases["adam"].bytes_per_element(np.float64) == 56
    # p, g, mu, nu read, mu, nu written; then p, mu, nu read, p written
    assert cases["lamb"].bytes_per_element(np.float32) == 40
    # p, g read; then p, g, trace read, p, trace written
    assert cases["lars"].bytes_per_element(np.float32) == 28


@pytest.mark.parametrize("name", NAMES)
def test_two_pass_steps_are_those_with_per_tensor_sums(name):
    """A step whose result on a tensor differs from its results on the tensor's two halves
    needs per-tensor sums, so it reads the whole tensor before it updates any of it: such
    a class, and no other, has its passes in TWO_PASS (bench/cases.py; add them there)."""
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(64)
    grads = [rng.standard_normal(64) for _ in range(3)]
    whole, halves = p0.copy(), [p0[:32].copy(), p0[32:].copy()]
    cls = getattr(optimc, name)
    one, two = cls([whole]), cls(halves)
    for g in grads:
        one.step([g])
        two.step([g[:32], g[32:]])
    per_tensor = not np.array_equal(whole, np.concatenate(halves))
    assert per_tensor == (name in C.TWO_PASS), (name, per_tensor)


def test_two_pass_entries_are_checked(monkeypatch):
    class Fancy(optimc.Adam):
        pass

    monkeypatch.setitem(C.TWO_PASS, "Fancy", (C.Pass(read=("param", "grad", "mu")),
                                              C.Pass(read=("param",), write=("param",))))
    with pytest.raises(ValueError, match=r"TWO_PASS\['Fancy'\].*exp_avg"):
        C.algorithm_cases([Fancy])
    monkeypatch.setitem(C.TWO_PASS, "Fancy", (C.Pass(read=("grad",), write=("param",)),))
    with pytest.raises(ValueError, match="writes what it does not read"):
        C.algorithm_cases([Fancy])


def test_roofline_streams_pass_by_pass_over_shared_arrays():
    """LAMB's roofline: (mu, nu | param, grad) with 2 written, then (param | mu, nu) with 1
    written, over the same four arrays; a written array is the sum of itself and the
    pass's read-only arrays, and grads are never written."""
    case = C.algorithm_cases()["lamb"]
    (first, w1), (second, w2) = competitors.stream_passes(case, 40, np.float32)
    assert (len(first), w1, len(second), w2) == (4, 2, 3, 1)
    mu, nu, param, grad = first
    assert second[0] is param and second[1] is mu and second[2] is nu
    assert param[0] == mu[0] == nu[0] == 1.0 and grad[0] == 0.0
    competitors.roofline_runner(case, 40, np.float32)(3)   # fresh arrays: 3 steps, no error
    run = competitors.stream_passes(case, 40, np.float32)
    for arrays, n_write in run:
        optimc._core.stream(arrays, n_write)
    mu, nu, param, grad = run[0][0]
    assert mu[0] == nu[0] == 2.0 and param[0] == 5.0 and grad[0] == 0.0   # 1+1+0; 1+2+2
    # LARS's first pass only reads
    (reads, n_write), _ = competitors.stream_passes(C.algorithm_cases()["lars"], 40, np.float64)
    assert n_write == 0
    before = [a.copy() for a in reads]
    optimc._core.stream(reads, 0)
    assert all(np.array_equal(a, b) for a, b in zip(reads, before))


@pytest.mark.parametrize("n_arrays, n_write", [(2, 1), (3, 2), (3, 1), (4, 3), (4, 2), (5, 4), (5, 3),
                                               (5, 2), (6, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stream_adds_the_read_only_arrays_to_each_written_one(n_arrays, n_write, dtype):
    n = 1000   # a vector body and a tail
    arrays = [np.arange(n, dtype=dtype) * (k + 1) for k in range(n_arrays)]
    want = sum(arrays[n_write:]) + np.zeros(n, dtype)
    written = [a + want for a in arrays[:n_write]]
    optimc._core.stream(arrays, n_write)
    for a, w in zip(arrays, written):
        assert np.array_equal(a, w)


def test_stream_refuses_bad_counts():
    a = [np.zeros(8), np.zeros(8)]
    for n_write in (-1, 2):
        with pytest.raises(ValueError, match="0 <= n_write < len"):
            optimc._core.stream(a, n_write)
    with pytest.raises(ValueError, match="one size and dtype"):
        optimc._core.stream([np.zeros(8), np.zeros(9)], 0)


def test_state_buffer_count_follows_options():
    p = np.zeros(10)
    assert C.state_buffer_count(optimc.Adam([p]).state[0], p) == 2
    assert C.state_buffer_count(optimc.Adam([p], amsgrad=True).state[0], p) == 3
    assert C.state_buffer_count(optimc.SGD([p]).state[0], p) == 0
    assert C.state_buffer_count(optimc.NAdam([p]).state[0], p) == 2   # mu_product is a scalar


def test_parse_size():
    assert C.parse_size("1e7") == (1, 10_000_000)
    assert C.parse_size("1000x1000") == (1000, 1000)
    assert C.size_label(1, 10 ** 5) == "1e5"
    assert C.size_label(1000, 1000) == "1000x1000"
    assert C.size_label(1, 1234) == "1234"


# --- the NumPy steps -------------------------------------------------------------

def test_numpy_steps_are_keyed_by_class_name():
    assert set(numpy_steps.NUMPY_STEPS) <= set(NAMES)


@pytest.mark.parametrize("name", sorted(numpy_steps.NUMPY_STEPS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [None, 16])
def test_numpy_matches_optimc(name, dtype, block):
    case = C.algorithm_cases()[name.lower()]
    rng = np.random.default_rng(1)
    p0 = [rng.standard_normal(n, dtype=dtype) for n in (5, 40, 100)]
    grads = [[rng.standard_normal(p.size, dtype=dtype) for p in p0] for _ in range(8)]
    pc = [p.copy() for p in p0]
    pn = [p.copy() for p in p0]
    opt = case.build(pc)
    ref = numpy_steps.numpy_step_for(case)(pn, case.hyper, block=block)
    for g in grads:   # 8 steps: RAdam's adapted branch starts at step 6
        opt.step(g)
        ref.step(g)
    ok, worst = competitors.close(pn, pc, dtype)
    assert ok, f"{name} {np.dtype(dtype).name}: max |diff|/tol {worst}"
    for i in range(len(p0)):
        for buf, value in ref.state(i).items():
            ok, worst = competitors.close([value], [opt.state[i][buf]], dtype)
            assert ok, f"{name} state[{i}][{buf!r}]: {worst}"


def test_numpy_steps_refuse_what_they_do_not_implement():
    p = [np.zeros(4)]
    hyper = dict(C.algorithm_cases()["adam"].hyper)
    with pytest.raises(ValueError, match="implements only amsgrad=False, not True"):
        numpy_steps.NumpyAdam(p, {**hyper, "amsgrad": True})
    with pytest.raises(ValueError, match="does not know option 'foo'"):
        numpy_steps.NumpyAdam(p, {**hyper, "foo": 1})


def test_a_case_without_competitors(tmp_path):
    """A class with no NumPy step and no torch.optim twin: optimc vs the roofline only."""
    class Fancy(optimc.Adam):
        pass

    case = C.algorithm_cases([Fancy])["fancy"]
    assert numpy_steps.numpy_step_for(case) is None
    try:
        import torch
    except ImportError:
        torch = None
    r = sections.run_case(case, np.float32, 2, 50, TINY_PROFILE, torch, seed=0)
    assert set(r["ns_per_element"]) == {"optimc", "roofline"}
    assert r["skipped"]["numpy"] == "no NumPy step for Fancy"
    if torch is not None:
        assert r["skipped"]["torch-loop"] == "torch.optim has no Fancy"
    assert r["x_numpy"] is None and r["x_torch"] is None and r["roofline_fraction"] > 0
    text = report.format_table([r])
    assert text.splitlines()[-1].split()[-2:] == ["-", "-"]


def test_schedule_free_reference_is_the_schedulefree_package(monkeypatch):
    """Schedule-Free's torch columns run the schedulefree package (torch.optim has no
    Schedule-Free); without the package they are skipped, saying so."""
    cases = C.algorithm_cases()
    for key in ("sgdschedulefree", "adamwschedulefree"):
        case = cases[key]
        monkeypatch.setitem(sys.modules, "schedulefree", None)     # as if not installed
        assert competitors.torch_equivalent(case, torch=None) is None
        assert competitors.no_torch_reason(case) == \
            f"schedulefree not installed (its {case.name} is the reference)"
        monkeypatch.delitem(sys.modules, "schedulefree")
        schedulefree = pytest.importorskip("schedulefree")
        cls, kwargs = competitors.torch_equivalent(case, torch=None)
        assert cls is getattr(schedulefree, case.name)
        assert competitors.reference_name(cls) == f"schedulefree.{case.name}"
        assert "maximize" not in kwargs and kwargs["lr"] == case.hyper["lr"]
    assert competitors.no_torch_reason(cases["lamb"]) == "torch.optim has no LAMB"


# --- runs ---------------------------------------------------------------------------

def test_bench_tables_and_files(tmp_path, capsys):
    rc, out, text = _run(tmp_path, capsys, "--optimizers", "adam,momentum", "--dtypes", "float32",
                         "--sizes", "300,3x100", "--sections", "main,fixed", "--no-torch")
    assert rc == 0, text
    for label in ("Adam", "Momentum"):
        for size in ("300", "3x100"):
            assert any(line.startswith(label) and f" {size} " in line
                       for line in text.splitlines()), (label, size, text)
    assert "ns per element (median)" in text and "ratios" in text
    assert "fixed cost" in text and "np.add" in text

    data = json.loads((out / "bench.json").read_text())
    assert [(r["optimizer"], r["size"]) for r in data["results"]] == [
        ("Adam", "300"), ("Adam", "3x100"), ("Momentum", "300"), ("Momentum", "3x100")]
    for r in data["results"]:
        assert set(r["ns_per_element"]) == {"optimc", "roofline", "numpy"}
        assert all(v > 0 for v in r["ns_per_element"].values())
        assert r["checks"]["numpy"][0] is True
        assert r["roofline_fraction"] > 0 and r["x_numpy"] > 0 and r["x_torch"] is None
    assert data["results"][0]["bytes_per_element"] == 28
    assert data["results"][2]["bytes_per_element"] == 20
    assert data["mismatches"] == []
    assert {f["optimizer"] for f in data["fixed_cost"]} == {"Adam", "Momentum"}
    assert data["machine"]["config"]["simd"] in ("baseline", "avx2", "avx512")

    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert rows[0]["optimizer"] == "Adam" and rows[0]["numpy_check"] == "ok"
    assert float(rows[0]["optimc_ns_per_element"]) > 0
    assert rows[0]["torch_fused_ns_per_element"] == ""
    md = (out / "bench.md").read_text()
    assert "| Adam | float32 | 300 |" in md


def test_report_states_figures_and_ratios_only(tmp_path, capsys):
    """No project goals (met / MISSED) in what a user reads."""
    rc, out, text = _run(tmp_path, capsys, "--optimizers", "adam", "--dtypes", "float32",
                         "--sizes", "1e3", "--no-torch", "--threads-size", "4096",
                         "--sweep-sizes", "1024,8192")
    assert rc == 0, text
    files = [text] + [(out / name).read_text() for name in ("bench.md", "bench.csv",
                                                            "bench.json", "bench_threads.csv")]
    for content in files:
        for word in ("MISSED", "missed", " met", "target", "goal"):
            assert word not in content, word
    assert "targets" not in json.loads((out / "bench.json").read_text())


def test_bench_covers_every_optimizer_both_dtypes(tmp_path, capsys):
    rc, out, text = _run(tmp_path, capsys, "--sizes", "64", "--sections", "main", "--no-torch")
    assert rc == 0, text
    data = json.loads((out / "bench.json").read_text())
    assert [r["optimizer"] for r in data["results"]] == [n for n in NAMES for _ in (0, 1)]
    for r in data["results"]:
        if r["optimizer"] in numpy_steps.NUMPY_STEPS:
            assert r["checks"]["numpy"][0], r["optimizer"]
        assert r["bytes_per_element"] == C.algorithm_cases()[r["key"]].bytes_per_element(
            r["dtype"])


def test_bench_with_torch(tmp_path, capsys):
    pytest.importorskip("torch")
    rc, out, text = _run(tmp_path, capsys, "--optimizers", "adam,rmsprop,nag,nadam,lion",
                         "--dtypes", "float32,float64", "--sizes", "200", "--sections", "main")
    assert rc == 0, text
    assert "RESULT MISMATCHES" not in text
    data = json.loads((out / "bench.json").read_text())
    res = {(r["optimizer"], r["dtype"]): r for r in data["results"]}
    adam = res[("Adam", "float64")]
    assert {"torch-loop", "torch-foreach", "torch-fused"} <= set(adam["ns_per_element"])
    assert adam["x_torch"] is not None
    # torch's foreach/fused NAG add to .grad in place: each got its own, fresh grads
    nag = res[("NAG", "float32")]
    assert all(nag["checks"][k][0] for k in ("torch-loop", "torch-foreach", "torch-fused"))
    # torch keeps NAdam's mu_product in its default dtype: float64 when we compare float64
    assert all(ok for ok, _ in res[("NAdam", "float64")]["checks"].values())
    rms = res[("RMSprop", "float64")]
    assert "torch-fused" in rms["skipped"] and "torch-loop" in rms["ns_per_element"]
    lion = res[("Lion", "float32")]
    assert lion["skipped"]["torch-loop"] == "torch.optim has no Lion"
    assert lion["x_torch"] is None and lion["x_numpy"] is not None


def test_bench_schedule_free_and_asgd_rows(tmp_path, capsys):
    """Schedule-Free against the schedulefree package (loop and foreach; it has no fused
    step), ASGD against torch.optim.ASGD, each checked against optimc's result first;
    LAMB's roofline moves its two passes' bytes."""
    pytest.importorskip("torch")
    pytest.importorskip("schedulefree")
    rc, out, text = _run(tmp_path, capsys, "--optimizers",
                         "sgdschedulefree,adamwschedulefree,asgd,lamb", "--dtypes",
                         "float32,float64", "--sizes", "200", "--sections", "main")
    assert rc == 0, text
    assert "RESULT MISMATCHES" not in text
    data = json.loads((out / "bench.json").read_text())
    for r in data["results"]:
        if r["optimizer"] == "LAMB":
            assert "torch_reference" not in r and r["x_torch"] is None
            assert r["bytes_per_element"] == (40 if r["dtype"] == "float32" else 80)
            continue
        package = "torch.optim" if r["optimizer"] == "ASGD" else "schedulefree"
        assert r["torch_reference"] == f"{package}.{r['optimizer']}"
        assert {"torch-loop", "torch-foreach"} <= set(r["ns_per_element"]), r
        assert r["checks"]["torch-loop"][0] and r["checks"]["torch-foreach"][0], r
        assert r["x_torch"] is not None and "torch-fused" in r["skipped"]
        if package == "schedulefree":
            assert r["skipped"]["torch-fused"] == \
                f"NotImplementedError: schedulefree.{r['optimizer']} has no fused step"


def test_bench_threads_section_and_restores_config(tmp_path, capsys):
    before = optimc.show_config(print_it=False)
    rc, out, text = _run(tmp_path, capsys, "--optimizers", "adam,momentum", "--dtypes",
                         "float32", "--sections", "threads", "--threads-size", "4096",
                         "--sweep-sizes", "1024,8192", "--no-torch", "--threads", "1")
    assert rc == 0, text
    data = json.loads((out / "bench.json").read_text())
    assert data["threads_1e7"]["n_elements"] == 4096
    assert data["threads_1e7"]["bytes_moved"] == 4096 * 28
    sweeps = data["threshold_sweeps"]
    assert [(s["optimizer"], s["bytes_per_element"]) for s in sweeps] == [("Adam", 28),
                                                                          ("Momentum", 20)]
    assert [r["bytes_moved"] for r in sweeps[0]["rows"]] == [1024 * 28, 8192 * 28]
    for s in sweeps:  # the suggestion is a step size in bytes moved, one of the measured ones
        for key in ("suggested_threshold_bytes", "suggested_back_to_back_bytes",
                    "suggested_after_idle_bytes"):
            assert s[key] is None or s[key] in [r["bytes_moved"] for r in s["rows"]]
    suggestions = [ln for ln in text.splitlines() if "suggested threshold" in ln]
    assert len(suggestions) == 2
    assert all("bytes" in ln and "element" not in ln for ln in suggestions)
    assert (out / "bench_threads.csv").exists()
    assert optimc.show_config(print_it=False) == before


def test_bench_lowprec_has_the_16_bit_param_rows(tmp_path, capsys):
    """The low-precision section times Adam on bfloat16 and float16 params next
    to a float32 one and states bytes per param (param + state); no timing is
    asserted."""
    from optimc.bench.lowprec import HALF_PARAM_CASES
    try:
        import ml_dtypes  # noqa: F401
        has_bf16 = True
    except ImportError:
        has_bf16 = False
    n = 4096
    rc, out, text = _run(tmp_path, capsys, "--sections", "lowprec", "--dtypes", "float32",
                         "--threads-size", str(n), "--no-torch")
    assert rc == 0, text
    half = json.loads((out / "bench.json").read_text())["lowprec"]["half_params"]
    labels = [label for label, dtype, _ in HALF_PARAM_CASES if has_bf16 or dtype != "bfloat16"]
    assert list(half["ns_per_element"]) == labels
    assert all(v > 0 for v in half["ns_per_element"].values())
    assert half["time_vs_float32"]["float32 param"] == 1.0
    # the param and Adam's two moments (8 bytes), plus 4 for master weights;
    # 8-bit state: a byte per moment and a float32 scale per 256
    want = {"float32 param": 12.0, "float16 param, round to nearest": 10.0,
            "float16 param, master weights": 14.0, "float16 param, stochastic rounding": 10.0}
    if has_bf16:
        want.update({"bfloat16 param, round to nearest": 10.0, "bfloat16 param, master weights": 14.0,
                     "bfloat16 param, stochastic rounding": 10.0,
                     "bfloat16 param, stochastic rounding, 8-bit state": 2 + 2 * (1 + 4 / 256)})
    else:
        assert set(half["skipped"]) == {label for label, dtype, _ in HALF_PARAM_CASES if dtype == "bfloat16"}
    assert half["bytes_per_param"] == pytest.approx(want)
    for label in labels:
        assert any(line.strip().startswith(label) and "B/param" in line for line in text.splitlines()), label
        assert f"| {label} |" in (out / "bench.md").read_text()
    assert "16-bit params: Adam on one param of 4e+03 elements" in text


def test_bench_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc, out, text = _run(tmp_path, capsys, "--optimizers", "sgd,adam,lion", "--dtypes",
                         "float32,float64", "--sizes", "100,2x50", "--sections", "main",
                         "--no-torch", "--plot")
    assert rc == 0, text
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the report -------------------------------------------------------------------

def _sweep(ratios_b2b, ratios_idle, threads=2):
    rows = []
    for i, (rb, ri) in enumerate(zip(ratios_b2b, ratios_idle)):
        n = 1000 * 2 ** i
        rows.append(dict(optimizer="Adam", dtype="float32", n_elements=n, bytes_moved=28 * n,
                         ns_1=0.5, ns_forced=0.5 * rb, ns_default=0.5, ns_1_idle=0.6,
                         ns_forced_idle=0.6 * ri, forced_over_1=rb, default_over_1=1.0,
                         forced_over_1_idle=ri))
    return rows


def test_smallest_winning_step_is_in_bytes():
    rows = _sweep([1.2, 0.8, 0.9, 0.7], [3.0, 1.1, 0.9, 0.8])
    assert sections.smallest_winning(rows, "forced_over_1") == 2000 * 28
    assert sections.smallest_winning(rows, "forced_over_1_idle") == 4000 * 28
    assert sections.smallest_winning(_sweep([0.9, 1.1], [1, 1]), "forced_over_1") is None


def test_sweep_report_keeps_times_and_ratios_apart():
    rows = _sweep([1.2, 0.8, 0.9, 0.7], [3.0, 1.1, 0.9, 0.8])
    s = dict(optimizer="Adam", dtype="float32", threads=2, bytes_per_element=28,
             default_threshold=12582912, rows=rows, suggested_threshold_bytes=4000 * 28,
             suggested_back_to_back_bytes=2000 * 28, suggested_after_idle_bytes=4000 * 28,
             idle_gap_s=1e-3)
    text = report.format_sweep(s)
    lines = text.splitlines()
    t0 = lines.index("  ns per element (median):")
    r0 = next(i for i, ln in enumerate(lines) if ln.startswith("  time with 2 threads"))
    times = [ln.split() for ln in lines[t0 + 3:r0]]
    ratios = [ln.split() for ln in lines[r0 + 3:r0 + 3 + len(rows)]]
    for row, cells in zip(rows, times):   # only ns per element after elements, MB
        assert cells[2:] == [report.fmt_ns(row[k]) for k in
                             ("ns_1", "ns_forced", "ns_default", "ns_1_idle", "ns_forced_idle")]
    for row, cells in zip(rows, ratios):  # only ratios
        assert cells[2:] == [f"{row[k]:.2f}" for k in
                             ("forced_over_1", "default_over_1", "forced_over_1_idle")]
    assert ("suggested threshold: 112000 bytes (0.11 MB) moved per step (the forced split "
            "was faster at that size and every larger one: back to back from 56000 bytes "
            "(0.06 MB), after idle from 112000 bytes (0.11 MB)); default 12582912 bytes "
            "(12.58 MB)") in " ".join(ln.strip() for ln in lines)
    none = dict(s, suggested_threshold_bytes=None, suggested_after_idle_bytes=None)
    assert ("no suggested threshold (the forced split was faster at that size and every "
            "larger one: back to back from 56000 bytes (0.06 MB), after idle never (up to "
            "224000 bytes (0.22 MB)))") in report.format_sweep(none)
    md = report.format_markdown(dict(results=[], settings=dict(threads=1),
                                     threshold_sweeps=[s]))
    assert "ns per element (median):" in md and "time with 2 threads / time with 1" in md


def test_help_says_which_files_it_writes(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--quick" in text and "--plot" in text
    for name in report.OUTPUT_FILES:
        assert name in text, name
    assert "./bench-results" in text


def test_bench_cli_dispatch_and_bad_args(capsys):
    from optimc.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0
    assert "bench.json" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["--optimizers", "nope"])
    assert e.value.code == 2
    assert "unknown optimizer 'nope'" in capsys.readouterr().err


def test_benchmarks_run_script(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks", "run.py")
    r = subprocess.run([sys.executable, script, "--help"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python benchmarks/run.py")


def test_bench_mpi_runs_the_distributed_benchmark():
    """`python -m optimc bench --mpi` is the distributed benchmark (its own options)."""
    pytest.importorskip("mpi4py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(optimc.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "optimc", "bench", "--mpi", "--help"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stderr
    assert "bench --mpi" in out.stdout and "--size" in out.stdout and "state bytes per rank" in " ".join(out.stdout.split())


def test_lowprec_section_reports_its_floor(tmp_path, capsys):
    """The lowprec section's floor rows exist (no timing is asserted): the same
    Adam steps with each state storage on a cache-resident param, and the
    streaming roofline over the bytes each storage's step moves."""
    rc, out, text = _run(tmp_path, capsys, "--sections", "lowprec", "--dtypes", "float32",
                         "--threads-size", "4096", "--no-torch")
    assert rc == 0, text
    floor = json.loads((out / "bench.json").read_text())["lowprec"]["floor"]
    storages = ["float32", "bfloat16", "8bit"]
    assert floor["n_elements"] == 4096 and floor["n_cache"] == 2 ** 15
    want = [f"cached: optimc Adam, state {s}" for s in storages] + \
        [f"roofline: bytes of Adam, state {s}" for s in storages]
    assert list(floor["ns_per_element"]) == want
    assert all(v > 0 for v in floor["ns_per_element"].values())
    assert [floor["bytes_per_element"][w] for w in want[3:]] == [28, 20, 16]
    assert "the floor" in text and all(w in text for w in want)
