"""Structured-sparsity study: LeNet-5 on mnist5k with pre-defined sparse fully-connected junctions.

    python bench/structured.py [--densities 1 0.5 0.25 0.1] [--epochs 3] [--backends reference emu]
        [--report structured.json] [--table structured.md] [--plot structured.png]

Every run starts from the same seed (weights of the dense layers, batches)
with ``Model.with_density(D, seed)``: fc1 and fc2 keep a fraction D of their
edges, the logits layer stays dense. Each density trains on every backend
given (default: the numpy reference and the emulated engine, the same HLS
sources as the board). Reported per density: final test accuracy per
backend; weight memory (stored weights of all layers, float32, plus one
input index per sparse edge, 16 bits) and the FC junctions' stored edges;
the reference MAC counts per training step over the FC layers
(``macs_nonzero``: stored edges with nonzero operands, what the
zero-skipping engine executes; ``macs_dense`` is the dense junctions'
N * J * I); and, from the emu backend, the kernels' own cycle counters of
each pass summed over the FC layers, per step of the last epoch (sparse
junctions on the ``sparse_fc`` kernels, dense ones on the fc engine), and
those against the dense run.
"""
from __future__ import annotations

import argparse
import sys
from typing import List

from study_cli import run_study, training_arguments
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
    row = {"density": density, "backend": backend_name, "test_accuracy": last["test_accuracy"],
           "train_loss": [e["train_loss"] for e in result.report["epochs"]],
           "fc_edges": {l["name"]: l["edges"] for l in fc}, "weight_bytes": memory, "macs_per_step": macs}
    cycles = {p: sum(l["kernel"].get(p, {}).get("cycles", 0) for l in fc) / steps for p in PASSES}
    if any(cycles.values()):
        row["fc_cycles_per_step"] = cycles
        row["fc_macs_executed_per_step"] = {p: sum(l["kernel"].get(p, {}).get("macs_executed", 0) for l in fc) / steps
                                            for p in PASSES}
    return row


def study(densities, backends, epochs: int, batch_size: int, lr: float, seed: int, density_seed: int,
          limit_train=None, limit_test=None, log=print) -> dict:
    dataset = load_dataset("mnist5k", seed=seed)
    if limit_train is not None or limit_test is not None:
        dataset = dataset.subset(limit_train, limit_test)
    rows = []
    for d in densities:
        row = {"density": d, "runs": {}}
        for b in backends:
            log(f"density {d}: training {epochs} epochs on {b}")
            run = row["runs"][b] = run_one(d, b, dataset, epochs, batch_size, lr, seed, density_seed)
            log(f"  test accuracy {run['test_accuracy']:.4f}")
        first = row["runs"][backends[0]]
        row.update({k: first[k] for k in ("fc_edges", "weight_bytes", "macs_per_step")})
        for run in row["runs"].values():
            if "fc_cycles_per_step" in run:
                row["fc_cycles_per_step"] = run["fc_cycles_per_step"]
                row["fc_macs_executed_per_step"] = run["fc_macs_executed_per_step"]
        rows.append(row)
    dense = next((r for r in rows if r["density"] == 1.0), None)
    for r in rows:
        if dense is not None:
            r["weight_memory_vs_dense"] = r["weight_bytes"] / dense["weight_bytes"]
            r["fc_macs_nonzero_vs_dense"] = {p: r["macs_per_step"]["fc"][p]["macs_nonzero"]
                                             / dense["macs_per_step"]["fc"][p]["macs_nonzero"] for p in PASSES}
            if "fc_cycles_per_step" in r and "fc_cycles_per_step" in dense:
                r["fc_cycles_vs_dense"] = {p: r["fc_cycles_per_step"][p] / dense["fc_cycles_per_step"][p]
                                           for p in PASSES}
    return {"config": {"model": "lenet5", "data": dataset.name, "backends": list(backends), "epochs": epochs,
                       "batch_size": batch_size, "lr": lr, "momentum": 0.9, "seed": seed,
                       "density_seed": density_seed, "n_train": len(dataset.x_train), "n_test": len(dataset.x_test)},
            "rows": rows}


def markdown_table(rows: List[dict]) -> str:
    backends = list(rows[0]["runs"]) if rows else []
    lines = ["| FC density | fc1 / fc2 edges | test accuracy (" + " / ".join(backends) + ") | weight memory | "
             "FC MACs per step, nonzero (fwd / bwd_data / bwd_weight) | FC MACs vs dense | "
             "FC cycles per step, emu (fwd / bwd_data / bwd_weight) | FC cycles vs dense |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fc = r["macs_per_step"]["fc"]
        edges = " / ".join(str(v) for k, v in r["fc_edges"].items() if k != "fc3")
        vs = r.get("fc_macs_nonzero_vs_dense")
        vs_text = " / ".join(f"{vs[p]:.2f}" for p in PASSES) if vs else ""
        mem = f"{r['weight_bytes'] / 1024:.1f} KiB" + (f" ({r['weight_memory_vs_dense']:.2f}x)"
                                                        if "weight_memory_vs_dense" in r else "")
        acc = " / ".join(f"{100 * r['runs'][b]['test_accuracy']:.2f} %" for b in backends)
        cyc = r.get("fc_cycles_per_step")
        cyc_text = " / ".join(f"{cyc[p] / 1e3:.0f}k" for p in PASSES) if cyc else ""
        cvs = r.get("fc_cycles_vs_dense")
        cvs_text = " / ".join(f"{cvs[p]:.2f}" for p in PASSES) if cvs else ""
        lines.append(f"| {r['density']:g} | {edges} | {acc} | {mem} | "
                     + " / ".join(f"{fc[p]['macs_nonzero'] / 1e3:.0f}k" for p in PASSES)
                     + f" | {vs_text} | {cyc_text} | {cvs_text} |")
    return "\n".join(lines)


def plot(rows: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    d = [r["density"] for r in rows]
    for b in rows[0]["runs"]:
        ax[0].plot(d, [100 * r["runs"][b]["test_accuracy"] for r in rows], "o-", label=b)
    ax[0].legend()
    ax[0].set_xscale("log")
    ax[0].set_xlabel("FC density")
    ax[0].set_ylabel("test accuracy (%)")
    ax[1].plot(d, [r["weight_bytes"] / 1024 for r in rows], "o-", label="weight memory (KiB)")
    ax[1].plot(d, [sum(r["macs_per_step"]["fc"][p]["macs_nonzero"] for p in PASSES) / 1e5 for r in rows], "s-",
               label="FC MACs per step (1e5)")
    if all("fc_cycles_per_step" in r for r in rows):
        ax[1].plot(d, [sum(r["fc_cycles_per_step"].values()) / 1e4 for r in rows], "^-",
                   label="FC cycles per step, emu (1e4)")
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
    p.add_argument("--backends", nargs="+", default=["reference", "emu"])
    p.add_argument("--density-seed", type=int, default=0)
    training_arguments(p, "structured.json", "also write the figure here (PNG)")
    args = p.parse_args(argv)
    return run_study(args, lambda log: study(args.densities, args.backends, args.epochs, args.batch_size, args.lr,
                                             args.seed, args.density_seed, args.limit_train, args.limit_test,
                                             log=log),
                     markdown_table, plot)


if __name__ == "__main__":
    sys.exit(main())
