"""Smoke tests of the benchmark (``python -m optimc bench``) at tiny sizes.

They check that it runs, that its NumPy implementations compute what optimc
computes, and that it writes its table, JSON and CSV. No timing is asserted.
"""
import csv
import json

import numpy as np
import pytest

import optimc
from optimc import _bench

TINY = ["--sample-time", "0.0002", "--case-time", "0.002", "--min-rounds", "2"]


def _run(tmp_path, capsys, *extra):
    out = tmp_path / "res"
    rc = _bench.main(["--out", str(out), *TINY, *extra])
    text = capsys.readouterr().out
    return rc, out, text


def test_parse_size():
    assert _bench.parse_size("1e7") == (1, 10_000_000)
    assert _bench.parse_size("1000x1000") == (1000, 1000)
    assert _bench.size_label(1, 10 ** 5) == "1e5"
    assert _bench.size_label(1000, 1000) == "1000x1000"
    assert _bench.size_label(1, 1234) == "1234"


@pytest.mark.parametrize("key", list(_bench.OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [None, 16])
def test_numpy_matches_optimc(key, dtype, block):
    label, cls_name, _, hyper, _ = _bench.OPTIMIZERS[key]
    rng = np.random.default_rng(1)
    p0 = [rng.standard_normal(n, dtype=dtype) for n in (5, 40, 100)]
    grads = [[rng.standard_normal(p.size, dtype=dtype) for p in p0] for _ in range(4)]
    pc = [p.copy() for p in p0]
    pn = [p.copy() for p in p0]
    opt = getattr(optimc, cls_name)(pc, **hyper)
    ref = _bench.NUMPY_IMPLS[key](pn, hyper, block=block)
    for g in grads:
        opt.step(g)
        ref.step(g)
    ok, worst = _bench._close(pn, pc, dtype)
    assert ok, f"{label} {np.dtype(dtype).name}: max |diff|/tol {worst}"


def test_bench_tables_and_files(tmp_path, capsys):
    rc, out, text = _run(tmp_path, capsys, "--optimizers", "adam,sgd", "--dtypes", "float32",
                         "--sizes", "300,3x100", "--sections", "main,fixed", "--no-torch")
    assert rc == 0, text
    for label in ("Adam", "SGD-momentum"):
        for size in ("300", "3x100"):
            assert any(line.startswith(label) and f" {size} " in line for line in text.splitlines()), \
                (label, size, text)
    assert "fixed cost" in text and "np.add" in text

    data = json.loads((out / "bench.json").read_text())
    assert [(r["optimizer"], r["size"]) for r in data["results"]] == [
        ("Adam", "300"), ("Adam", "3x100"), ("SGD-momentum", "300"), ("SGD-momentum", "3x100")]
    for r in data["results"]:
        assert set(r["ns_per_element"]) == {"optimc", "roofline", "numpy"}
        assert all(v > 0 for v in r["ns_per_element"].values())
        assert r["checks"]["numpy"][0] is True
        assert r["roofline_fraction"] > 0 and r["x_numpy"] > 0 and r["x_torch"] is None
    assert data["mismatches"] == []
    assert {f["optimizer"] for f in data["fixed_cost"]} == {"Adam", "SGD-momentum"}
    assert data["machine"]["config"]["simd"] in ("baseline", "avx2", "avx512")
    assert data["targets"]  # listed, measured or not

    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert rows[0]["optimizer"] == "Adam" and rows[0]["numpy_check"] == "ok"
    assert float(rows[0]["optimc_ns_per_element"]) > 0
    assert rows[0]["torch_fused_ns_per_element"] == ""


def test_bench_all_optimizers_both_dtypes(tmp_path, capsys):
    rc, out, text = _run(tmp_path, capsys, "--sizes", "64", "--sections", "main", "--no-torch")
    assert rc == 0, text
    data = json.loads((out / "bench.json").read_text())
    assert len(data["results"]) == len(_bench.OPTIMIZERS) * 2
    assert all(r["checks"]["numpy"][0] for r in data["results"])


def test_bench_with_torch(tmp_path, capsys):
    pytest.importorskip("torch")
    rc, out, text = _run(tmp_path, capsys, "--optimizers", "adam,rmsprop", "--dtypes", "float64",
                         "--sizes", "200", "--sections", "main")
    assert rc == 0, text
    data = json.loads((out / "bench.json").read_text())
    adam, rms = data["results"]
    assert {"torch-loop", "torch-foreach", "torch-fused"} <= set(adam["ns_per_element"])
    assert all(adam["checks"][k][0] for k in ("torch-loop", "torch-foreach", "torch-fused"))
    assert "torch-fused" in rms["skipped"] and "torch-loop" in rms["ns_per_element"]
    assert adam["x_torch"] is not None


def test_bench_threads_section_and_restores_config(tmp_path, capsys):
    before = optimc.show_config(print_it=False)
    rc, out, text = _run(tmp_path, capsys, "--optimizers", "adam", "--dtypes", "float32",
                         "--sections", "threads", "--threads-size", "4096",
                         "--sweep-sizes", "1024,8192", "--no-torch", "--threads", "1")
    assert rc == 0, text
    assert "suggested threshold" in text
    data = json.loads((out / "bench.json").read_text())
    assert data["threads_1e7"]["n_elements"] == 4096
    assert [r["n_elements"] for r in data["threshold_sweeps"][0]["rows"]] == [1024, 8192]
    assert (out / "bench_threads.csv").exists()
    assert optimc.show_config(print_it=False) == before


def test_bench_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc, out, text = _run(tmp_path, capsys, "--optimizers", "sgd", "--dtypes", "float32",
                         "--sizes", "100,2x50", "--sections", "main", "--no-torch", "--plot")
    assert rc == 0, text
    assert (out / "bench.png").stat().st_size > 0


def test_bench_cli_dispatch_and_bad_args(capsys):
    from optimc import _cli
    with pytest.raises(SystemExit) as e:
        _cli.main(["bench", "--help"])
    assert e.value.code == 0
    assert "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        _bench.main(["--optimizers", "nope"])
    assert e.value.code == 2
    assert "unknown optimizer" in capsys.readouterr().err
