"""Structured-sparsity study: LeNet-5 on mnist5k with pre-defined sparse fully-connected junctions.

    python bench/structured.py [--densities 1 0.5 0.25 0.1] [--epochs 3] [--backend reference]
        [--report structured.json] [--table structured.md] [--plot structured.png]

Every run starts from the same seed (weights of the dense layers, batches)
with ``Model.with_density(D, seed)``: fc1 and fc2 keep a fraction D of their
edges, the logits layer stays dense. Reported per run: final test accuracy;
weight memory (stored weights of all layers, float32, plus one input index
per sparse edge, 16 bits) and the FC junctions' stored edges; the reference
MAC counts per pass over the whole network and over the FC layers
(``macs_dense``: every stored edge; ``macs_nonzero``: those with nonzero
operands, what the zero-skipping engine executes), per training step; and
the same against the dense run.

Measured cycles per pass need the emu backend, which refuses density < 1
until the HLS engine reads compressed weights; on the reference backend the
cycle columns are absent.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List

from zskip.host.backends import make_backend
from zskip.models.datasets import load_dataset
from zskip.models.networks import get_model
from zskip.models.train import train

PASSES = ("fwd", "bwd_data", "bwd_weight")
#: bytes of one stored weight (float32) and of one edge's input index (up to 65536 inputs)
WEIGHT_BYTES, INDEX_BYTES = 4, 2


def run_one(density: float, backend_name: str, dataset, epochs: int, batch_size: int, lr: float, seed: int,
            density_seed: int) -> dict:
    model = get_model("lenet5").with_density(density, density_seed)
    backend = make_backend(backend_name)
    try:
        result = train(backend, model, dataset, epochs=epochs, batch_size=batch_size, lr=lr, momentum=0.9,
                       seed=seed, quiet=True)
    finally:
        backend.close()
    last = result.report["epochs"][-1]
    steps = -(-len(dataset.x_train) // batch_size)
    fc = [l for l in last["layers"] if l["kind"] == "linear"]
    sparse_edges = sum(l["edges"] for l in fc if l["density"] < 1)
    memory = sum(l["edges"] for l in last["layers"]) * WEIGHT_BYTES + sparse_edges * INDEX_BYTES
    macs = {scope: {p: {k: sum(l["macs"][p][k] for l in layers if p in l["macs"]) / steps
                        for k in ("macs_dense", "macs_nonzero")} for p in PASSES}
            for scope, layers in (("all", last["layers"]), ("fc", fc))}
    row = {"density": density, "test_accuracy": last["test_accuracy"],
           "train_loss": [e["train_loss"] for e in result.report["epochs"]],
           "fc_edges": {l["name"]: l["edges"] for l in fc}, "weight_bytes": memory, "macs_per_step": macs}
    cycles = {p: sum(l["kernel"].get(p, {}).get("cycles", 0) for l in last["layers"]) / steps for p in PASSES}
    if any(cycles.values()):
        row["cycles_per_step"] = cycles
    return row


def study(densities, backend_name: str, epochs: int, batch_size: int, lr: float, seed: int, density_seed: int,
          limit_train=None, limit_test=None, log=print) -> dict:
    dataset = load_dataset("mnist5k", seed=seed)
    if limit_train is not None or limit_test is not None:
        dataset = dataset.subset(limit_train, limit_test)
    rows = []
    for d in densities:
        log(f"density {d}: training {epochs} epochs on {backend_name}")
        rows.append(run_one(d, backend_name, dataset, epochs, batch_size, lr, seed, density_seed))
        log(f"  test accuracy {rows[-1]['test_accuracy']:.4f}")
    dense = next((r for r in rows if r["density"] == 1.0), None)
    for r in rows:
        if dense is not None:
            r["weight_memory_vs_dense"] = r["weight_bytes"] / dense["weight_bytes"]
            r["fc_macs_nonzero_vs_dense"] = {p: r["macs_per_step"]["fc"][p]["macs_nonzero"]
                                             / dense["macs_per_step"]["fc"][p]["macs_nonzero"] for p in PASSES}
    return {"config": {"model": "lenet5", "data": dataset.name, "backend": backend_name, "epochs": epochs,
                       "batch_size": batch_size, "lr": lr, "momentum": 0.9, "seed": seed,
                       "density_seed": density_seed, "n_train": len(dataset.x_train), "n_test": len(dataset.x_test)},
            "rows": rows}


def markdown_table(rows: List[dict]) -> str:
    lines = ["| FC density | fc1 / fc2 edges | test accuracy | weight memory | FC MACs per step, nonzero "
             "(fwd / bwd_data / bwd_weight) | FC MACs vs dense | all-layer MACs per step, nonzero |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        fc = r["macs_per_step"]["fc"]
        al = r["macs_per_step"]["all"]
        edges = " / ".join(str(v) for k, v in r["fc_edges"].items() if k != "fc3")
        vs = r.get("fc_macs_nonzero_vs_dense")
        vs_text = " / ".join(f"{vs[p]:.2f}" for p in PASSES) if vs else ""
        mem = f"{r['weight_bytes'] / 1024:.1f} KiB" + (f" ({r['weight_memory_vs_dense']:.2f}x)"
                                                        if "weight_memory_vs_dense" in r else "")
        lines.append(f"| {r['density']:g} | {edges} | {100 * r['test_accuracy']:.2f} % | {mem} | "
                     + " / ".join(f"{fc[p]['macs_nonzero'] / 1e3:.0f}k" for p in PASSES) + f" | {vs_text} | "
                     + f"{sum(al[p]['macs_nonzero'] for p in PASSES) / 1e6:.2f} M |")
    return "\n".join(lines)


def plot(rows: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    d = [r["density"] for r in rows]
    ax[0].plot(d, [100 * r["test_accuracy"] for r in rows], "o-")
    ax[0].set_xscale("log")
    ax[0].set_xlabel("FC density")
    ax[0].set_ylabel("test accuracy (%)")
    ax[1].plot(d, [r["weight_bytes"] / 1024 for r in rows], "o-", label="weight memory (KiB)")
    ax[1].plot(d, [sum(r["macs_per_step"]["fc"][p]["macs_nonzero"] for p in PASSES) / 1e5 for r in rows], "s-",
               label="FC MACs per step (1e5)")
    ax[1].set_xscale("log")
    ax[1].set_xlabel("FC density")
    ax[1].legend()
    fig.suptitle("LeNet-5 / mnist5k: pre-defined sparse FC junctions")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", nargs="+", type=float, default=[1.0, 0.5, 0.25, 0.1])
    p.add_argument("--backend", default="reference")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--density-seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--report", default="structured.json")
    p.add_argument("--table", default=None, help="also write the markdown table here")
    p.add_argument("--plot", default=None, help="also write the figure here (PNG)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out = study(args.densities, args.backend, args.epochs, args.batch_size, args.lr, args.seed, args.density_seed,
                args.limit_train, args.limit_test, log=lambda s: print(s, file=sys.stderr, flush=True))
    out["seconds"] = time.perf_counter() - t0
    with open(args.report, "w") as f:
        json.dump(out, f, indent=1)
    table = markdown_table(out["rows"])
    if args.table:
        Path(args.table).write_text(table + "\n")
    if args.plot:
        plot(out["rows"], args.plot)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
