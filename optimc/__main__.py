"""optimc's command line: ``python -m optimc [COMMAND] [options]``, or the ``optimc`` script.

    python -m optimc [options]          the demo: every optimizer on the built-in problems
    python -m optimc run [options]      the same, by name
    python -m optimc bench [options]    the speed benchmark

Each command is a module with ``main(argv, prog, commands)``, imported only when it
runs (the demo does not pay for the benchmark's imports, and a command is one line in
:data:`COMMANDS`).
"""

import importlib
import os
import sys
from typing import Optional, Sequence

__all__ = ["main", "COMMANDS", "DEFAULT_COMMAND", "program_name"]

#: command -> (module, what it does)
COMMANDS = {
    "run": ("optimc.demo.cli", "compare the optimizers on the built-in problems"),
    "bench": ("optimc.bench.cli", "time one step against NumPy, torch.optim and the roofline"),
}
DEFAULT_COMMAND = "run"


def program_name() -> str:
    """How the user started us, for usage lines: the ``optimc`` script or ``python -m``."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "optimc" if os.path.splitext(script)[0] == "optimc" else "python -m optimc"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv.pop(0) if argv and argv[0] in COMMANDS else DEFAULT_COMMAND
    prog = program_name()
    if name != DEFAULT_COMMAND:
        prog = f"{prog} {name}"
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(argv, prog=prog, commands=tuple(COMMANDS)) or 0)


if __name__ == "__main__":
    sys.exit(main())
