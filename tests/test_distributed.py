"""optimc.distributed: data-parallel and ZeRO-1 optimizers over MPI.

The multi-rank tests run the scripts in tests/mpi/ under ``mpiexec -n 2`` and
``-n 3`` and compare what they write with single-process runs computed here
(tests/mpi/problem.py says what is trained and why some comparisons are bit
for bit). They skip when mpi4py or mpiexec is missing (pip install ".[mpi]").
"""
import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import optimc
from optimc.distributed import FlatBuffer, ZeroRedundancyOptimizer
from optimc.distributed.flat import tiled_region
from optimc.distributed.zero import shard_bounds

MPI_DIR = Path(__file__).parent / "mpi"
sys.path.insert(0, str(MPI_DIR))
import problem  # noqa: E402

CLASSES = [c.__name__ for c in optimc.ALL]
# ZeRO-1 steps shards of tensors: only element-wise algorithms (LAMB/LARS are not)
SHARDABLE = [c.__name__ for c in optimc.ALL if getattr(c, "elementwise", True)]
WRAPPED = [(name, w) for name in CLASSES for w in ("ddp", "zero") if w == "ddp" or name in SHARDABLE]


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


HAVE_MPI = importlib.util.find_spec("mpi4py") is not None and _mpiexec() is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason='needs mpi4py and mpiexec: pip install ".[mpi]"')


def _env():
    """The environment of the ranks: this optimc, the scripts' helpers, and
    MPICH yielding the core while it waits (the jobs share the cores)."""
    paths = [str(Path(optimc.__file__).parent.parent), str(MPI_DIR), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    env.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")
    return env


class Job:
    """``mpiexec -n N python tests/mpi/SCRIPT ARGS`` (or ``python -m MODULE ARGS``
    when SCRIPT is "-m MODULE") running in the background."""

    def __init__(self, n, script, *args, folder):
        self.what = f"mpiexec -n {n} {script} {' '.join(map(str, args))}"
        stem = f"{script.split()[-1]}.{n}.{'.'.join(map(str, args)).replace('/', '_')[-40:]}"
        self.out, self.err = folder / f"{stem}.out", folder / f"{stem}.err"
        target = script.split() if script.startswith("-m ") else [str(MPI_DIR / script)]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [_mpiexec(), "-n", str(n), sys.executable, *target, *map(str, args)],
                env=_env(), stdout=out, stderr=err, text=True, cwd=str(folder))

    def wait(self, timeout=600, check=True):
        """(return code, stderr) once it has ended; fails the test if it failed and `check`."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"{self.what}: still running after {timeout} s")
        err = self.err.read_text()
        if check and code:
            pytest.fail(f"{self.what} failed ({code}):\n{self.out.read_text()[-3000:]}\n{err[-6000:]}")
        return code, err


# The MPI jobs of this module wait for messages far more than they compute, so
# they run side by side, all started with the module's first test.
JOBS = {
    "parity2": (2, "parity.py", "{folder}/parity2.npz", "batch"),
    "parity3": (3, "parity.py", "{folder}/parity3.npz", "exact"),
    "save": (3, "checkpoint.py", "save", "{folder}"),
    "refusals": (3, "faults.py", "refusals", "{folder}/faults.pkl"),
    "hang": (2, "faults.py", "hang", 2),
    "bench": (2, "-m optimc.distributed.bench", "--size", 100_000, "--steps", 2, "--warmup", 0),
}


@pytest.fixture(scope="module", autouse=True)
def jobs(request, tmp_path_factory):
    """Starts the jobs the selected tests need when this module's first test
    runs, so that they run while the one-process tests do."""
    if not HAVE_MPI:
        return None, {}
    folder = tmp_path_factory.mktemp("mpi")
    wanted = {name for item in request.session.items if item.module is request.module
              for name in getattr(item, "fixturenames", ()) if name in JOBS}
    started = {}
    for name in wanted:
        n, script, *args = JOBS[name]
        started[name] = Job(n, script, *(str(a).format(folder=folder) for a in args), folder=folder)
    return folder, started


# ---- tolerances: float64 1e-12 relative, float32 within rounding (~80 ulps of the
# tensor's largest element after 100 steps); both relative to that element ----

TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def assert_close(got, ref, label, exact):
    for name, r in ref.items():
        g = got[name]
        assert g.shape == r.shape and g.dtype == r.dtype, (label, name)
        if exact:
            np.testing.assert_array_equal(g, r, err_msg=f"{label} {name}")
        elif r.size:
            scale = float(np.max(np.abs(r)))
            np.testing.assert_allclose(g, r, rtol=0, atol=TOLERANCE[r.dtype] * scale, err_msg=f"{label} {name}")


# ---- without MPI ----

def test_import_does_not_load_mpi4py(tmp_path):
    code = ("import sys, optimc, optimc.distributed\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'\n")
    subprocess.run([sys.executable, "-c", code], env=_env(), cwd=tmp_path, check=True)


def test_missing_mpi4py_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import numpy as np, optimc\n"
            "from optimc.distributed import DistributedOptimizer\n"
            "try:\n"
            "    DistributedOptimizer(optimc.Adam([np.zeros(3)]))\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=tmp_path, capture_output=True, text=True,
                         check=True)
    assert 'pip install "optimc[mpi]"' in out.stdout


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 100, 1000, 12345])
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_shards_are_contiguous_balanced_and_block_aligned(n, size):
    block = 16
    bounds = shard_bounds(n, size, block)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    lengths = [hi - lo for lo, hi in bounds]
    assert max(lengths) - min(lengths) <= block
    assert all(lo % block == 0 for lo, _ in bounds if lo < n)


def test_flat_buffer_views_tile_one_buffer_per_dtype():
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5).astype(np.float32),
              "c": np.array(2.0), "d": np.zeros(0, np.float32), "e": rng.standard_normal(2).astype(np.float32)}
    flat = FlatBuffer(arrays, copy=True)
    for k, a in arrays.items():
        np.testing.assert_array_equal(flat.views[k], a)
        assert flat.views[k].flags.c_contiguous and flat.views[k].flags.writeable
    f64 = flat.buffers[np.dtype(np.float64)]
    assert f64.size == 13 and f64.__array_interface__["data"][0] % 64 == 0
    region = tiled_region([flat.views["a"], flat.views["c"]])
    assert region is not None and np.shares_memory(region, f64) and region.size == 13
    assert tiled_region([flat.views["b"], flat.views["d"], flat.views["e"]]).size == 7
    assert tiled_region([flat.views["c"], flat.views["a"]]) is None        # out of order
    assert tiled_region([flat.views["b"], flat.views["e"]]).size == 7      # the empty one holds nothing
    assert tiled_region([flat.views["a"], np.array(1.0)]) is None          # separate memory
    zeros = FlatBuffer(arrays)
    assert all(not v.any() for v in zeros.views.values())


def test_zero_refuses_algorithms_that_are_not_elementwise():
    class PerTensor(optimc.Adam):
        elementwise = False
    with pytest.raises(ValueError, match="not element-wise"):
        ZeroRedundancyOptimizer([np.zeros(3)], PerTensor)
    with pytest.raises(TypeError, match="optimizer class"):
        ZeroRedundancyOptimizer([np.zeros(3)], "Adam")


# ---- one process (MPI.COMM_SELF) ----

@needs_mpi
@pytest.mark.parametrize("name", CLASSES)
def test_one_rank_equals_the_plain_optimizer(name):
    from mpi4py import MPI
    from optimc.distributed import DistributedOptimizer
    cls = getattr(optimc, name)
    runs = {}
    for kind in ("plain", "ddp", "zero") if name in SHARDABLE else ("plain", "ddp"):
        params = problem.initial_params()
        guard = problem.guard("ddp", "exact")
        if kind == "plain":
            opt = cls(problem.groups(params, cls), **guard)
        elif kind == "ddp":
            opt = DistributedOptimizer(cls(problem.groups(params, cls), **guard), MPI.COMM_SELF)
        else:
            opt = ZeroRedundancyOptimizer(problem.groups(params, cls), cls, MPI.COMM_SELF, **guard)
        for step in range(1, 41):
            opt.step(problem.grads(params, problem.rows_of(0, 1), step, exact=False))
        runs[kind] = (params, opt)
    plain = runs["plain"][1]
    for kind in [k for k in runs if k != "plain"]:
        params, opt = runs[kind]
        assert_close(params, runs["plain"][0], kind, exact=True)
        assert (opt.step_count, opt.skipped_steps, opt.last_grad_norm) == \
            (plain.step_count, plain.skipped_steps, plain.last_grad_norm)
    if "zero" not in runs:
        return
    sd = runs["zero"][1].consolidate_state_dict()
    want = plain.state_dict()
    assert sd.keys() == want.keys() and sd["param_groups"] == want["param_groups"]
    for i, entry in want["state"].items():
        assert sd["state"][i].keys() == entry.keys()
        for key, value in entry.items():
            np.testing.assert_array_equal(sd["state"][i][key], value)
    assert runs["zero"][1].state_bytes == plain.state_bytes


@needs_mpi
def test_zero_groups_forward_hyperparameters_and_refuse_bad_ones():
    from mpi4py import MPI
    params = problem.initial_params()
    opt = ZeroRedundancyOptimizer(problem.groups(params, optimc.Adam), optimc.Adam, MPI.COMM_SELF, lr=0.01)
    inner = opt.optimizer
    opt.param_groups[0]["lr"] = 0.02
    assert inner.param_groups[0]["lr"] == 0.02 and opt.param_groups[0]["lr"] == 0.02
    opt.param_groups[2].update(lr=0.03, betas=(0.8, 0.9), note="mine")
    assert inner.param_groups[2]["betas"] == (0.8, 0.9) and opt.param_groups[2]["note"] == "mine"
    opt.eps = 1e-6
    assert opt.eps == 1e-6 and all(g["eps"] == 1e-6 for g in (*inner.param_groups, *opt.param_groups))
    before = [dict(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match="lr"):
        opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match="betas"):
        opt.param_groups[1].update(lr=0.5, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="amsgrad"):
        opt.amsgrad = True
    with pytest.raises(ValueError, match="fixed"):
        opt.param_groups[0]["params"] = []
    with pytest.raises(AttributeError, match="set_guard"):
        opt.max_grad_norm = 1.0
    assert [dict(g) for g in opt.param_groups] == before
    assert [g["lr"] for g in inner.param_groups] == [g["lr"] for g in before]
    with pytest.raises(AttributeError, match="consolidate_state_dict"):
        opt.state
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(opt)
    with pytest.raises(ValueError, match="max_grad_norm"):
        opt.set_guard(max_grad_norm=-1)
    opt.set_guard(max_grad_norm=2.0)
    assert opt.max_grad_norm == 2.0 and inner.max_grad_norm is None


@needs_mpi
def test_zero_add_param_group_keeps_the_state():
    from mpi4py import MPI
    params = problem.initial_params()
    groups = problem.groups(params, optimc.Adam)
    ref_params = {k: v.copy() for k, v in params.items()}
    ref_groups = problem.groups(ref_params, optimc.Adam)
    opt = ZeroRedundancyOptimizer(groups[:2], optimc.Adam, MPI.COMM_SELF)
    ref = optimc.Adam(ref_groups[:2])
    for step in range(1, 31):
        if step == 11:
            opt.add_param_group(groups[2])
            ref.add_param_group(ref_groups[2])
        g = problem.grads(params, problem.rows_of(0, 1), step, exact=False)
        keep = [k for grp in ref.param_groups for k in grp["param_names"]]
        opt.step({k: g[k] for k in keep})
        ref.step({k: problem.grads(ref_params, problem.rows_of(0, 1), step, False)[k] for k in keep})
    assert_close(params, ref_params, "add_param_group", exact=True)
    assert len(opt.param_groups) == 3 and opt.step_count == ref.step_count


# ---- several ranks ----

# One job per rank count (each step is a few collectives, slow on an
# oversubscribed machine): 2 ranks with the whole batch's grads (within
# rounding), 3 ranks with the exact grads (bit for bit).
def _parity(jobs, n):
    """(n, the arrays the n-rank parity job saved), once it has ended."""
    folder, started = jobs
    if not started:
        pytest.skip('needs mpi4py and mpiexec: pip install ".[mpi]"')
    started[f"parity{n}"].wait()
    with np.load(folder / f"parity{n}.npz") as f:
        return n, dict(f)


@pytest.fixture(scope="module")
def parity2(jobs):
    return _parity(jobs, 2)


@pytest.fixture(scope="module")
def parity3(jobs):
    return _parity(jobs, 3)


@pytest.fixture(scope="module")
def save(jobs):
    if not jobs[1]:
        pytest.skip('needs mpi4py and mpiexec: pip install ".[mpi]"')
    jobs[1]["save"].wait()


@pytest.fixture(scope="module")
def refusals(jobs):
    if not jobs[1]:
        pytest.skip('needs mpi4py and mpiexec: pip install ".[mpi]"')
    jobs[1]["refusals"].wait()
    with open(jobs[0] / "faults.pkl", "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def hang(jobs):
    if not jobs[1]:
        pytest.skip('needs mpi4py and mpiexec: pip install ".[mpi]"')
    return jobs[1]["hang"].wait(timeout=120, check=False)


def _check_case(parity, name, wrapper, mode, variant):
    n, results = parity
    cls = getattr(optimc, name)
    key = f"{name}|{wrapper}|{mode}|{variant}"
    ref_params, ref, ema = problem.reference(cls, n, mode, wrapper, live=variant == "live",
                                             clip=variant == "clip", growing=variant == "grow")
    got = {k: results[f"{key}|{k}"] for k in ref_params}
    assert results[f"{key}|same"], f"{key}: the ranks hold different params"
    assert tuple(results[f"{key}|counts"]) == (ref.step_count, ref.skipped_steps) == (problem.STEPS - 1, 1)
    exact = mode == "exact" and variant != "clip"
    assert_close(got, ref_params, key, exact)
    if ema is not None:
        assert_close({k: results[f"{key}|ema:{k}"] for k in ema}, ema, key + " EMA", exact)


@needs_mpi
@pytest.mark.parametrize("name,wrapper", WRAPPED)
def test_2_ranks_equal_one_process_on_the_whole_batch(parity2, name, wrapper):
    """2 ranks on half the batch each = one process on the whole batch's mean
    grad, within rounding (float64 1e-12, float32 1e-5 of the largest element)."""
    _check_case(parity2, name, wrapper, "batch", "plain")


@needs_mpi
@pytest.mark.parametrize("name,wrapper", WRAPPED)
def test_3_ranks_equal_one_process_bit_for_bit(parity3, name, wrapper):
    """3 ranks = one process on the average of the same grads, bit for bit
    (grads whose sum is exact in any order, so MPI's order cannot matter)."""
    _check_case(parity3, name, wrapper, "exact", "plain")


@needs_mpi
@pytest.mark.parametrize("wrapper", ["ddp", "zero"])
@pytest.mark.parametrize("variant", ["flat", "live"])
def test_flat_buffers_schedulers_live_changes_and_ema(parity2, wrapper, variant):
    _check_case(parity2, "Adam", wrapper, "exact", variant)


@needs_mpi
@pytest.mark.parametrize("wrapper", ["ddp", "zero"])
def test_add_param_group_on_3_ranks(parity3, wrapper):
    """ZeRO cuts the ranges anew and moves the state to its new owners."""
    _check_case(parity3, "Adam", wrapper, "exact", "grow")


@needs_mpi
@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_zero_clips_by_the_global_norm(parity2, name):
    _check_case(parity2, name, "zero", "exact", "clip")


@pytest.fixture(scope="module")
def checkpoints(jobs, save):
    folder = jobs[0]
    resumed = [Job(n, "checkpoint.py", "resume", folder, folder=folder) for n in (2, 1)]
    for job in resumed:
        job.wait()
    return folder


def _n_at(ranks):
    return lambda step: 3 if step <= 50 else ranks


@needs_mpi
@pytest.mark.parametrize("name", SHARDABLE)
def test_checkpoint_from_3_ranks_resumes_on_2_and_1(checkpoints, name):
    cls = getattr(optimc, name)
    with open(checkpoints / f"{name}.pkl", "rb") as f:
        saved = pickle.load(f)
    at50, ref50, _ = problem.reference(cls, 3, "exact", "zero", stop=50)
    assert_close(saved["params"], at50, "params at step 50", exact=True)
    want = ref50.state_dict()
    for i, entry in want["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(saved["optimizer"]["state"][i][key], value, err_msg=f"{i} {key}")
    for ranks in (2, 1):
        ref_params, ref, _ = problem.reference(cls, _n_at(ranks), "exact", "zero")
        with open(checkpoints / f"{name}.{ranks}.resumed.pkl", "rb") as f:
            resumed = pickle.load(f)
        assert set(resumed) == ({"zero", "ddp"} if ranks == 1 else {"zero"})
        for wrapper, (params, steps, skipped) in resumed.items():
            assert_close(params, ref_params, f"resumed on {ranks} ranks ({wrapper})", exact=True)
            assert (steps, skipped) == (ref.step_count, ref.skipped_steps)
    # and into a plain single-process optimizer
    params = {k: v.copy() for k, v in saved["params"].items()}
    plain = cls(problem.groups(params, cls), **problem.guard("zero", "exact"))
    plain.load_state_dict(saved["optimizer"])
    for step in range(51, problem.STEPS + 1):
        plain.step(problem.mean_grads(params, 1, step, "exact"))
    ref_params, _, _ = problem.reference(cls, _n_at(1), "exact", "zero")
    assert_close(params, ref_params, "resumed in one process", exact=True)


@needs_mpi
def test_bad_input_on_one_rank_raises_everywhere_and_changes_nothing(refusals):
    ranks = refusals
    expect = {"shape": ("ValueError", "grads['W1_f64']: expected shape (4, 6)"),
              "dtype": ("TypeError", "grads['b1_f32']: expected dtype float32"),
              "missing": ("ValueError", "grads['s']: missing"),
              "load": ("ValueError", "['exp_avg']: expected a float32 array")}
    for wrapper in ("ddp", "zero"):
        for what, (kind, text) in expect.items():
            for rank, seen in enumerate(ranks):
                exc, message, unchanged = seen[wrapper, what]
                assert exc == kind and text in message and "rank 2" in message, (wrapper, what, rank, message)
                assert unchanged, (wrapper, what, rank)
        for rank, seen in enumerate(ranks):
            exc, message, unchanged = seen[wrapper, "hyper"]
            assert exc == "ValueError" and unchanged
            exc, message, unchanged = seen[wrapper, "add_group"]
            assert exc == "ValueError" and "rank 2: lr" in message and unchanged, message
            assert seen[wrapper, "groups"] == 3
            assert seen[wrapper, "after"] == ranks[0][wrapper, "after"] and seen[wrapper, "after"][0] == 2
            exc, message = seen[wrapper, "layout"]
            assert exc == "ValueError" and "rank 2 has" in message, message
    assert all(r["broadcast_state"] == ranks[0]["broadcast_state"] for r in ranks)


@pytest.fixture(scope="module")
def bench(jobs):
    if not jobs[1]:
        pytest.skip('needs mpi4py and mpiexec: pip install ".[mpi]"')
    job = jobs[1]["bench"]
    job.wait()
    return job.out.read_text()


@needs_mpi
def test_benchmark_reports_every_run_and_zero_halves_the_state(bench):
    rows = {}
    for line in bench.splitlines()[2:]:
        ranks, name, *numbers = line.split()
        rows[int(ranks), name] = [float(x) for x in numbers]
    wrappers = ["DistributedOptimizer", "ZeroRedundancyOptimizer"]
    assert sorted(rows) == sorted([(1, "optimc.Adam")] + [(r, n) for r in (1, 2) for n in wrappers]), bench
    state = {key: values[-1] for key, values in rows.items()}   # MB per rank: Adam keeps 8 bytes per element
    assert state[1, "optimc.Adam"] == state[1, "DistributedOptimizer"] == state[2, "DistributedOptimizer"] == 0.8
    assert state[2, "ZeroRedundancyOptimizer"] == 0.4


@needs_mpi
def test_a_rank_that_never_arrives_aborts_the_job_instead_of_hanging(hang):
    code, stderr = hang
    assert code != 0
    assert "this rank fails before step()" in stderr
    assert "waited" in stderr and "Aborting the MPI job" in stderr, stderr[-3000:]
