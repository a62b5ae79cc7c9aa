"""optimc — neural-network optimizers as C kernels behind a NumPy-native API.

    import numpy as np, optimc
    W = np.zeros((784, 128), np.float32)
    opt = optimc.Adam([W], lr=1e-3)
    opt.step([gW])          # W changes in place, in one call into C
"""
from . import _core
from . import optimizers
from .optimizers import ALL, Optimizer, ParamGroup
from .toolkit import EMA, SWA, clip_grad_norm, clip_grad_value, grad_norm
from .config import get_num_threads, set_num_threads, set_simd, show_config
from . import problems, schedules

__version__ = "0.1.0"

globals().update({cls.__name__: cls for cls in ALL})   # optimc.Adam, ... for every algorithm

__all__ = [cls.__name__ for cls in ALL] + [
    "Optimizer", "ParamGroup", "ALL",
    "clip_grad_norm", "clip_grad_value", "grad_norm", "EMA", "SWA",
    "show_config", "set_num_threads", "get_num_threads", "set_simd", "schedules", "problems",
]
