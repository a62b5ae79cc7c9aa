"""optimc — neural-network optimizers as C kernels behind a NumPy-native API.

    import numpy as np, optimc
    W = np.zeros((784, 128), np.float32)
    opt = optimc.Adam([W], lr=1e-3)
    opt.step([gW])          # W changes in place, in one call into C
"""
import os as _os


def _core_import_error(exc):
    """Why ``optimc._core`` (the compiled C extension) did not import, and what to run."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    root = _os.path.dirname(here)
    built = [f for f in _os.listdir(here) if f.startswith("_core.") and f.endswith((".so", ".pyd"))]
    source_tree = _os.path.isfile(_os.path.join(root, "setup.py")) and _os.path.isdir(_os.path.join(root, "csrc"))
    if source_tree and not built:
        return (f"optimc is being imported from its source tree {root} (Python puts the current "
                f"folder first on sys.path), where the C extension optimc._core has not been built. "
                f"Either build it there: run `pip install -e .` (or `python setup.py build_ext "
                f"--inplace`) in {root}; or, to use an optimc installed with `pip install .`, "
                f"run Python from another folder.")
    if built:
        return (f"optimc's C extension {built[0]} in {here} failed to import ({exc}); it was "
                f"probably built for another Python or NumPy: rebuild it "
                + (f"(`pip install -e .` in {root})" if source_tree else "(reinstall optimc)") + ".")
    return (f"optimc's C extension optimc._core is missing from {here} ({exc}); "
            f"reinstall optimc (`pip install --force-reinstall optimc`).")


try:
    from . import _core
except ImportError as _exc:
    raise ImportError(_core_import_error(_exc)) from _exc
from . import optimizers
from .optimizers import ALL, Optimizer, ParamGroup
from .optimizers import SPECIAL, LBFGS, Muon  # outside ALL: see optimizers/__init__.py
from .sparse import SparseGrad
from .toolkit import EMA, SWA, clip_grad_norm, clip_grad_value, grad_norm
from .accumulate import MultiSteps
from .lookahead import Lookahead
from .checkpoint import load, save
from .config import get_num_threads, set_num_threads, set_simd, show_config
from . import problems, schedules

__version__ = "0.1.0"

globals().update({cls.__name__: cls for cls in ALL})   # optimc.Adam, ... for every algorithm

__all__ = [cls.__name__ for cls in ALL] + [
    "Optimizer", "ParamGroup", "ALL", "SparseGrad",
    "clip_grad_norm", "clip_grad_value", "grad_norm", "EMA", "SWA", "MultiSteps", "Lookahead", "save", "load",
    "show_config", "set_num_threads", "get_num_threads", "set_simd", "schedules", "problems",
]
__all__ += ["SPECIAL"] + [cls.__name__ for cls in SPECIAL]
