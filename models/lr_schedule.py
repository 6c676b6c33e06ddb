"""Learning-rate schedules: the learning rate of each step of a run.

A schedule is a pure function of (base lr, global step, total steps), so a
resumed run uses the same rate at every step as an uninterrupted one.

- ``constant``: ``lr`` at every step.
- ``cosine``: half a cosine from ``lr`` down to 0 over the run (Loshchilov and
  Hutter's SGDR without restarts): ``lr * (1 + cos(pi * t / T)) / 2``.
- ``linear``: a straight line from ``lr`` down to 0: ``lr * (1 - t / T)``.

``warmup_steps`` = W > 0 prefixes any of them with a linear ramp
``lr * (t + 1) / (W + 1)`` over the first W steps (Goyal et al. 2017); the
schedule itself then runs over the remaining T - W steps. The last step's
rate is above 0 (t = T - 1 < T), so every step changes the weights.
"""
from __future__ import annotations

import math

__all__ = ["SCHEDULES", "check_schedule", "lr_at"]

#: schedule name -> what it does (CLI help)
SCHEDULES = {"constant": "lr at every step", "cosine": "half a cosine from lr to 0 over the run",
             "linear": "a straight line from lr to 0 over the run"}


def check_schedule(name: str, warmup_steps: int = 0) -> str:
    """``name`` when it is a known schedule and ``warmup_steps`` an integer >= 0; else a ValueError naming them."""
    if name not in SCHEDULES:
        raise ValueError(f"lr_schedule: must be one of {', '.join(SCHEDULES)}, got {name!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps: must be an integer >= 0, got {warmup_steps!r}")
    return name


def lr_at(name: str, lr: float, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """The learning rate of global step ``step`` (0-based) of a run of ``total_steps`` steps."""
    check_schedule(name, warmup_steps)
    if not 0 <= step < total_steps:
        raise ValueError(f"step: must lie in [0, {total_steps - 1}], got {step!r}")
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if name == "constant":
        return float(lr)
    t, span = step - warmup_steps, max(1, total_steps - warmup_steps)
    if name == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t / span))
    return lr * (1.0 - t / span)
