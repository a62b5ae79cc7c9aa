"""Learning-rate schedules for optimc optimizers.

Two interfaces, one module each:

* **Scheduler objects** (:mod:`optimc.schedules.schedulers`) with PyTorch's
  names, arguments and semantics (``torch.optim.lr_scheduler``): they are
  attached to an optimizer, write ``optimizer.param_groups[i]["lr"]`` (and, for
  :class:`CyclicLR` and :class:`OneCycleLR`, the momentum or ``betas[0]``) and
  are advanced with ``scheduler.step()`` after each ``optimizer.step(grads)``;
  ``select(opt, i, ...)`` attaches one to some param groups only::

      opt = optimc.SGD([W, b], lr=0.1, momentum=0.9)
      sched = optimc.schedules.CosineAnnealingLR(opt, T_max=100)
      for epoch in range(100):
          opt.step(grads(W, b))
          sched.step()

  Every scheduler has ``get_last_lr()``, ``state_dict()`` and
  ``load_state_dict()``; the state is plain Python data (lists, numbers,
  strings, dicts). Schedulers store a few extra keys in the param groups
  ("initial_lr", and for the cyclic ones "max_lr", "min_lr", "max_momentum",
  "base_momentum"), as PyTorch does.

* **Functional schedules** (:mod:`optimc.schedules.functional`) for
  Optax-style code: :func:`constant`, :func:`step_decay`,
  :func:`exponential_decay`, :func:`cosine_decay`, :func:`linear_warmup`,
  :func:`warmup_cosine` and :func:`piecewise_constant` return a picklable
  :class:`Schedule`, a callable ``f(step) -> lr`` of the 0-based step count,
  which optimc optimizers accept as ``lr=`` and evaluate before each step::

      opt = optimc.Adam([W], lr=optimc.schedules.warmup_cosine(1e-3, 100, 10_000))
"""

from . import functional, schedulers
from .functional import *  # noqa: F401,F403  (the names in functional.__all__)
from .schedulers import *  # noqa: F401,F403  (the names in schedulers.__all__)
# Schedules pickled before the split into modules name their rules here.
from .functional import (_constant, _cosine_decay, _exponential_decay, _linear_warmup,  # noqa: F401
                         _piecewise_constant, _step_decay, _warmup_cosine)

__all__ = schedulers.__all__ + functional.__all__
