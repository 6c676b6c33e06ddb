"""Analytic cycle model of the sparse-scatter kernels, and PE-array sizing per board.

The kernels count their own cycles (hls/common/counters.h) from their loops'
trip counts through the schedule table (hls/common/schedule.h); this module
predicts the same figure from what is known before running: the pass's
shape, how many operand elements are nonzero, how many MACs are live
(``macs_nonzero`` of :func:`zskip.models.reference.conv_macs`) and the PE
lanes. It applies the same rule with per-element averages in place of the
per-element counts:

- a pipelined loop invocation costs trips x II + depth (II and depth read
  from schedule.h);
- per image, the DATAFLOW region scan -> encoder -> MAC costs its slowest
  stage plus the three fills; loads, mask and x loads and write-backs run
  one after another around it;
- the scan takes every operand word (one per cycle); the encoder one window
  of ENC_BITS candidates per cycle (at least one per element); the MAC stage
  one lane token per cycle, a token holding at most one item per accumulator
  bank and never spanning two windows (so at least one cycle per window). With the channel sets of the backward passes the banks of masked
  items stay empty: tokens are modelled as ``candidates / lanes`` scaled by
  ``min(1, 2 x live fraction)`` (at least ``items / lanes``), which fits the
  measured counters (tests/test_perf_model.py states how closely).

Accumulator-hazard waits are not modelled.

Backward-data's gather form (``ConvPass.gather``, hls/conv_bwd_data/conv_bwd_data_gather.h) has no
region: per image the dy load, then per input channel the mask compaction, one MAC invocation per
stride phase (tap groups x chunks x the phase's live outputs, the live fraction taken uniform over
the outputs, plus the waits of lists shorter than ACC_LATENCY) and the write-back.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Iterable, Optional, Tuple

from ... import HLS_DIR
from ...models import reference as R
from ..ip.program import BEAT_WORDS as BEAT, gather_row_words

__all__ = ["ConvPass", "PASSES", "kernel_constants", "schedule", "predict_cycles", "ideal_cycles",
           "choose_pe_lanes"]

SCHEDULE_H = HLS_DIR / "common" / "schedule.h"
DESCRIPTOR_H = HLS_DIR / "common" / "descriptor.h"
#: the passes a convolution or fully-connected layer runs in training
PASSES = ("fwd", "bwd_data", "bwd_weight")
#: a PE-array size is "saturated" when it predicts at most 5 % more cycles than the largest that fits
SATURATION = 1.05

_CONST = re.compile(r"static\s+const\s+unsigned\s+(\w+)\s*=\s*([^;]+);")
_ROW = re.compile(r"^ZSKIP_SCHEDULE\((\w+),\s*([^,]+),\s*([^)]+)\)", re.MULTILINE)


def _evaluate(expr: str, names: Dict[str, int]) -> int:
    """An integer expression of schedule.h (literals, named constants, + and *)."""
    if not re.fullmatch(r"[\w\s+*()]+", expr):
        raise ValueError(f"{SCHEDULE_H}: cannot read {expr!r}")
    return int(eval(expr, {"__builtins__": {}}, dict(names)))  # only names, digits, + * ( )


@lru_cache(maxsize=1)
def kernel_constants() -> Dict[str, int]:
    """``{name: value}`` of the named constants of schedule.h (and D_WORDS of descriptor.h)."""
    names: Dict[str, int] = {}
    for name, expr in _CONST.findall(SCHEDULE_H.read_text()):
        names[name] = _evaluate(expr, names)
    for need in ("ACC_LATENCY", "SCAN_DEPTH", "ENC_DEPTH", "MAC_DEPTH"):
        if need not in names:
            raise ValueError(f"{SCHEDULE_H}: constant {need} not found")
    m = re.search(r"\bD_WORDS\s*=\s*(\d+)", DESCRIPTOR_H.read_text())
    names["D_WORDS"] = int(m.group(1))
    return names


@lru_cache(maxsize=1)
def schedule() -> Dict[str, Tuple[int, int]]:
    """``{loop label: (II, depth)}``: the rows of schedule.h."""
    names = kernel_constants()
    return {label: (_evaluate(ii, names), _evaluate(depth, names))
            for label, ii, depth in _ROW.findall(SCHEDULE_H.read_text())}


def _loop(label: str, trips: float) -> float:
    """A pipelined loop invocation: trips x II + depth (nothing when it has no trip)."""
    ii, depth = schedule()[label]
    return trips * ii + depth if trips > 0 else 0.0


def enc_bits(lanes: int) -> int:
    """Candidates the encoder takes per cycle (enc_bits in sparse_scatter.h)."""
    return max(64, lanes)


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
    #: backward-data runs the gather form (FLAG_GATHER)
    gather: bool = False

    @classmethod
    def linear(cls, n: int, in_features: int, out_features: int, has_mask: bool = False) -> "ConvPass":
        """x (n, in_features) -> y (n, out_features)."""
        return cls(n, in_features, 1, 1, out_features, has_mask=has_mask)

    @property
    def out_hw(self):
        _, _, oh, ow = R.conv_output_shape((self.n, self.c, self.h, self.w), (self.k, self.c, self.r, self.s),
                                           self.stride, self.pad)
        return oh, ow


def _region(scan_words: float, elements: float, candidates: float, items: float, lanes: int,
            channel_sets: bool, shared: bool = True, token_items: Optional[int] = None) -> float:
    """One image's DATAFLOW region: max(scan, encoder, MAC) + the fills.

    shared: consecutive elements update overlapping accumulators, so an
    element whose tokens take fewer cycles than the adder latency waits for
    the previous one's writes (at least ACC_LATENCY cycles per element).
    token_items: the most items a lane token holds before two of them need one
    accumulator bank (default: lanes)."""
    d = kernel_constants()
    per_token = token_items or lanes
    enc = elements * max(1.0, candidates / max(elements, 1) / enc_bits(lanes) + 0.5) if elements else 0.0
    if items <= 0:
        mac = 0.0
    elif channel_sets:
        live = items / candidates if candidates else 1.0
        mac = max(items / lanes, candidates / lanes * min(1.0, 2.0 * live))
    else:
        mac = items / per_token
    if items > 0:
        # a lane token never spans two encoder windows
        mac = max(mac, min(enc, items))
    if shared and items > 0:
        mac = max(mac, min(elements * d["ACC_LATENCY"], items))
    fills = d["SCAN_DEPTH"] + (d["ENC_DEPTH"] if elements else 0) + (d["MAC_DEPTH"] if items else 0)
    return max(scan_words, enc, mac) + fills


def predict_cycles(pass_name: str, p: ConvPass, scanned_nonzero: int, macs_nonzero: int, macs_dense: int,
                   lanes: int, skip_zeros: Optional[bool] = None) -> float:
    """Predicted ``cycles`` counter of one pass over the whole batch.

    scanned_nonzero: emitted elements of the scanned operand (x for ``fwd``,
    dy for the backward passes; every element in dense mode). macs_nonzero:
    live items (the reference's ``macs_nonzero``; ``macs_dense`` in dense mode).
    skip_zeros: the mode (default: sparse when macs_nonzero < macs_dense).
    """
    if pass_name not in PASSES:
        raise ValueError(f"pass_name: must be one of {PASSES}, got {pass_name!r}")
    if lanes < 1:
        raise ValueError(f"lanes: must be >= 1, got {lanes}")
    d = kernel_constants()
    if skip_zeros is None:
        skip_zeros = macs_nonzero < macs_dense
    n, c, k, rs = p.n, p.c, p.k, p.r * p.s
    plane = p.h * p.w
    oh, ow = p.out_hw
    oplane = oh * ow
    desc = _loop("DESC_FETCH", d["D_WORDS"])
    per = dict(elements=scanned_nonzero / n, items=macs_nonzero / n, lanes=lanes)
    if pass_name == "fwd":
        # candidates of the emitted elements: the dense candidates scaled by the emitted fraction
        cand = macs_dense / n * (scanned_nonzero / (n * c * plane))
        load = (_load_weights(k, c, rs, lanes, False) + _loop("FWD_LOAD_B", k) + _loop("CLEAR_ACC", math.ceil(oplane * k / lanes))
                + _loop("AXIS_IN", p.h) + _loop("AXIS_IN", p.w))
        wb = (_loop("FWD_WB_BEAT", k * oplane // BEAT) if oplane % BEAT == 0 and _beat_in_distinct_banks(k, lanes)
              else _loop("FWD_WB", k * oplane))
        # a tap's k output channels are consecutive accumulator words and the
        # next tap's output position the next k: a token holds whole taps
        # until the banks wrap (k * floor(lanes / k) items when k < lanes)
        token = k * (lanes // k) if k < lanes else lanes
        image = _region(c * plane, candidates=cand, channel_sets=False, token_items=token, **per) + wb
        return desc + load + n * image
    cand = macs_dense / n * (scanned_nonzero / (n * k * oplane))
    # x / dx move a beat per cycle when a beat stays in one channel and its 4
    # positions, c words apart on chip, fall in 4 distinct banks
    wide_x = plane % BEAT == 0 and _beat_in_distinct_banks(c, lanes)
    if pass_name == "bwd_data" and p.gather:
        return desc + _gather_bwd_data(p, macs_nonzero / macs_dense if macs_dense else 1.0, lanes, skip_zeros)
    if pass_name == "bwd_data":
        load = (_load_weights(k, c, rs, lanes, True) + _loop("CLEAR_ACC", math.ceil(plane * c / lanes))
                + _loop("AXIS_OUT", oh) + _loop("AXIS_OUT", ow))
        image = (_region(k * oplane, candidates=cand, channel_sets=skip_zeros and p.has_mask, **per)
                 + (_loop("BWD_DATA_WB_BEAT", c * plane // BEAT) if wide_x else _loop("BWD_DATA_WB", c * plane)) + (_loop("BWD_DATA_MASK", c * plane) if p.has_mask else 0))
        return desc + load + n * image
    lat = d["ACC_LATENCY"]
    copies = lat if oplane > 1 and math.ceil(rs * c / lanes) < lat and lat * k * rs * c <= _max_words(lanes, p) else 1
    load = (_loop("CLEAR_ACC", math.ceil(copies * k * rs * c / lanes)) + _loop("CLEAR_ACC", math.ceil(k / lanes))
            + _loop("AXIS_OUT", oh) + _loop("AXIS_OUT", ow))
    image = (_loop("BWD_W_LOAD_X_BEAT", c * plane // BEAT) if wide_x else _loop("BWD_W_LOAD_X", c * plane)) + _region(k * oplane, candidates=cand, channel_sets=skip_zeros,
                                                       shared=copies == 1 and oplane > 1, **per)
    wb = _loop("BWD_W_WB_SUM" if copies > 1 else "BWD_W_WB", k * c * rs) + _loop("BWD_W_WB_B", k)
    return desc + load + n * image + wb


def _gather_bwd_data(p: ConvPass, live: float, lanes: int, skip_zeros: bool) -> float:
    """The gather form's cycles over the batch; ``live``: the fraction of outputs computed (1 in dense mode)."""
    lat = kernel_constants()["ACC_LATENCY"]
    n, c, k, h, w = p.n, p.c, p.k, p.h, p.w
    oh, ow = p.out_hw
    plane, oplane = h * w, oh * ow
    kg = gather_row_words(k, lanes)
    groups = lanes // kg if k < lanes else 1
    chunks = 1 if k < lanes else kg // lanes
    live = live if skip_zeros else 1.0
    st, pad = p.stride, p.pad

    def phase_taps(ksize, ph):
        return sum(1 for t in range(ksize) if (ph + pad - t) % st == 0)
    mac = 0.0
    for ph in range(st):
        for pw in range(st):
            size = (-(-(h - ph) // st)) * (-(-(w - pw) // st)) if ph < h and pw < w else 0
            taps = phase_taps(p.r, ph) * phase_taps(p.s, pw)
            entries = size * live
            passes = -(-taps // groups) * chunks
            if not taps or entries <= 0:
                continue
            waits = (passes - 1) * max(0.0, lat - entries)
            mac += _loop("GATHER_MAC", passes * entries + waits)
    load = _loop("GATHER_LOAD_W", k * c * p.r * p.s) + _loop("AXIS_IN", h) + _loop("AXIS_IN", w)
    dy = _loop("GATHER_LOAD_DY_BEAT", k * oplane // BEAT) if oplane % BEAT == 0 else _loop("GATHER_LOAD_DY", k * oplane)
    lst = _loop("GATHER_LIST_BEAT", plane // BEAT) if w % BEAT == 0 else _loop("GATHER_LIST", plane)
    wb = _loop("GATHER_WB_BEAT", plane // BEAT) if plane % BEAT == 0 else _loop("GATHER_WB", plane)
    return load + n * (dy + c * (lst + mac + wb))


def _load_weights(k: int, c: int, rs: int, lanes: int, channels_last: bool) -> float:
    """The weight load (load_weights in sparse_scatter.h): a beat per cycle
    where its 4 words land in 4 distinct banks, else a word per cycle."""
    n = k * c * rs
    if (channels_last and rs == 1) or (not channels_last and c * rs % BEAT == 0
                                       and _beat_in_distinct_banks(k, lanes)):
        return _loop("LOAD_W_BEAT", math.ceil(n / BEAT))
    return _loop("LOAD_W", n)


def _beat_in_distinct_banks(stride: int, banks: int) -> bool:
    """Whether a beat's 4 words, ``stride`` words apart in a memory cyclic over
    ``banks`` banks, fall in 4 distinct banks (hls/common/wide_port.h)."""
    return all(j * stride % banks for j in range(1, BEAT))


def _max_words(lanes: int, p: ConvPass) -> float:
    """Words of the engine's weight memory: unknown to the model, taken as large (copies fit)."""
    return float("inf")


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
