"""The command line the LeNet-5 / mnist5k studies share (approx.py, structured.py).

``training_arguments`` adds the training and output options; ``run_study``
times the study, writes its JSON report and, when asked, its markdown table
and plot, and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def training_arguments(parser: argparse.ArgumentParser, report: str, plot_help: str) -> None:
    """--epochs, --batch-size, --lr, --seed, --limit-train/-test, --report (default ``report``), --table, --plot."""
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--report", default=report)
    parser.add_argument("--table", default=None, help="also write the markdown table here")
    parser.add_argument("--plot", default=None, help=plot_help)


def run_study(args, study, markdown_table, plot) -> int:
    """``study(log)`` -> a dict with ``rows``; report, table and plot as ``args`` asks. Returns 0."""
    t0 = time.perf_counter()
    out = study(lambda s: print(s, file=sys.stderr, flush=True))
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
