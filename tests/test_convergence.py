"""The convergence study (bench/convergence.py): a tiny always-on version, and the issue's goal as a slow test."""
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "convergence.py"


@pytest.fixture(scope="module")
def convergence():
    spec = importlib.util.spec_from_file_location("zskip_bench_convergence", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_study_table_and_plot(convergence, tmp_path):
    out = convergence.study(["float32", "fixed16"], [0.0, 0.9], epochs=1, batch_size=32, lr=0.02, seed=0,
                            limit_train=96, limit_test=32)
    rows = out["rows"]
    assert [(r["precision"], r["prune_rate"]) for r in rows] == [("float32", 0.0), ("float32", 0.9),
                                                                 ("fixed16", 0.0), ("fixed16", 0.9)]
    for plain, pruned in ((rows[0], rows[1]), (rows[2], rows[3])):
        assert plain["grad_sparsity"] == plain["grad_sparsity_before"]
        assert pruned["grad_sparsity"] > pruned["grad_sparsity_before"]
        assert pruned["grad_sparsity"] > plain["grad_sparsity"]
        # the cycles saved by the zeros exceed what the pruning passes cost
        assert pruned["backward_speedup"] > plain["backward_speedup"] > 1
        assert pruned["backward_cycles_per_step"] < plain["backward_cycles_per_step"] < \
            out["dense_backward_cycles_per_step"]
    table = convergence.markdown_table(rows)
    assert len(table.splitlines()) == 2 + len(rows) and "| fixed16 | 0.9 |" in table
    convergence.plot(rows, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 1000


@pytest.mark.slow
def test_fixed16_pruned_ends_within_one_point_of_float32(convergence):
    """The issue's goal: LeNet-5 on mnist5k, 2 epochs, same seed: fixed16 with prune rate 0.9 within 1
    point of float32 (no pruning), with higher gradient sparsity than fixed16 without pruning (about
    3 minutes). Since issue 11's counters the backward speedup is no longer asserted to rise: the
    backward passes are bound by the scan of dy (one 32-bit word per cycle), and the two prune
    passes cost about what the skipped MACs save (README, Performance)."""
    out = convergence.study(["float32"], [0.0], epochs=2, batch_size=64, lr=0.02, seed=0)
    fixed = convergence.study(["fixed16"], [0.0, 0.9], epochs=2, batch_size=64, lr=0.02, seed=0)
    f32, plain, pruned = out["rows"][0], fixed["rows"][0], fixed["rows"][1]
    assert pruned["test_accuracy"] >= f32["test_accuracy"] - 0.01
    assert pruned["grad_sparsity"] > plain["grad_sparsity"]
    assert pruned["backward_speedup"] > 1 and plain["backward_speedup"] > 1
