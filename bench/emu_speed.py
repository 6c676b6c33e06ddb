"""Time of one LeNet-5 training step (forward, backward, SGD) of a 64-image batch
on the emulated accelerator, float32 and fixed point, sparse and dense mode.

    python bench/emu_speed.py [--batch 64] [--repeat 3] [--precision float32 ap_fixed<16,6>]

Inputs are MNIST-like: 28x28 images with about 80 % zero pixels. Prints, per
configuration, the best wall time of a step, the time inside the kernels
(the ``run`` steps) and the kernels' cycle count.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from zskip.host.runtime.accelerator import Accelerator
from zskip.models.networks import get_model
from zskip.models.step import train_step


class _TimedOps:
    """Forwards every op to the accelerator and sums its run time and cycles."""

    def __init__(self, acc):
        self.acc, self.run_s, self.cycles = acc, 0.0, 0

    @property
    def last_stats(self):
        return self.acc.last_stats

    def __getattr__(self, name):
        op = getattr(self.acc, name)

        def call(*args, **kwargs):
            out = op(*args, **kwargs)
            self.run_s += self.acc.last_timings.get("run", 0.0)
            self.cycles += self.acc.last_stats.get("cycles", 0)
            return out
        return call


def mnist_like(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28)).astype(np.float32)
    x[rng.random(x.shape) < 0.8] = 0
    return x, rng.integers(0, 10, batch)


def bench(precision: str, skip_zeros: bool, batch: int, repeat: int) -> dict:
    acc = Accelerator.emulated(precision=precision, skip_zeros=skip_zeros)
    model = get_model("lenet5")
    params, vel = model.init_params(0), model.zero_velocities()
    x, y = mnist_like(batch)
    best = None
    for _ in range(repeat):
        ops = _TimedOps(acc)
        t0 = time.perf_counter()
        train_step(ops, model, params, vel, x, y, lr=0.01, momentum=0.9, weight_decay=0.0, account=False)
        wall = time.perf_counter() - t0
        if best is None or wall < best["wall_s"]:
            best = {"wall_s": wall, "kernel_s": ops.run_s, "cycles": ops.cycles}
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--precision", nargs="+", default=["float32", "ap_fixed<16,6>"])
    args = parser.parse_args(argv)
    print(f"LeNet-5 training step, batch {args.batch}, best of {args.repeat}")
    print(f"{'precision':>16} {'mode':>6} {'step ms':>9} {'kernels ms':>11} {'cycles':>12}")
    for precision in args.precision:
        for skip in (True, False):
            r = bench(precision, skip, args.batch, args.repeat)
            print(f"{precision:>16} {'sparse' if skip else 'dense':>6} {1e3 * r['wall_s']:9.1f} "
                  f"{1e3 * r['kernel_s']:11.1f} {r['cycles']:12d}")


if __name__ == "__main__":
    main()
