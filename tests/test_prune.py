"""Stochastic gradient pruning: the kernel's C-sim testbench against the numpy
reference (bit for bit), and the statistics of the rule itself."""
import shutil
import subprocess

import numpy as np
import pytest

from zskip import HLS_DIR
from zskip.models import reference as R

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


@pytest.fixture(scope="module")
def prune_tb(tmp_path_factory):
    exe = tmp_path_factory.mktemp("prune_tb") / "prune_grad_tb"
    subprocess.run(["g++", "-O2", "-std=c++14", "-o", str(exe), str(HLS_DIR / "prune_grad" / "prune_grad_tb.cpp")],
                   check=True, capture_output=True)
    return exe


def _run_tb(exe, tmp_path, g, expected, tau, tau_scale, seed, expected_tau):
    g.astype(np.float32).tofile(tmp_path / "g.bin")
    expected.astype(np.float32).tofile(tmp_path / "e.bin")
    return subprocess.run([str(exe), str(tmp_path / "g.bin"), str(tmp_path / "e.bin"), repr(float(tau)),
                           repr(float(tau_scale)), str(seed), repr(float(expected_tau))],
                          capture_output=True, text=True)


def _gradient(rng, n, zero_fraction=0.4, scale=1e-2):
    g = (rng.standard_normal(n) * scale).astype(np.float32)
    g[rng.random(n) < zero_fraction] = 0
    return g


@pytest.mark.parametrize("n,rate,seed", [(1, 0.5, 0), (255, 0.5, 1), (257, 0.8, 2), (5000, 0.9, 3),
                                         (4 * 256 * 3 + 17, 0.9, 2**32 - 1)])
def test_testbench_matches_reference_with_tau_from_statistics(prune_tb, tmp_path, rng, n, rate, seed):
    g = _gradient(rng, n)
    tau = R.prune_threshold(g, rate)
    expected = R.prune_gradients(g, tau, seed)
    res = _run_tb(prune_tb, tmp_path, g, expected, 0.0, R.prune_tau_scale(rate), seed, tau)
    assert res.returncode == 0, res.stderr


def test_testbench_matches_reference_with_given_tau(prune_tb, tmp_path, rng):
    g = _gradient(rng, 3000)
    expected = R.prune_gradients(g, 0.004, 99)
    res = _run_tb(prune_tb, tmp_path, g, expected, 0.004, 0.0, 99, np.float32(0.004))
    assert res.returncode == 0, res.stderr


def test_testbench_fails_on_a_wrong_expected_value(prune_tb, tmp_path, rng):
    g = _gradient(rng, 1000)
    expected = R.prune_gradients(g, 0.01, 5)
    i = int(np.flatnonzero((expected != 0) & (np.abs(g) < 0.01))[0])
    expected[i] = 0.0                                   # a promoted value the kernel keeps
    res = _run_tb(prune_tb, tmp_path, g, expected, 0.01, 0.0, 5, np.float32(0.01))
    assert res.returncode == 1
    assert f"[{i}]" in res.stderr


def test_testbench_fails_with_another_seed(prune_tb, tmp_path, rng):
    g = _gradient(rng, 1000)
    res = _run_tb(prune_tb, tmp_path, g, R.prune_gradients(g, 0.01, 5), 0.01, 0.0, 6, np.float32(0.01))
    assert res.returncode == 1


def test_values_are_kept_zeroed_or_promoted_to_tau(rng):
    g = _gradient(rng, 20000)
    tau = np.float32(0.008)
    p = R.prune_gradients(g, tau, 11)
    big = np.abs(g) >= tau
    assert np.array_equal(p[big], g[big])
    small = ~big
    assert np.all((p[small] == 0) | (np.abs(p[small]) == tau))
    assert np.all(np.sign(p[small][p[small] != 0]) == np.sign(g[small][p[small] != 0]))
    assert np.all(p[g == 0] == 0)


def test_pruning_is_unbiased_within_a_derived_bound(rng):
    """Each pruned value is tau*sign(g) w.p. |g|/tau: mean g, variance tau|g| - g^2.

    Over K seeds the mean of all M pruned values has variance
    sum_i (tau |g_i| - g_i^2) / (M^2 K); it must lie within 5 standard
    deviations of the mean of g (a false failure has probability < 1e-6).
    A rule that zeroes every small value (biased) must fall outside the bound.
    """
    m, k = 2000, 200
    tau = np.float32(0.01)
    g = (rng.uniform(-1, 1, m) * 0.02).astype(np.float32)      # about half below tau
    small = np.abs(g) < tau
    var = np.sum(np.where(small, tau * np.abs(g) - g.astype(np.float64) ** 2, 0)) / (m * m * k)
    bound = 5 * np.sqrt(var)
    means = [R.prune_gradients(g, tau, seed).astype(np.float64).mean() for seed in range(k)]
    assert abs(np.mean(means) - g.mean()) <= bound
    biased = np.where(small, 0, g).astype(np.float64).mean()
    assert abs(biased - g.mean()) > bound


def test_threshold_reaches_the_target_rate_on_gaussian_gradients(rng):
    g = (rng.standard_normal(200000) * 3e-3).astype(np.float32)
    for rate in (0.5, 0.8, 0.9):
        tau = R.prune_threshold(g, rate)
        assert abs(np.mean(np.abs(g) < tau) - rate) < 0.01


def test_bad_arguments_name_themselves(rng):
    with pytest.raises(ValueError, match="rate"):
        R.prune_tau_scale(1.0)
    with pytest.raises(ValueError, match="tau"):
        R.prune_gradients(np.ones(4, np.float32), -1.0, 0)
    with pytest.raises(ValueError, match="g"):
        R.prune_gradients(np.array([np.nan], np.float32), 0.1, 0)
