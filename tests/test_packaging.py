"""The README's set-up commands work verbatim from the root of a fresh clone.

The slow test clones this repository's committed HEAD into a temporary folder,
makes a fresh virtual environment (no system site-packages; pip may reuse its
wheel cache) and runs, from the clone's root, exactly the commands that the
README's "Set up" section shows (parsed from README.md, so the two cannot drift):
the demo command, the test command, and the README's example saved as a script.
It also checks the error that an unbuilt source tree gives, the ``optimc``
console script's usage line, and that the build shows no deprecation warning.

The test command runs pytest inside the clone; PYTEST_ADDOPTS narrows that inner
run to a few files (the whole suite runs in CI's own legs), and
OPTIMC_IN_PACKAGING_TEST keeps it from starting this test again.
"""
from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from test_docs import code_blocks

ROOT = Path(__file__).resolve().parent.parent
INNER_PYTEST = "-q -p no:cacheprovider tests/test_checkpoint.py"


def readme_setup_commands():
    """The ```bash commands of README.md's "Set up" section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Set up\n" in text, "README.md has no '## Set up' section"
    section = text.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    return [code.strip() for lang, code, _ in code_blocks(section) if lang == "bash"]


def readme_example():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [code for lang, code, _ in code_blocks(text) if lang == "python"]
    assert blocks, "README.md has no python example"
    return blocks[0]


def test_readme_shows_a_demo_and_a_test_command():
    commands = readme_setup_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "[demo]" in demo and "python -m optimc" in demo, demo
    assert "[test]" in tests and tests.endswith("pytest"), tests


def _import_error_in(tree):
    """The ImportError text of `import optimc` run from the folder `tree`, without
    site-packages (so only tree/optimc can be found)."""
    proc = subprocess.run([sys.executable, "-S", "-c", "import optimc"], cwd=tree, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode != 0
    return proc.stdout.strip().splitlines()[-1]


def _package_copy(tmp_path, source_tree, core_file=None):
    pkg = tmp_path / "optimc"
    pkg.mkdir(parents=True)
    shutil.copy(ROOT / "optimc" / "__init__.py", pkg / "__init__.py")
    if source_tree:
        (tmp_path / "setup.py").write_text("")
        (tmp_path / "csrc").mkdir()
    if core_file:
        (pkg / core_file).write_bytes(b"not a shared library")
    return tmp_path


def test_import_error_of_an_unbuilt_source_tree(tmp_path):
    msg = _import_error_in(_package_copy(tmp_path, source_tree=True))
    assert msg.startswith("ImportError: optimc is being imported from its source tree")
    assert "has not been built" in msg and "pip install -e ." in msg and "another folder" in msg


def test_import_error_of_a_broken_or_missing_extension(tmp_path):
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    msg = _import_error_in(_package_copy(tmp_path / "a", source_tree=True, core_file="_core" + suffix))
    assert "failed to import" in msg and "rebuild it (`pip install -e .`" in msg
    msg = _import_error_in(_package_copy(tmp_path / "b", source_tree=False))
    assert "is missing from" in msg and "reinstall optimc" in msg


def _run(cmd, cwd, env, timeout=1800):
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return proc.returncode, proc.stdout


def _fail(what, out):
    return f"{what} failed; the last of its output:\n{out[-4000:]}"


@pytest.mark.slow
def test_readme_commands_verbatim_in_a_fresh_clone_and_venv(tmp_path):
    if os.environ.get("OPTIMC_IN_PACKAGING_TEST"):
        pytest.skip("already inside the packaging test's inner pytest run")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of optimc")
    clone, env_dir = tmp_path / "optimc", tmp_path / "venv"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    env.update(VIRTUAL_ENV=str(env_dir), PATH=f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_VERBOSE="1", MPLBACKEND="Agg",
               OPTIMC_IN_PACKAGING_TEST="1", PYTEST_ADDOPTS=INNER_PYTEST)

    # before anything is built, importing from the clone's root says what to do
    rc, out = _run('python -c "import optimc"', clone, env)
    assert rc != 0 and "has not been built" in out and "pip install -e ." in out, out[-2000:]

    demo, tests = readme_setup_commands()
    rc, out = _run(demo, clone, env)
    assert rc == 0, _fail(demo, out)
    assert "figure saved to" in out and (clone / "optimc_comparison.png").is_file(), _fail(demo, out)
    assert "DeprecationWarning" not in out, _fail("the build (a deprecation warning)", out)

    (clone / "readme_example.py").write_text(readme_example())
    rc, out = _run("python readme_example.py", clone, env)
    assert rc == 0, _fail("the README example as a script in the clone's root", out)

    rc, out = _run("optimc --help", clone, env)
    assert rc == 0 and out.startswith("usage: optimc "), _fail("the optimc console script", out)

    rc, out = _run(tests, clone, env)
    assert rc == 0 and " passed" in out, _fail(tests, out)
    assert "DeprecationWarning" not in out.split("test session starts")[0], \
        _fail("the build (a deprecation warning)", out)
