"""Convergence study: LeNet-5 on mnist5k, float32 vs fixed point, gradient pruning rates.

    python bench/convergence.py [--epochs 1] [--limit-train N] [--limit-test N]
        [--precisions float32 fixed16 fixed12 fixed8] [--rates 0 0.5 0.8 0.9]
        [--report convergence.json] [--table convergence.md] [--plot convergence.png]

Every run trains on the emulated accelerator in program mode from the same
initial weights, batches and pruning seeds (same ``--seed``), and reports:

- final test accuracy;
- gradient sparsity: mean fraction of zeros of the layers' dy entering the
  backward kernels (after pruning), with the fraction before pruning;
- measured backward speedup: the kernels' cycles of the backward passes
  (bwd_data + bwd_weight) in dense mode (skipping off, the sparsity-agnostic
  baseline; its cycles do not depend on the data, so one dense step of the
  model and batch size measures them) divided by the sparse-mode backward
  cycles per step of the run, averaged over its steps; the pruning kernel's
  own cycles count on the sparse side.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from zskip.host.backends import make_backend
from zskip.models.datasets import load_dataset
from zskip.models.networks import get_model
from zskip.models.step import prune_seeds
from zskip.models.train import train

BACKWARD_PASSES = ("bwd_data", "bwd_weight")


def dense_backward_cycles(model, dataset, batch_size: int, seed: int) -> int:
    """Backward-pass cycles of one dense-mode step (skip_zeros off) of ``model`` at ``batch_size``."""
    backend = make_backend("emu", skip_zeros=False, account=False)
    try:
        params, velocities = model.init_params(seed), model.zero_velocities()
        result = backend.train_step(model, params, velocities, dataset.x_train[:batch_size],
                                    dataset.y_train[:batch_size], 0.0, 0.0, 0.0,
                                    prune_seeds=prune_seeds(seed, 0, len(model.layers)))
    finally:
        backend.close()
    return sum(int(layer["kernel"][p]["cycles"]) for layer in result.layers for p in BACKWARD_PASSES
               if p in layer["kernel"])


def run_one(model, dataset, precision: str, rate: float, epochs: int, batch_size: int, lr: float, seed: int,
            dense_cycles: int) -> dict:
    """Train one configuration; the row of the study's table."""
    backend = make_backend("emu", precision=precision, prune_rate=rate, account=False)
    t0 = time.perf_counter()
    try:
        result = train(backend, model, dataset, epochs=epochs, batch_size=batch_size, lr=lr, momentum=0.9,
                       seed=seed, quiet=True, max_saturations=10 ** 12)
    finally:
        backend.close()
    last = result.report["epochs"][-1]
    steps = -(-len(dataset.x_train) // batch_size)
    layers = last["layers"]
    sparse = sum(int(l["kernel"][p]["cycles"]) for l in layers for p in BACKWARD_PASSES + ("prune",)
                 if p in l["kernel"]) / steps
    before = float(np.mean([l["grad_sparsity"] for l in layers]))
    after = float(np.mean([l.get("pruned_grad_sparsity", l["grad_sparsity"]) for l in layers]))
    return {"precision": precision, "prune_rate": rate, "test_accuracy": last["test_accuracy"],
            "train_loss": last["train_loss"], "grad_sparsity_before": before, "grad_sparsity": after,
            "backward_cycles_per_step": sparse, "dense_backward_cycles_per_step": dense_cycles,
            "backward_speedup": dense_cycles / sparse if sparse else None,
            "saturations": int(sum(l["saturations"] for l in layers)), "seconds": time.perf_counter() - t0}


def markdown_table(rows: List[dict]) -> str:
    """The study as a markdown table, one row per run."""
    lines = ["| precision | prune rate | test accuracy | grad sparsity (before -> after pruning) | "
             "backward speedup (dense / sparse cycles) | saturations (last epoch) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['precision']} | {r['prune_rate']:g} | {100 * r['test_accuracy']:.2f} % | "
                     f"{r['grad_sparsity_before']:.3f} -> {r['grad_sparsity']:.3f} | "
                     f"{r['backward_speedup']:.2f}x | {r['saturations']} |")
    return "\n".join(lines)


def plot(rows: List[dict], path: str) -> None:
    """Accuracy and backward speedup against the pruning rate, one line per precision."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_acc, ax_speed) = plt.subplots(1, 2, figsize=(10, 4))
    for precision in dict.fromkeys(r["precision"] for r in rows):
        mine = [r for r in rows if r["precision"] == precision]
        rates = [r["prune_rate"] for r in mine]
        ax_acc.plot(rates, [100 * r["test_accuracy"] for r in mine], marker="o", label=precision)
        ax_speed.plot(rates, [r["backward_speedup"] for r in mine], marker="o", label=precision)
    ax_acc.set(xlabel="gradient prune rate", ylabel="test accuracy (%)", title="LeNet-5, mnist5k")
    ax_speed.set(xlabel="gradient prune rate", ylabel="backward speedup (dense / sparse cycles)",
                 title="measured backward speedup")
    for ax in (ax_acc, ax_speed):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def study(precisions, rates, epochs: int, batch_size: int, lr: float, seed: int,
          limit_train: Optional[int] = None, limit_test: Optional[int] = None, log=None) -> dict:
    """Run every (precision, rate); returns {"config", "dense_backward_cycles_per_step", "rows"}."""
    model = get_model("lenet5")
    dataset = load_dataset("mnist5k", seed=seed)
    if limit_train is not None or limit_test is not None:
        dataset = dataset.subset(limit_train, limit_test)
    dense = dense_backward_cycles(model, dataset, batch_size, seed)
    rows = []
    for precision in precisions:
        for rate in rates:
            row = run_one(model, dataset, precision, float(rate), epochs, batch_size, lr, seed, dense)
            rows.append(row)
            if log:
                log(f"{precision:>8} rate {rate:<4g} acc {row['test_accuracy']:.4f} sparsity "
                    f"{row['grad_sparsity']:.3f} speedup {row['backward_speedup']:.2f}x ({row['seconds']:.0f} s)")
    config = {"model": "lenet5", "data": "mnist5k", "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "momentum": 0.9, "seed": seed, "n_train": len(dataset.x_train), "n_test": len(dataset.x_test)}
    return {"config": config, "dense_backward_cycles_per_step": dense, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precisions", nargs="+", default=["float32", "fixed16", "fixed12", "fixed8"])
    p.add_argument("--rates", nargs="+", type=float, default=[0.0, 0.5, 0.8, 0.9])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--report", default="convergence.json")
    p.add_argument("--table", default=None, help="also write the markdown table here")
    p.add_argument("--plot", default=None, help="also write the figure here (PNG)")
    args = p.parse_args(argv)
    out = study(args.precisions, args.rates, args.epochs, args.batch_size, args.lr, args.seed, args.limit_train,
                args.limit_test, log=lambda s: print(s, file=sys.stderr, flush=True))
    with open(args.report, "w") as f:
        json.dump(out, f, indent=1)
    table = markdown_table(out["rows"])
    if args.table:
        with open(args.table, "w") as f:
            f.write(table + "\n")
    if args.plot:
        plot(out["rows"], args.plot)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
