"""Tests for ``python -m optimc`` (optimc/_cli.py)."""

import math
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import optimc
from optimc import _cli
from optimc import problems as P

OPTIMIZERS = list(_cli.OPTIMIZER_NAMES)
ROW = re.compile(r"^  (\w+)\s+(\S+)\s+(\S+)(?: \*)?\s+(\S+)\s+(\S+)$")


def run_cli(*args, cwd, timeout=120):
    env = dict(os.environ, PYTHONWARNINGS="error::RuntimeWarning")
    return subprocess.run([sys.executable, "-m", "optimc", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def table_rows(stdout):
    """{(problem, optimizer): (lr, final, hit, us)} parsed from the printed table."""
    rows, problem = {}, None
    for line in stdout.splitlines():
        m = re.match(r"^(\w+) - ", line)
        if m:
            problem = m.group(1)
            continue
        m = ROW.match(line)
        if m and m.group(1) != "optimizer":
            rows[(problem, m.group(1))] = m.group(2, 3, 4, 5)
    return rows


def test_help(tmp_path):
    r = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for word in ["--optimizers", "--problems", "--steps", "--seed", "--dtype", "--output",
                 "--no-plot", "bench", 'pip install "optimc[demo]"', *P.PROBLEM_NAMES,
                 *OPTIMIZERS]:
        assert word in r.stdout, word


def test_table_rosenbrock(tmp_path):
    r = run_cli("--steps", "50", "--no-plot", "--problems", "rosenbrock", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout
    assert "rosenbrock" in out and "steps to target" in out and "us/step" in out
    assert "50 steps" in out
    rows = table_rows(out)
    assert sorted(opt for _, opt in rows) == sorted(OPTIMIZERS)
    start = P.get_problem("rosenbrock").loss(P.get_problem("rosenbrock").init())
    for (prob, opt), (lr, final, hit, us) in rows.items():
        assert prob == "rosenbrock"
        assert float(lr) == P.get_problem("rosenbrock").learning_rates[opt]
        assert final == "nan" or final.startswith("diverged") or float(final) >= 0
        assert hit == "-" or 0 <= int(hit) <= 50
        assert float(us) > 0
    # somebody made progress in 50 steps
    assert min(float(v[1]) for v in rows.values() if v[1][0].isdigit()) < start
    assert "figure" not in out
    assert not any(tmp_path.iterdir())  # --no-plot: nothing written
    assert "[1/1] rosenbrock" in r.stderr  # plain-text progress when not a terminal


def test_deterministic_losses(tmp_path):
    args = ("--steps", "60", "--no-plot", "--problems", "saddle,sparse_logistic",
            "--optimizers", "sgd,Adagrad,ADAM,lion", "--seed", "3")
    a = table_rows(run_cli(*args, cwd=tmp_path).stdout)
    b = table_rows(run_cli(*args, cwd=tmp_path).stdout)
    assert len(a) == 8
    assert {k: v[:3] for k, v in a.items()} == {k: v[:3] for k, v in b.items()}
    c = table_rows(run_cli(*args[:-1], "4", cwd=tmp_path).stdout)
    assert {k: v[1] for k, v in a.items()} != {k: v[1] for k, v in c.items()}


def test_plot_written(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "sub" / "cmp.png"
    out.parent.mkdir()
    r = run_cli("--steps", "30", "--problems", "saddle,quadratic", "--optimizers",
                "sgd,momentum,adam", "--output", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000
    assert str(out) in r.stdout
    assert not (tmp_path / _cli.DEFAULT_OUTPUT).exists()


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--steps", "ten"], "--steps must be an integer"),
    (["--seed", "-1"], "--seed must be at least 0"),
    (["--optimizers", "adam,sgdx"], "unknown optimizer 'sgdx'"),
    (["--optimizers", ","], "no optimizers given"),
    (["--problems", "rosenbrock,nope"], "unknown problem 'nope'"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--output", "no/such/dir/fig.png"], "does not exist"),
    (["--frobnicate"], "unrecognized arguments"),
    (["--steps", "5", "bench"], "'bench' must come first"),
])
def test_bad_options(tmp_path, args, message):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "usage: python -m optimc" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_bad_output_format(tmp_path):
    pytest.importorskip("matplotlib")
    r = run_cli("--steps", "5", "--output", "fig.notaformat", cwd=tmp_path)
    assert r.returncode == 2
    assert "unknown figure format 'notaformat'" in r.stderr


def test_without_matplotlib(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from optimc._cli import main\n"
            "sys.exit(main(['--steps', '5', '--problems', 'quadratic', '--optimizers', 'adam']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'pip install "optimc[demo]"' in r.stdout
    assert "quadratic" in r.stdout
    assert not any(tmp_path.iterdir())


def test_bench_missing(monkeypatch, capsys):
    monkeypatch.delattr(optimc, "_bench", raising=False)
    monkeypatch.setitem(sys.modules, "optimc._bench", None)  # import fails
    assert _cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "optimc._bench is missing" in err


def test_bench_dispatch(monkeypatch):
    seen = []
    fake = types.ModuleType("optimc._bench")
    fake.main = lambda argv: seen.append(list(argv)) or 0
    monkeypatch.setattr(optimc, "_bench", fake, raising=False)
    monkeypatch.setitem(sys.modules, "optimc._bench", fake)
    assert _cli.main(["bench", "--size", "1000", "--no-torch"]) == 0
    assert seen == [["--size", "1000", "--no-torch"]]


# --- the runner, in process -----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_run_one(dtype):
    prob = P.get_problem("saddle")
    r = _cli.run_one(prob, optimc.Adam, 40, np.dtype(dtype), seed=0)
    assert r.lr == prob.learning_rates["Adam"]
    assert r.error is None and r.diverged_at is None
    assert r.curve_steps.tolist() == list(range(41))
    assert r.curve_loss[0] == pytest.approx(prob.loss(prob.init()), rel=1e-6)
    assert r.final_loss == r.curve_loss[-1]
    assert r.path.shape == (41, 2)
    np.testing.assert_allclose(r.path[0], prob.start)
    assert r.us_per_step > 0


def test_run_one_stochastic():
    prob = P.get_problem("spiral_mlp")
    r = _cli.run_one(prob, optimc.Adam, 300, np.dtype(np.float32), seed=0)
    assert r.path is None
    assert r.curve_steps[0] == 0 and r.curve_steps[-1] == 300
    assert r.final_loss < r.curve_loss[0]
    again = _cli.run_one(prob, optimc.Adam, 300, np.dtype(np.float32), seed=0)
    assert again.final_loss == r.final_loss


def test_divergence_is_reported():
    prob = P.get_problem("rosenbrock")
    prob.learning_rates = {"SGD": 0.5}  # far too large: blows up
    r = _cli.run_one(prob, optimc.SGD, 200, np.dtype(np.float64), seed=0)
    assert r.diverged_at is not None and r.diverged_at < 200
    assert math.isnan(r.final_loss) and r.steps_to_target is None
    table = _cli.format_table([prob], [[r]], "float64")
    assert f"diverged@{r.diverged_at}" in table


def test_missing_rate_uses_class_default():
    prob = P.get_problem("quadratic")
    prob.learning_rates = {}
    r = _cli.run_one(prob, optimc.Adam, 3, np.dtype(np.float64), seed=0)
    assert r.lr == pytest.approx(1e-3)
