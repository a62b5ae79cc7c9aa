"""Docs that cannot drift: every ```python block of README.md and docs/*.md runs.

The convention (docs/development.md, "Code blocks in the docs"):

* ```python blocks of one file run in order, in one namespace, in a fresh
  temporary folder (the current directory while they run), with matplotlib's
  non-interactive backend.
* A ```text block that comes right after a ```python block (only blank lines
  between) is that block's printed output, and must match what it prints:
  line by line, trailing spaces and blank lines at the end ignored; ``...``
  inside an expected line matches any text (for values that differ between
  machines, e.g. the SIMD level); a number with decimals may differ by one unit
  in its last printed digit (BLAS differences in the last place of a printed
  loss or accuracy); every other character must be equal.
* Anything that must not run is fenced with another language: ```bash and
  ```console for shell commands, ```text for output, tables or pseudo-code.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```([\w+-]*)\s*$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def code_blocks(text):
    """[(language, code, first line number)] of the fenced blocks, in order."""
    blocks, lang, start, lines = [], None, 0, []
    for n, line in enumerate(text.splitlines(), start=1):
        m = FENCE.match(line)
        if lang is None:
            if m:
                lang, start, lines = m.group(1), n + 1, []
        elif line.strip() == "```":
            blocks.append((lang, "\n".join(lines) + "\n", start))
            lang = None
        else:
            lines.append(line)
    if lang is not None:
        raise AssertionError(f"a ``` fence opened at line {start - 1} is never closed")
    return blocks


def python_blocks_with_output(path):
    """[(code, expected output or None, line)] for the ```python blocks of `path`."""
    text = path.read_text(encoding="utf-8")
    blocks = code_blocks(text)
    lines = text.splitlines()
    out = []
    for i, (lang, code, start) in enumerate(blocks):
        if lang != "python":
            continue
        expected = None
        if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
            end = start + code.count("\n")           # the line of the closing fence
            between = lines[end:blocks[i + 1][2] - 2]
            if all(not s.strip() for s in between):
                expected = blocks[i + 1][1]
        out.append((code, expected, start))
    return out


def _line_matches(expected, actual):
    if "..." in expected:
        pattern = ".*".join(re.escape(part) for part in expected.split("..."))
        return re.fullmatch(pattern, actual) is not None
    exp_parts, act_parts = NUMBER.split(expected), NUMBER.split(actual)
    exp_nums, act_nums = NUMBER.findall(expected), NUMBER.findall(actual)
    if exp_parts != act_parts or len(exp_nums) != len(act_nums):
        return False
    for e, a in zip(exp_nums, act_nums):
        if e == a:
            continue
        mantissa = e.lower().split("e")[0]
        if "." not in mantissa:
            return False
        unit = 10.0 ** -len(mantissa.split(".")[1])
        if "e" in e.lower():
            unit *= 10.0 ** int(e.lower().split("e")[1])
        if not abs(float(a) - float(e)) <= unit * (1 + 1e-9):
            return False
    return True


def output_matches(expected, actual):
    exp = [s.rstrip() for s in expected.rstrip().splitlines()]
    act = [s.rstrip() for s in actual.rstrip().splitlines()]
    return len(exp) == len(act) and all(_line_matches(e, a) for e, a in zip(exp, act))


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run_and_print_what_is_shown(path, tmp_path, monkeypatch):
    blocks = python_blocks_with_output(path)
    if not blocks:
        pytest.skip(f"{path.name} has no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__doc_example__"}
    rel = path.relative_to(ROOT)
    for code, expected, line in blocks:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                exec(compile(code, f"{rel}:{line}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"{rel}, the python block at line {line} raised "
                                     f"{type(exc).__name__}: {exc}") from exc
        if expected is not None and not output_matches(expected, buf.getvalue()):
            raise AssertionError(f"{rel}, the python block at line {line} printed:\n"
                                 f"{buf.getvalue()}\nbut the doc shows:\n{expected}")


# ---- the checker itself -------------------------------------------------------------

def test_code_blocks_parser():
    text = "intro\n```python\nx = 1\nprint(x)\n```\n\n```text\n1\n```\n```bash\nls\n```\n"
    assert code_blocks(text) == [("python", "x = 1\nprint(x)\n", 3), ("text", "1\n", 8),
                                 ("bash", "ls\n", 11)]
    with pytest.raises(AssertionError, match="never closed"):
        code_blocks("```python\nx = 1\n")


def test_python_blocks_pair_with_the_text_block_right_after(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("```python\nprint(1)\n```\n\n```text\n1\n```\n\n```python\nprint(2)\n```\n"
                   "some prose\n```text\nnot output\n```\n")
    assert python_blocks_with_output(doc) == [("print(1)\n", "1\n", 2), ("print(2)\n", None, 10)]


@pytest.mark.parametrize("expected,actual,ok", [
    ("loss 0.423  acc 0.80", "loss 0.423  acc 0.80", True),
    ("loss 0.423  acc 0.80", "loss 0.424  acc 0.79", True),          # one unit in the last digit
    ("loss 0.423", "loss 0.425", False),
    ("steps: 400", "steps: 401", False),                              # integers are exact
    ("lr 2.00e-03", "lr 2.01e-03", True),
    ("lr 2.00e-03", "lr 2.02e-03", False),
    ("simd: ...", "simd: avx2", True),
    ("<function <lambda> at 0x...>", "<function <lambda> at 0x7f00>", True),
    ("ValueError: lr: expected", "TypeError: lr: expected", False),
    ("a\nb", "a", False),
    ("a  \n\n", "a", True),
])
def test_output_comparison(expected, actual, ok):
    assert output_matches(expected, actual) is ok
