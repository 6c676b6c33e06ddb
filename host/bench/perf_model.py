"""Analytic cycle model of the sparse-scatter kernels, and PE-array sizing per board.

The kernels count their own cycles (hls/common/counters.h); this module
predicts the same figure from what is known before running: the pass's
shape, how many operand elements are nonzero, how many MACs are live
(``macs_nonzero`` of :func:`zskip.models.reference.conv_macs`) and the PE lanes.
It follows the kernels' combination rule with per-element averages in place
of the per-element counts:

- a scanned plane costs ``max(plane beats, emitted elements x element cost)``,
  the plane arriving BEAT_WORDS elements per beat;
- an element costs ``max(ceil(candidates / 32), MAC iterations)``, the
  encoder and MAC stages being a DATAFLOW pair; MAC iterations are
  ``items / lanes`` plus the expected waste of the last, partial iteration;
- loads and write-backs move BEAT_WORDS words per cycle, accumulator clears
  one word per lane; double-buffered overlap exactly as in the kernels.

Accumulator-hazard stalls are modelled as a floor of ACC_LATENCY cycles
per element (consecutive elements share accumulators) except where the
kernels use partial accumulator banks, which cost one bank sum per plane
(backward-weight) or per image (fully-connected forward) instead; partial
overlaps and the spread of items per element are not modelled. tests/test_perf_model.py states how close the model
comes to the counters.

Pipeline depths are read from hls/common/counters.h, the one place they are
written.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Iterable, Optional

from ... import HLS_DIR
from ...models import reference as R

__all__ = ["ConvPass", "PASSES", "kernel_constants", "predict_cycles", "ideal_cycles", "choose_pe_lanes"]

COUNTERS_H = HLS_DIR / "common" / "counters.h"
#: candidate channel bits the priority encoder takes per cycle (sparse_scatter.h)
ENCODER_BITS = 32
#: the passes a convolution or fully-connected layer runs in training
PASSES = ("fwd", "bwd_data", "bwd_weight")
#: a PE-array size is "saturated" when it predicts at most 5 % more cycles than the largest that fits
SATURATION = 1.05


@lru_cache(maxsize=1)
def kernel_constants() -> Dict[str, int]:
    """``{name: value}`` of the ``static const unsigned`` depths in counters.h."""
    text = COUNTERS_H.read_text()
    found = dict(re.findall(r"static\s+const\s+unsigned\s+(\w+)\s*=\s*(\d+)\s*;", text))
    need = ("LOAD_DEPTH", "SCAN_DEPTH", "MAC_DEPTH", "WB_DEPTH", "ACC_LATENCY", "BEAT_WORDS")
    missing = [n for n in need if n not in found]
    if missing:
        raise ValueError(f"{COUNTERS_H}: constants {missing} not found")
    return {k: int(v) for k, v in found.items()}


@dataclass(frozen=True)
class ConvPass:
    """One pass of a convolution (a fully-connected layer is 1x1 on a 1x1 image).

    x (n, c, h, w), w (k, c, r, s); ``has_mask``: backward-data reads the
    previous layer's ReLU mask.
    """
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int = 1
    s: int = 1
    stride: int = 1
    pad: int = 0
    has_mask: bool = False

    @classmethod
    def linear(cls, n: int, in_features: int, out_features: int, has_mask: bool = False) -> "ConvPass":
        """x (n, in_features) -> y (n, out_features)."""
        return cls(n, in_features, 1, 1, out_features, has_mask=has_mask)

    @property
    def out_hw(self):
        _, _, oh, ow = R.conv_output_shape((self.n, self.c, self.h, self.w), (self.k, self.c, self.r, self.s),
                                           self.stride, self.pad)
        return oh, ow


def _mac_iterations(items: float, lanes: int) -> float:
    """Expected MAC iterations of an element with ``items`` live items on average."""
    if items <= 0:
        return 0.0
    # the last iteration of an element is partly empty: on average (lanes - 1) / 2 lanes idle
    return max(1.0, items / lanes + (lanes - 1) / (2.0 * lanes))


def _beats(words: float) -> int:
    """Cycles of a port loop moving ``words`` float32 words, BEAT_WORDS per beat."""
    beat = kernel_constants()["BEAT_WORDS"]
    return math.ceil(words / beat)


def _banked(words: int, lanes: int) -> bool:
    """The kernels' rule for partial accumulator banks: the accumulators one
    element can reach fit in fewer MAC iterations than the adder latency."""
    return math.ceil(words / lanes) < kernel_constants()["ACC_LATENCY"]


def _bank_sum(words: int, lanes: int) -> int:
    """Cycles of summing the partial banks into ``words`` accumulators (sum_banks)."""
    return kernel_constants()["ACC_LATENCY"] + math.ceil(words / lanes)


def _scatter(planes: int, plane_elems: int, scanned_nonzero: float, candidates_dense: float, items: float,
             lanes: int, shared_targets: bool) -> float:
    """Cycles of ``planes`` operand planes through compaction, encoder and MAC stages.

    shared_targets: consecutive elements update overlapping accumulators
    without partial banks (backward-data and convolution forward: neighbours
    share most targets; backward-weight and fully-connected forward when
    their elements are too wide for banks), so an element's MAC stage takes
    at least ACC_LATENCY cycles.
    """
    scan = _beats(plane_elems)
    if scanned_nonzero <= 0:
        return float(planes * scan)
    total_elems = planes * plane_elems
    per_plane = scanned_nonzero / planes
    enc = math.ceil(candidates_dense / total_elems / ENCODER_BITS)
    mac = _mac_iterations(items / scanned_nonzero, lanes)
    if shared_targets and mac > 0:
        mac = max(mac, kernel_constants()["ACC_LATENCY"])
    element = max(enc, mac)
    return planes * max(scan, per_plane * element)


def predict_cycles(pass_name: str, p: ConvPass, scanned_nonzero: int, macs_nonzero: int, macs_dense: int,
                   lanes: int) -> float:
    """Predicted ``cycles`` counter of one pass over the whole batch.

    scanned_nonzero: emitted elements of the scanned operand (x for ``fwd``,
    dy for the backward passes; every element in dense mode). macs_nonzero:
    live items (the reference's ``macs_nonzero``; ``macs_dense`` in dense mode).
    """
    if pass_name not in PASSES:
        raise ValueError(f"pass_name: must be one of {PASSES}, got {pass_name!r}")
    if lanes < 1:
        raise ValueError(f"lanes: must be >= 1, got {lanes}")
    d = kernel_constants()
    n, c, k, rs = p.n, p.c, p.k, p.r * p.s
    plane = p.h * p.w
    oh, ow = p.out_hw
    oplane = oh * ow
    fill = d["SCAN_DEPTH"] + d["MAC_DEPTH"]
    # per-image averages: the kernels sum per-image maxima, the batch is homogeneous enough
    if pass_name == "fwd":
        banked = oplane == 1 and _banked(k, lanes)
        load = _beats(k * c * rs) + _beats(k) + math.ceil(oplane * k / lanes)
        compute = fill + _scatter(c, plane, scanned_nonzero / n, macs_dense / n, macs_nonzero / n, lanes,
                                  not banked)
        if banked:
            compute += _bank_sum(k, lanes)
        per_image = max(compute, _beats(k * oplane))
        return load + d["LOAD_DEPTH"] + n * per_image + d["WB_DEPTH"]
    if pass_name == "bwd_data":
        compute = fill + _scatter(k, oplane, scanned_nonzero / n, macs_dense / n, macs_nonzero / n, lanes, True)
        load = _beats(k * c * rs) + math.ceil(plane * c / lanes)
        mask_load = math.ceil(c * plane / 32) if p.has_mask else 0
        per_image = max(mask_load, compute, _beats(c * plane))
        return load + d["LOAD_DEPTH"] + n * per_image + d["WB_DEPTH"]
    banked = oplane > 1 and _banked(rs * c, lanes)
    compute = fill + _scatter(k, oplane, scanned_nonzero / n, macs_dense / n, macs_nonzero / n, lanes, not banked)
    if banked:
        compute += k * _bank_sum(rs * c, lanes)
    init = math.ceil(k * rs * c / lanes) + math.ceil(k / lanes)
    per_image = max(_beats(c * plane), compute)
    return init + d["LOAD_DEPTH"] + n * per_image + (_beats(k * c * rs) + _beats(k)) + d["WB_DEPTH"]


def ideal_cycles(macs_nonzero: int, lanes: int) -> float:
    """Cycles of a perfect zero-skipping array: every lane busy with a live MAC every cycle."""
    if lanes < 1:
        raise ValueError(f"lanes: must be >= 1, got {lanes}")
    return macs_nonzero / lanes


def choose_pe_lanes(board, precision: str = "float32", margin: float = 0.8,
                    workload: Optional[Iterable[dict]] = None, candidates: Iterable[int] = (8, 16, 32, 64, 128, 256, 512)):
    """The largest PE-array size whose MAC lanes fit ``margin`` of the board's DSPs.

    board: an :class:`zskip.overlay.boards.Board`. workload: optional list of
    ``{"pass", "shape" (ConvPass), "scanned_nonzero", "macs_nonzero", "macs_dense"}``
    whose predicted cycles and seconds at the board clock are reported for the
    chosen size, with ``saturation_lanes``: the smallest fitting size within
    SATURATION of those cycles (more lanes than that buy almost nothing).
    Returns ``{"pe_lanes", "dsp_used", "dsp_budget", "predicted_cycles",
    "predicted_s", "saturation_lanes"}`` (the last three None without a workload).
    """
    if not 0 < margin <= 1:
        raise ValueError(f"margin: must be in (0, 1], got {margin}")
    per_lane = board.dsp_per_mac(precision)
    budget = margin * board.dsp
    fitting = [p for p in candidates if p * per_lane <= budget]
    if not fitting:
        raise ValueError(f"board {board.name}: not even {min(candidates)} lanes x {per_lane} DSP fit "
                         f"{margin:.0%} of {board.dsp} DSPs")
    lanes = max(fitting)
    cycles = saturation = None
    if workload is not None:
        workload = list(workload)

        def total(p):
            return sum(predict_cycles(w["pass"], w["shape"], w["scanned_nonzero"], w["macs_nonzero"],
                                      w["macs_dense"], p) for w in workload)
        cycles = total(lanes)
        # past this size the scan and encoder stages bound the passes and lanes sit idle
        saturation = min(p for p in fitting if total(p) <= SATURATION * cycles)
    return {"board": board.name, "precision": precision, "pe_lanes": lanes, "dsp_used": lanes * per_lane,
            "dsp_budget": budget, "predicted_cycles": cycles,
            "predicted_s": None if cycles is None else cycles / (board.clock_mhz * 1e6),
            "saturation_lanes": saturation}
