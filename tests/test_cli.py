"""Tests for the command line: ``python -m optimc`` (optimc/__main__.py and optimc/demo/)."""

import math
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import optimc
import optimc.__main__ as entry
from optimc import problems as P
from optimc.demo import cli, figure, rates, runner, special, table

OPTIMIZERS = [cls.__name__ for cls in optimc.ALL]
ENTRIES = {cls.__name__: cls for cls in special.ENTRIES}   # LBFGS, Muon+AdamW: on their problems
ROW = re.compile(r"^  (\w+)\s+(\S+)\s+(\S+)(?: \*)?\s+(\S+)\s+(\S+)(?:  \[\d+\])?$")


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
    assert r.stdout.startswith("usage: python -m optimc ")
    for word in ["--optimizers", "--problems", "--steps", "--seed", "--dtype", "--output",
                 "--no-plot", "bench", 'pip install "optimc[demo]"', figure.DEFAULT_OUTPUT,
                 *P.PROBLEM_NAMES, *OPTIMIZERS]:
        assert word in r.stdout, word


def test_table_rosenbrock(tmp_path):
    r = run_cli("--steps", "50", "--no-plot", "--problems", "rosenbrock", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout
    assert "rosenbrock" in out and "steps to target" in out and "us/step" in out
    assert "50 steps" in out
    rows = table_rows(out)
    assert sorted(opt for _, opt in rows) == sorted(OPTIMIZERS + ["LBFGS"])
    start = P.get_problem("rosenbrock").loss(P.get_problem("rosenbrock").init())
    for (prob, opt), (lr, final, hit, us) in rows.items():
        assert prob == "rosenbrock"
        assert float(lr) == (ENTRIES[opt].rates["rosenbrock"] if opt in ENTRIES
                             else P.get_problem("rosenbrock").learning_rates[opt])
        assert final == "nan" or final.startswith("diverged") or float(final) >= 0
        assert hit == "-" or 0 <= int(hit) <= 50
        assert float(us) > 0
    # somebody made progress in 50 steps
    assert min(float(v[1]) for v in rows.values() if v[1][0].isdigit()) < start
    assert "figure" not in out
    assert not any(tmp_path.iterdir())  # --no-plot: nothing written
    assert "[1/1] rosenbrock" in r.stderr  # plain-text progress when not a terminal


def test_radam_rosenbrock_is_explained_under_the_table(tmp_path):
    r = run_cli("--steps", "20", "--no-plot", "--problems", "rosenbrock,saddle",
                "--optimizers", "adam,radam", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    radam_rows = [ln for ln in lines if ln.startswith("  RAdam ")]
    assert len(radam_rows) == 2
    assert radam_rows[0].endswith("  [1]") and not radam_rows[1].endswith("]")
    note = next(i for i, ln in enumerate(lines) if ln.startswith("[1] RAdam on rosenbrock: "))
    text = " ".join(ln.strip() for ln in lines[note:note + 6])
    assert rates.NOTES[("rosenbrock", "RAdam")] in text.split(": ", 1)[1]
    # no note without the run it explains
    r = run_cli("--steps", "5", "--no-plot", "--problems", "saddle", "--optimizers", "radam",
                cwd=tmp_path)
    assert "[1]" not in r.stdout


def test_run_is_the_default_command(tmp_path):
    args = ("--steps", "10", "--no-plot", "--problems", "quadratic", "--optimizers", "adam")
    a = table_rows(run_cli(*args, cwd=tmp_path).stdout)
    b = table_rows(run_cli("run", *args, cwd=tmp_path).stdout)
    assert a.keys() == b.keys() == {("quadratic", "Adam")}
    assert a[("quadratic", "Adam")][:2] == b[("quadratic", "Adam")][:2]


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
    assert not (tmp_path / figure.DEFAULT_OUTPUT).exists()


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--steps", "ten"], "--steps must be an integer"),
    (["--seed", "-1"], "--seed must be at least 0"),
    (["--optimizers", "adam,sgdx"], "unknown optimizer 'sgdx'"),
    (["--optimizers", ","], "no optimizers given"),
    (["--problems", "rosenbrock,nope"], "unknown problem 'nope'"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--output", "no/such/dir/fig.png"], "does not exist"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--steps", "5", "bench"], "'bench' must come first: python -m optimc bench [options]"),
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
            "from optimc.__main__ import main\n"
            "sys.exit(main(['--steps', '5', '--problems', 'quadratic', '--optimizers', 'adam']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'pip install "optimc[demo]"' in r.stdout
    assert "quadratic" in r.stdout
    assert not any(tmp_path.iterdir())


# --- the dispatcher ---------------------------------------------------------

def test_commands_dispatch(monkeypatch):
    seen = []
    fake = types.ModuleType("fake_bench")
    fake.main = lambda argv, prog, commands: seen.append((list(argv), prog, commands)) or 3
    monkeypatch.setitem(sys.modules, "fake_bench", fake)
    monkeypatch.setitem(entry.COMMANDS, "bench", ("fake_bench", "a fake"))
    monkeypatch.setattr(sys, "argv", ["/somewhere/optimc/__main__.py"])
    assert entry.main(["bench", "--size", "1000", "--no-torch"]) == 3
    assert seen == [(["--size", "1000", "--no-torch"], "python -m optimc bench",
                     tuple(entry.COMMANDS))]


@pytest.mark.parametrize("argv0, prog", [
    ("/usr/local/bin/optimc", "optimc"),
    ("C:\\venv\\Scripts\\optimc.exe".replace("\\", os.sep), "optimc"),
    ("/work/optimc/__main__.py", "python -m optimc"),
    ("-c", "python -m optimc"),
])
def test_usage_line_names_how_it_was_started(monkeypatch, capsys, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    assert entry.program_name() == prog
    with pytest.raises(SystemExit) as e:
        entry.main(["--frobnicate"])
    assert e.value.code == 2
    assert f"usage: {prog} " in capsys.readouterr().err


def test_console_script_usage(tmp_path):
    """The installed ``optimc`` script's usage line (a script of that name, as pip writes)."""
    script = tmp_path / "optimc"
    script.write_text("import sys\nfrom optimc.__main__ import main\nsys.exit(main())\n")
    r = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: optimc ")
    assert "optimc bench [options]" in r.stdout


def test_optimizer_list_follows_optimc_all(monkeypatch):
    class Extra(optimc.SGD):
        pass

    monkeypatch.setattr(optimc, "ALL", optimc.ALL + (Extra,))
    parser = cli.build_parser()
    assert "Extra" in parser.format_help()
    assert parser.parse_args(["--optimizers", "extra,adam"]).optimizers == ["Extra", "Adam"]
    assert parser.parse_args([]).optimizers == OPTIMIZERS + ["Extra"] + list(ENTRIES)


# --- the runner, in process -----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_run_one(dtype):
    prob = P.get_problem("saddle")
    r = runner.run_one(prob, optimc.Adam, 40, np.dtype(dtype), seed=0)
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
    r = runner.run_one(prob, optimc.Adam, 300, np.dtype(np.float32), seed=0)
    assert r.path is None
    assert r.curve_steps[0] == 0 and r.curve_steps[-1] == 300
    assert r.final_loss == r.curve_loss[-1] < r.curve_loss[0]
    again = runner.run_one(prob, optimc.Adam, 300, np.dtype(np.float32), seed=0)
    assert again.final_loss == r.final_loss


def test_divergence_is_reported():
    prob = P.get_problem("rosenbrock")
    r = runner.run_one(prob, optimc.SGD, 200, np.dtype(np.float64), seed=0, lr=0.5)
    assert r.lr == 0.5
    assert r.diverged_at is not None and r.diverged_at < 200
    assert math.isnan(r.final_loss) and r.steps_to_target is None
    text = table.format_table([prob], [[r]], "float64")
    assert f"diverged@{r.diverged_at}" in text


def test_missing_rate_uses_class_default():
    class Unrated(optimc.Adam):
        pass

    prob = P.get_problem("quadratic")
    assert prob.lr_for("Unrated") is None
    r = runner.run_one(prob, Unrated, 3, np.dtype(np.float64), seed=0)
    assert r.lr == pytest.approx(1e-3)


def test_errors_are_reported_per_run():
    class Broken(optimc.SGD):
        def step(self, grads):
            raise RuntimeError("boom")

    prob = P.get_problem("saddle")
    (row,) = runner.run_all([prob], [optimc.SGD, Broken], 5, np.dtype(np.float64), 0)
    assert row[0].error is None and row[1].error == "RuntimeError: boom"
    assert "  Broken" in table.format_table([prob], [row], "float64")


# --- the figure --------------------------------------------------------------

def test_line_styles_tell_every_optimizer_apart():
    pytest.importorskip("matplotlib")
    styles = figure.line_styles(optimc.ALL)
    assert set(styles) == set(OPTIMIZERS)
    drawn = [(tuple(np.round(c, 3)), str(ls)) for c, ls, _ in styles.values()]
    assert len(set(drawn)) == len(drawn)  # no two optimizers drawn alike
    fam = {name: s[2] for name, s in styles.items()}
    assert fam["SGD"] == fam["Momentum"] == fam["NAG"]
    assert fam["Adam"] == fam["AdamW"] == fam["Adamax"] == fam["NAdam"] == fam["RAdam"]
    assert fam["Adagrad"] == fam["RMSprop"] == fam["Adadelta"]
    assert len({fam["SGD"], fam["Adam"], fam["Adagrad"], fam["Lion"]}) == 4
    # within a family, the members differ by line style
    for family in set(fam.values()):
        members = [styles[n][1] for n in styles if fam[n] == family]
        assert len(set(map(str, members))) == len(members), family


def test_new_classes_get_a_family():
    pytest.importorskip("matplotlib")

    class AdamVariant(optimc.Adam):
        pass

    class Newcomer(optimc.Optimizer):
        pass

    styles = figure.line_styles(list(optimc.ALL) + [AdamVariant, Newcomer])
    assert styles["AdamVariant"][2] == styles["Adam"][2]       # its base class's family
    assert styles["Newcomer"][2] == figure.OTHER_FAMILY[0]
    drawn = [(tuple(np.round(c, 3)), str(ls)) for c, ls, _ in styles.values()]
    assert len(set(drawn)) == len(drawn)


def test_figure_caption_and_labels():
    pytest.importorskip("matplotlib")
    problems = [P.get_problem("rosenbrock"), P.get_problem("sparse_logistic")]
    classes = [optimc.Adam, optimc.RAdam]
    results = runner.run_all(problems, classes, 40, np.dtype(np.float32), 0)
    fig = figure.make_figure(figure.import_matplotlib(), problems, results, classes,
                             "float32", 0)
    caption = " ".join(t.get_text() for t in fig.texts).replace("\n", " ").replace("    ", "")
    assert "[1] RAdam on rosenbrock:" in caption
    assert "RAdam's first 5 steps are not adapted" in caption
    assert "sparse_logistic over 2 steps" in caption  # the mini-batch panels' mean ...
    assert "the table's final loss" in caption       # ... and how it differs from the table
    loss_ax = fig.axes[1]
    assert loss_ax.get_ylabel() == (f"loss - {problems[1].min_loss:.4f} (minimum), "
                                    f"mean of 2 steps")
    assert any(t.get_text() == "[1]" for t in fig.axes[0].texts)   # on the curve itself
    legend_texts = [t.get_text() for ax in fig.axes if ax.get_legend()
                    for t in ax.get_legend().get_texts()]
    assert {"Adam", "RAdam", "Adam and variants"} <= set(legend_texts)
