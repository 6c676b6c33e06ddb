"""Approximate-multiplier study: LeNet-5 on mnist5k trained with exact, bf16, Mitchell and a LUT multiplier.

    python bench/approx.py [--epochs 3] [--backends reference emu] [--muls exact bf16 mitchell lut:FILE]
        [--lut-bits 7] [--report approx.json] [--table approx.md] [--plot approx.png]

Every run starts from the same weights and batches (same ``--seed``) and
uses ``--precision float32,mul=NAME``; it reports the final test accuracy,
the train loss per step (the loss curve) and per epoch, and the backend's
mean time per training step against the exact multiplier's on the same
backend. Each backend of ``--backends`` trains every multiplier: the
reference (numpy: products by ``zskip.models.multipliers``, float64 sums)
and the emulator (the HLS engine with the multiplier in its MAC lanes,
``hls/common/multipliers.h``). Without a ``lut:FILE`` in ``--muls`` the LUT
run uses a table built here from the exact model at ``--lut-bits`` (a
truncating multiplier of m + 1 significand bits, ApproxTrain's AMSim form;
``bench/make_mul_lut.py``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import List

from study_cli import run_study, training_arguments
from zskip.host.backends import make_backend
from zskip.models.datasets import load_dataset
from zskip.models.multipliers import LUT_MODELS, lut_from_model, write_lut
from zskip.models.networks import get_model
from zskip.models.train import train


class LossRecorder:
    """A backend that records the loss of every step it streams (the loss curve); the rest is delegated."""

    def __init__(self, backend):
        self.backend = backend
        self.losses: List[float] = []

    def stream(self, *args, **kwargs):
        for out in self.backend.stream(*args, **kwargs):
            self.losses.append(float(out.result.loss))
            yield out

    def __getattr__(self, name):
        return getattr(self.backend, name)


def run_one(mul: str, backend_name: str, model, dataset, epochs: int, batch_size: int, lr: float, seed: int) -> dict:
    """Train one multiplier; a row of the study."""
    backend = LossRecorder(make_backend(backend_name, precision=f"float32,mul={mul}", account=False))
    try:
        result = train(backend, model, dataset, epochs=epochs, batch_size=batch_size, lr=lr, momentum=0.9,
                       seed=seed, quiet=True)
    finally:
        backend.close()
    epochs_report = result.report["epochs"]
    steps = len(backend.losses)
    return {"mul": mul, "test_accuracy": epochs_report[-1]["test_accuracy"],
            "train_loss": [e["train_loss"] for e in epochs_report],
            "test_accuracy_per_epoch": [e["test_accuracy"] for e in epochs_report],
            "step_losses": backend.losses,
            "seconds_per_step": sum(e["seconds"] for e in epochs_report) / steps if steps else None}


def study(muls, backends, epochs: int, batch_size: int, lr: float, seed: int, lut_bits: int,
          limit_train=None, limit_test=None, log=print) -> dict:
    model = get_model("lenet5")
    dataset = load_dataset("mnist5k", seed=seed)
    if limit_train is not None or limit_test is not None:
        dataset = dataset.subset(limit_train, limit_test)
    runs = {b: [] for b in backends}
    with tempfile.TemporaryDirectory() as tmp:
        resolved = []
        for mul in muls:
            if mul == "lut":
                path = Path(tmp) / f"exact{lut_bits}.bin"
                write_lut(path, lut_from_model(LUT_MODELS["exact"], lut_bits), lut_bits)
                mul = f"lut:{path}"
            resolved.append(mul)
        for backend_name in backends:
            rows = runs[backend_name]
            for mul in resolved:
                log(f"{mul}: training {epochs} epochs on {backend_name}")
                row = run_one(mul, backend_name, model, dataset, epochs, batch_size, lr, seed)
                row["backend"] = backend_name
                if mul.startswith("lut:") and mul.startswith(f"lut:{tmp}"):
                    row["mul"] = f"lut (exact model, m = {lut_bits})"
                rows.append(row)
                log(f"  test accuracy {row['test_accuracy']:.4f}, {row['seconds_per_step']:.3f} s/step")
            exact = next((r["seconds_per_step"] for r in rows if r["mul"] == "exact"), None)
            for r in rows:
                r["time_vs_exact"] = r["seconds_per_step"] / exact if exact else None
    return {"config": {"model": "lenet5", "data": dataset.name, "backends": list(backends), "epochs": epochs,
                       "batch_size": batch_size, "lr": lr, "momentum": 0.9, "seed": seed, "lut_bits": lut_bits,
                       "n_train": len(dataset.x_train), "n_test": len(dataset.x_test)},
            "rows": [r for b in backends for r in runs[b]]}


def markdown_table(rows: List[dict]) -> str:
    """One line per multiplier and backend, in the order of ``--muls`` (the backends of a multiplier together)."""
    lines = ["| multiplier | backend | test accuracy | train loss per epoch | time per step (vs exact, same backend) |",
             "|---|---|---|---|---|"]
    order = list(dict.fromkeys(r["mul"] for r in rows))
    for r in sorted(rows, key=lambda r: order.index(r["mul"])):
        losses = " / ".join(f"{v:.3f}" for v in r["train_loss"])
        ratio = f" ({r['time_vs_exact']:.1f}x)" if r.get("time_vs_exact") else ""
        lines.append(f"| {r['mul']} | {r.get('backend', '')} | {100 * r['test_accuracy']:.2f} % | {losses} | "
                     f"{1000 * r['seconds_per_step']:.0f} ms{ratio} |")
    return "\n".join(lines)


def plot(rows: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {}
    for r in rows:
        losses = np.asarray(r["step_losses"])
        k = min(10, len(losses))
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        colour = colours.setdefault(r["mul"], f"C{len(colours)}")
        emu = r.get("backend") == "emu"
        ax.plot(np.arange(len(smooth)) + k - 1, smooth, color=colour, linestyle="--" if emu else "-",
                label=f"{r['mul']}, {r.get('backend', '')} ({100 * r['test_accuracy']:.1f} %)")
    ax.set_xlabel("training step")
    ax.set_ylabel("train loss (10-step mean)")
    ax.set_title("LeNet-5 / mnist5k: multipliers of the MACs (solid: reference, dashed: emu)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--muls", nargs="+", default=["exact", "bf16", "mitchell", "lut"],
                   help="multipliers (lut: a table of the exact model at --lut-bits; lut:FILE a given table)")
    p.add_argument("--backends", nargs="+", default=["reference", "emu"],
                   help="backends that train every multiplier (reference: numpy; emu: the HLS engine)")
    p.add_argument("--lut-bits", type=int, default=7)
    training_arguments(p, "approx.json", "also write the loss curves here (PNG)")
    args = p.parse_args(argv)
    return run_study(args, lambda log: study(args.muls, args.backends, args.epochs, args.batch_size, args.lr,
                                             args.seed, args.lut_bits, args.limit_train, args.limit_test, log=log),
                     markdown_table, plot)


if __name__ == "__main__":
    sys.exit(main())
