"""The built-in test problems, by their public name: ``optimc.problems``.

They live in the demo's package, :mod:`optimc.demo.problems` (see its docstring for the
protocol, the problems and how their learning rates were chosen); this module re-exports
its public names, so ``from optimc.problems import get_problem`` keeps working and
static type checkers see the same objects.
"""
from .demo.problems import *  # noqa: F401,F403 - the re-export is this module's job
from .demo.problems import __all__  # noqa: F401
