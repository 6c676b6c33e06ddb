"""Pre-defined structured sparsity of fully-connected junctions (Dey et al. 2017, sparse edge processing).

A junction of ``n_in`` inputs and ``n_out`` outputs keeps, for density d,
``fan_in = max(1, round(d * n_in))`` edges per output (fixed fan-in); its
``edges = n_out * fan_in`` edges spread evenly over the inputs (fan-out
``edges / n_in`` for every input when it divides, otherwise floor or ceil of
it: the counts differ by at most one). The pattern comes from a seed and is
fixed for the whole training; only the existing edges are stored and
multiplied in all three passes.

**Storage** (:class:`ConnectionPattern`): ``idx`` (n_out, fan_in) int32, the
input of each edge, and the weights ``values`` (n_out, fan_in) float32 in the
same order (output-major, CSR with a fixed row length, so no row pointers).
The flat edge order e = j * fan_in + t is the order the engine processes.

**Schedule and banks** (what "clash-free" means here): P = ``lanes`` lanes
process the flat edge list; the list is cut into *rounds* of n_in
consecutive edges, and each round into *cycles* of P consecutive edges (the
last cycle of a round may be short: its other lanes idle). Input-side
vectors (x, dx) are stored in P banks, bank = input index mod P; output-side
vectors (y, dy) in P banks, bank = output index mod P; the weights in P
banks, bank = edge index mod P. A lane conflict is two lanes of one cycle
that need different words of one bank. The generator guarantees that the
inputs of one cycle lie in P different banks, so forward (read x), backward-
data (accumulate into dx) and weight-gradient (read x) never conflict; the
outputs of one cycle are consecutive (distinct banks, and lanes on the same
output share its word: a broadcast of dy, a reduction into y), and the
weights of one cycle are P consecutive edges (distinct banks).

**Generator**: a permutation pi of the inputs with bank(pi(k)) = beta(k mod P)
for a seeded bijection beta between lane positions and banks (positions
below n_in mod P map to the banks that hold one input more), and a seeded
order of the inputs inside each bank; edge e connects input pi(e mod n_in).
Each round is then one pass over all inputs (fan-out balanced), an output's
fan_in <= n_in edges are consecutive positions of pi (distinct inputs), and
a cycle's positions k have distinct k mod P (distinct banks). Needs
n_in >= P. Convolutions are not covered (their channels go through the
scatter engine's tap sets instead).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence, Tuple, Union

import numpy as np

from . import reference as R

__all__ = ["DEFAULT_LANES", "ConnectionPattern", "connection_pattern", "sparse_linear_forward",
           "sparse_linear_backward_data", "sparse_linear_backward_weight", "sparse_linear_macs"]


def _default_lanes() -> int:
    """ZSKIP_PE_LANES's default in hls/common/config.h (the one place it is written)."""
    from zskip import HLS_DIR
    m = re.search(r"#define ZSKIP_PE_LANES (\d+)", (HLS_DIR / "common" / "config.h").read_text())
    if m is None:
        raise RuntimeError("ZSKIP_PE_LANES not found in hls/common/config.h")
    return int(m.group(1))


#: the engine's default PE lanes (a board may compile others: pass ``lanes``)
DEFAULT_LANES = _default_lanes()

Seed = Union[int, Tuple[int, ...]]


@dataclass(frozen=True, eq=False)
class ConnectionPattern:
    """The edges of a sparse junction (module docstring). ``idx`` (n_out, fan_in) int32, read-only."""
    n_in: int
    n_out: int
    fan_in: int
    lanes: int
    seed: Seed
    idx: np.ndarray

    @property
    def edges(self) -> int:
        """Stored edges (weights): n_out * fan_in."""
        return self.n_out * self.fan_in

    @property
    def density(self) -> float:
        """fan_in / n_in: the realised density."""
        return self.fan_in / self.n_in

    def fan_out(self) -> np.ndarray:
        """(n_in,) int: edges leaving each input."""
        return np.bincount(self.idx.reshape(-1), minlength=self.n_in)

    def mask(self) -> np.ndarray:
        """(n_out, n_in) bool: True where an edge exists."""
        m = np.zeros((self.n_out, self.n_in), bool)
        m[np.arange(self.n_out)[:, None], self.idx] = True
        return m

    def compress(self, w) -> np.ndarray:
        """Values (n_out, fan_in) of the edges of a dense (n_out, n_in) weight matrix."""
        w = np.asarray(w)
        if w.shape != (self.n_out, self.n_in):
            raise ValueError(f"w: expected dense shape {(self.n_out, self.n_in)}, got {w.shape}")
        return np.take_along_axis(w, self.idx, axis=1)

    def expand(self, values) -> np.ndarray:
        """Dense (n_out, n_in) weights: ``values`` (n_out, fan_in) on the edges, zeros elsewhere."""
        values = self.check_values(values)
        w = np.zeros((self.n_out, self.n_in), values.dtype)
        w[np.arange(self.n_out)[:, None], self.idx] = values
        return w

    def check_values(self, values, name: str = "w") -> np.ndarray:
        values = R.check_array(name, values, 2)
        if values.shape != (self.n_out, self.fan_in):
            raise ValueError(f"{name}: a sparse junction stores (outputs, fan_in) = {(self.n_out, self.fan_in)} "
                             f"values, got {values.shape}")
        return values

    def cycles(self) -> np.ndarray:
        """(cycles, 2) int: [start, stop) of the flat edges each cycle of the schedule processes."""
        starts = [(r0 + c, min(r0 + c + self.lanes, r0 + self.n_in, self.edges))
                  for r0 in range(0, self.edges, self.n_in)
                  for c in range(0, min(self.n_in, self.edges - r0), self.lanes)]
        return np.array(starts, dtype=np.int64).reshape(-1, 2)


def _check_density(density) -> float:
    if isinstance(density, bool) or not isinstance(density, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density: must be a number in (0, 1], got {density!r}")
    return float(density)


def connection_pattern(n_in: int, n_out: int, density: float, seed: Seed = 0,
                       lanes: int = DEFAULT_LANES) -> ConnectionPattern:
    """The seeded clash-free pattern of a junction (module docstring); same arguments, same pattern."""
    for name, value in (("n_in", n_in), ("n_out", n_out), ("lanes", lanes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    density = _check_density(density)
    seed = tuple(int(s) for s in seed) if isinstance(seed, (tuple, list)) else int(seed)
    return _pattern(int(n_in), int(n_out), density, seed, int(lanes))


@lru_cache(maxsize=64)
def _pattern(n_in: int, n_out: int, density: float, seed: Seed, p: int) -> ConnectionPattern:
    fan_in = min(n_in, max(1, int(round(density * n_in))))
    if fan_in < n_in and n_in < p:
        raise ValueError(f"density: a sparse junction needs at least lanes = {p} inputs (its {p} lanes read {p} "
                         f"different banks in a cycle), this one has {n_in}")
    rng = np.random.default_rng(seed)
    q, r = divmod(n_in, p)
    # beta: lane position -> bank; positions < r go to the banks with q + 1 inputs (banks < r)
    beta = np.concatenate([rng.permutation(r), r + rng.permutation(p - r)])
    order = [b + p * rng.permutation(q + (b < r)) for b in range(p)]   # inputs of bank b, shuffled
    k = np.arange(n_in)
    pi = np.array([order[beta[kk % p]][kk // p] for kk in k], dtype=np.int32)
    idx = pi[np.arange(n_out * fan_in) % n_in].reshape(n_out, fan_in)
    idx.setflags(write=False)
    return ConnectionPattern(n_in, n_out, fan_in, p, seed, idx)


# ----------------------------------------------------------------------------- the three passes
def _products(mul: str, a, b):
    """a * b elementwise (float32) with the multiplier ``mul``; exact is numpy's product."""
    if mul == "exact":
        return a * b
    from .multipliers import multiply
    return multiply(mul, np.asarray(a, np.float32), np.asarray(b, np.float32))


def sparse_linear_forward(x, values, b, pattern: ConnectionPattern, mul: str = "exact") -> np.ndarray:
    """y (N, n_out) = sum over each output's edges of values * x[:, idx] + b; x (N, n_in), values (n_out, fan_in)."""
    x, b = R.check_array("x", x, 2), R.check_array("b", b, 1)
    values = pattern.check_values(values)
    if x.shape[1] != pattern.n_in:
        raise ValueError(f"x: the junction has {pattern.n_in} inputs, x has {x.shape[1]} features")
    if b.shape != (pattern.n_out,):
        raise ValueError(f"b: expected shape ({pattern.n_out},), got {b.shape}")
    y = _products(mul, x[:, pattern.idx], values[None]).sum(axis=2, dtype=np.float64)   # (N, n_out)
    return y.astype(np.result_type(x, values)) + b


def sparse_linear_backward_data(dy, values, pattern: ConnectionPattern, mul: str = "exact") -> np.ndarray:
    """dx (N, n_in): each edge adds values * dy[:, j] into dx[:, idx]; dy (N, n_out)."""
    dy = R.check_array("dy", dy, 2)
    values = pattern.check_values(values)
    if dy.shape[1] != pattern.n_out:
        raise ValueError(f"dy: the junction has {pattern.n_out} outputs, dy has {dy.shape[1]}")
    contrib = _products(mul, dy[:, :, None], values[None]).reshape(dy.shape[0], -1)   # (N, edges)
    dx = np.zeros((dy.shape[0], pattern.n_in), np.float64)
    np.add.at(dx, (slice(None), pattern.idx.reshape(-1)), contrib)
    return dx.astype(np.result_type(dy, values))


def sparse_linear_backward_weight(x, dy, pattern: ConnectionPattern, mul: str = "exact"):
    """(dvalues (n_out, fan_in), db (n_out,)): dvalues[j, t] = sum over n of dy[n, j] x[n, idx[j, t]]."""
    x, dy = R.check_array("x", x, 2), R.check_array("dy", dy, 2)
    if x.shape != (dy.shape[0], pattern.n_in) or dy.shape[1] != pattern.n_out:
        raise ValueError(f"x/dy: expected (N, {pattern.n_in}) and (N, {pattern.n_out}), got {x.shape} and {dy.shape}")
    dv = _products(mul, dy[:, :, None], x[:, pattern.idx]).sum(axis=0, dtype=np.float64)
    return dv.astype(np.result_type(x, dy)), dy.sum(axis=0)


def sparse_linear_macs(x, dy, pattern: ConnectionPattern, out_mask=None) -> dict:
    """MAC counts of a sparse junction's passes (as ``reference.linear_macs``).

    ``macs_dense``: N * n_out * n_in, the MACs of the dense junction (what a
    sparsity-agnostic engine runs for the layer; the engine's ``macs_dense``
    counter has the same definition), so ``macs_dense / macs_nonzero`` is the
    gain of the pattern and of zero-skipping together. ``macs_nonzero`` runs
    over the stored edges only: forward skips edges whose input is zero,
    backward-data edges with a zero dy or a masked input, backward-weight
    edges with a zero operand.
    """
    nz_x = np.asarray(x) != 0                         # (N, n_in)
    nz_dy = np.asarray(dy) != 0                       # (N, n_out)
    n = nz_x.shape[0]
    live = np.ones_like(nz_x) if out_mask is None else np.asarray(out_mask, bool)
    edge_x = nz_x[:, pattern.idx]                     # (N, n_out, fan_in)
    d = int(n * pattern.n_out * pattern.n_in)
    return {"fwd": {"macs_dense": d, "macs_nonzero": int(edge_x.sum())},
            "bwd_data": {"macs_dense": d, "macs_nonzero": int((nz_dy[:, :, None] & live[:, pattern.idx]).sum())},
            "bwd_weight": {"macs_dense": d, "macs_nonzero": int((nz_dy[:, :, None] & edge_x).sum())}}
