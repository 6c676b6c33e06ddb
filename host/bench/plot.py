"""Figure of a ``zskip bench`` report: per-layer speedups, board estimates, emulator speed."""
from __future__ import annotations

__all__ = ["plot_report"]


def plot_report(report: dict, path: str) -> None:
    """Write a PNG with one panel per figure of ``report`` (from :func:`zskip.host.bench.report.run_bench`).

    Panels: measured vs ideal speedup per layer and pass (with the step
    totals); images per second per board, dense and sparse; and, when the
    report has timings, seconds per training step per implementation.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    speed = report.get("speed") or {}
    panels = 3 if speed else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5.6),
                             gridspec_kw={"width_ratios": [1.6] + [1] * (panels - 1)})
    cfg, totals = report["config"], report["totals"]

    ax = axes[0]
    rows = report["layers"]
    labels = [f"{r['name']} {r['pass'].replace('_', '-')}" for r in rows] + ["whole step"]
    measured = [r["speedup"] or 0 for r in rows] + [totals["speedup_step"] or 0]
    ideal = [r["ideal_speedup"] or 0 for r in rows] + [totals["ideal_speedup_step"] or 0]
    x = np.arange(len(labels))
    ax.bar(x - 0.2, measured, 0.4, label="measured (kernel cycles dense / sparse)", color="tab:blue")
    ax.bar(x + 0.2, ideal, 0.4, label="ideal (MACs dense / nonzero)", color="tab:gray", alpha=0.6)
    ax.axhline(5.4, color="tab:red", ls="--", lw=1, label="goal 5.4x (Sarma et al.)")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7, rotation=60, ha="right")
    ax.set_ylabel("speedup over dense mode (log)")
    ax.set_title(f"{cfg['model']} on {cfg['data']} after {report['training']['epochs']} epoch(s), "
                 f"{report['pe_lanes']} PE lanes\nstep: {totals['speedup_step']:.2f}x measured, "
                 f"{totals['ideal_speedup_step']:.2f}x ideal, utilisation {totals['utilization_step']:.2f}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1]
    boards = report["boards"]
    names = [f"{b['board']}\n{b['pe_lanes']} lanes\n{b['clock_mhz']:.0f} MHz" for b in boards]
    x = np.arange(len(boards))
    dense = [b["dense"]["images_per_s"] for b in boards]
    sparse = [b["sparse"]["images_per_s"] for b in boards]
    ax.bar(x - 0.2, dense, 0.4, label="dense mode", color="tab:gray")
    ax.bar(x + 0.2, sparse, 0.4, label="sparse mode", color="tab:green")
    for i, b in enumerate(boards):
        ax.text(i + 0.2, sparse[i], f"{b['speedup']:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("training images / s (estimate)")
    ax.set_title(f"board estimates, batch {cfg['batch_size']}: max(cycles / clock, DDR bytes / bandwidth) per op",
                 fontsize=9)
    ax.legend(fontsize=8)

    if speed:
        ax = axes[2]
        groups = [name for name in speed]
        impls = ["emu_float32", "emu_fixed", "reference", "torch_cpu", "torch_cuda"]
        impls = [i for i in impls if any(speed[g]["seconds"].get(i) for g in groups)]
        width = 0.8 / max(1, len(impls))
        x = np.arange(len(groups))
        for j, impl in enumerate(impls):
            vals = [speed[g]["seconds"].get(impl) or 0 for g in groups]
            ax.bar(x - 0.4 + width * (j + 0.5), vals, width, label=impl.replace("_", " "))
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{g}\nbatch {speed[g]['batch']}" + ("\n(fwd + both bwd passes)" if "layer" in speed[g] else
                                                               "\n(training step)") for g in groups], fontsize=8)
        ax.set_ylabel("seconds (median of repeats, log)")
        ax.set_title("emulator speed vs numpy reference and PyTorch, same run", fontsize=9)
        ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
