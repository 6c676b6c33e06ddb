"""The accelerator driver: :class:`Accelerator` runs the ``zskip_top`` IP on any Device.

Like FINN's driver, a run is pack -> flush -> start -> wait -> invalidate ->
unpack, each step timed in :attr:`Accelerator.last_timings` (seconds).
Every :class:`zskip.models.ops.Ops` method is a one-descriptor program; a
whole training step can be one program through :meth:`Accelerator.run_program`:

    from zskip.host.ip.program import ArenaLayout, encode
    acc = Accelerator.emulated()
    layout = ArenaLayout()
    layout.alloc("act", "x", x.size) ...                # word offsets of every tensor
    bufs = acc.allocate_arenas(layout, n_desc=3)        # program, act, wgt, grad, bits, vel, stats
    layout.put(bufs, "x", x)                            # pack inputs (host side)
    program = [encode("CONV_FWD", ...), ...]
    records = acc.run_program(program, bufs)            # flush, run, invalidate; one stats dict each
    y = layout.get(bufs, "y", y_shape)                  # unpack

Buffers keep their contents between runs, so weights and optimiser state can
stay in device memory (pass ``flush=``/``invalidate=`` to move only some arenas).
"""
from __future__ import annotations

import time
import weakref
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from ...models import reference as R
from ..devices.device import DeviceError
from ..ip.program import (ARENA_DTYPES, ARENAS, D_WORDS, OPCODES, S_WORDS, ZSKIP_VERSION, ArenaLayout, Limits,
                      bit_words, bwd_data_flags, check_bwd_data_form, decode_stats, encode, error_message,
                      gather_capacity_error)

_COUNTERS = ("cycles", "macs_executed", "macs_dense", "load_iters", "scan_iters", "enc_iters",
             "mac_iters", "mac_stalls", "wb_iters", "saturations", "nonfinite")


class Accelerator:
    """The Ops interface on a :class:`zskip.host.devices.device.Device` running ``zskip_top``.

    ``skip_zeros`` selects sparse mode (True) or the dense baseline (False);
    ``limits`` are the compiled maxima (default: the device's ``limits``
    attribute, else config.h defaults). Refuses a device whose version
    register differs from ZSKIP_VERSION. ``bwd_data_form`` ("auto", "scatter" or
    "gather", :data:`~zskip.host.ip.program.BWD_DATA_FORMS`): the form of the convolution
    backward-data kernel; "auto" runs the gather form where dy is an array this
    accelerator's ``batchnorm_backward`` returned and an ``out_mask`` is given.
    """

    def __init__(self, device, skip_zeros: bool = True, limits: Optional[Limits] = None,
                 bwd_data_form: str = "auto"):
        self.bwd_data_form = check_bwd_data_form(bwd_data_form)
        version = device.version()
        if version != ZSKIP_VERSION:
            raise DeviceError(f"{getattr(device, 'name', 'device')}: version register is 0x{version:08x}, "
                              f"this driver needs 0x{ZSKIP_VERSION:08x} (rebuild the bitstream or update zskip)")
        self.device = device
        self.skip_zeros = bool(skip_zeros)
        self.limits = limits or getattr(device, "limits", None) or Limits.defaults()
        self.name = getattr(device, "name", "device")
        #: counters of the last op (or summed over the last program)
        self.last_stats: Dict[str, int] = {k: 0 for k in _COUNTERS[:3]}
        #: one stats dict per descriptor of the last program
        self.last_program_stats: List[dict] = []
        #: seconds of each step of the last run: pack, flush, run, invalidate, unpack
        self.last_timings: Dict[str, float] = {}
        self._bufs: Dict[str, object] = {}
        # the dx arrays batchnorm_backward returned (id -> weak reference): a convolution's dy
        # that is one of them is dense, which the auto backward-data form asks
        self._batchnorm_grads: Dict[int, weakref.ref] = {}

    # ------------------------------------------------------------------ factories
    @classmethod
    def emulated(cls, precision: str = "float32", skip_zeros: bool = True, board: Optional[str] = None,
                 limits: Optional[Limits] = None, bwd_data_form: str = "auto") -> "Accelerator":
        """The HLS sources compiled by g++ (C simulation); ``board`` picks PE lanes and maxima.

        ``precision``: a spec of :mod:`zskip.host.ip.precision` ("float32", "fixed16",
        "ap_fixed<16,6>" or class=type pairs for act, wgt, grad, acc, opt).
        """
        from ..devices.emu import EmuDevice
        if limits is None and board is not None:
            from ..ip.program import board_limits  # the one reading of boards.ini [hls_macros]
            limits = board_limits(board)
        check_bwd_data_form(bwd_data_form)     # before compiling
        return cls(EmuDevice(precision=precision, limits=limits), skip_zeros=skip_zeros, bwd_data_form=bwd_data_form)

    @classmethod
    def pynq(cls, bitfile: str, skip_zeros: bool = True, bwd_data_form: str = "auto", **kwargs) -> "Accelerator":
        """The IP on a PYNQ board (zskip.host.devices.pynq_device)."""
        from ..devices.pynq_device import PynqDevice
        check_bwd_data_form(bwd_data_form)
        return cls(PynqDevice(bitfile, **kwargs), skip_zeros=skip_zeros, bwd_data_form=bwd_data_form)

    @classmethod
    def remote(cls, host: str, skip_zeros: bool = True, bwd_data_form: str = "auto", **kwargs) -> "Accelerator":
        """The IP on a board reached through PYNQ RemoteDevice (zskip.host.devices.pynq_device)."""
        from ..devices.pynq_device import open_remote_device
        check_bwd_data_form(bwd_data_form)
        return cls(open_remote_device(host, **kwargs), skip_zeros=skip_zeros, bwd_data_form=bwd_data_form)

    # ------------------------------------------------------------------ programs
    def allocate_arenas(self, layout: ArenaLayout, n_desc: int) -> Dict[str, object]:
        """Device buffers for ``layout`` and a program of ``n_desc`` descriptors.

        Keys: ``program`` ((n_desc * D_WORDS,) uint32), the arenas of
        :data:`~zskip.host.ip.program.ARENAS` (flat, sized ``layout.size(arena)``)
        and ``stats`` ((n_desc * S_WORDS,) uint32).
        """
        bufs = {"program": self.device.allocate((max(1, n_desc) * D_WORDS,), np.uint32)}
        for arena in ARENAS:
            bufs[arena] = self.device.allocate((layout.size(arena),), ARENA_DTYPES[arena])
        bufs["stats"] = self.device.allocate((max(1, n_desc) * S_WORDS,), np.uint32)
        return bufs

    def run_program(self, program: Sequence[np.ndarray], buffers: Mapping[str, object],
                    flush: Iterable[str] = ARENAS, invalidate: Iterable[str] = ARENAS,
                    timeout_s: float = 30.0) -> List[dict]:
        """Run ``program`` (descriptors from :func:`~zskip.host.ip.program.encode`) on ``buffers``.

        Writes the program, clears the stats, flushes ``program``, ``stats``
        and the arenas in ``flush``, starts the IP, invalidates ``stats`` and
        the arenas in ``invalidate``. Returns one decoded stats record per
        descriptor; raises DeviceError on a descriptor the IP refused.
        """
        t0 = time.perf_counter()
        words = np.concatenate([np.asarray(d, dtype=np.uint32).reshape(-1) for d in program]) if len(program) \
            else np.zeros(0, np.uint32)
        n_desc = words.size // D_WORDS
        if words.size != n_desc * D_WORDS:
            raise ValueError(f"program: every descriptor must have {D_WORDS} words")
        prog, stats = buffers["program"], buffers["stats"]
        if prog.size < words.size or stats.size < n_desc * S_WORDS:
            raise ValueError(f"buffers: program/stats hold {prog.size // D_WORDS}/{stats.size // S_WORDS} "
                             f"descriptors, the program has {n_desc}")
        prog[:words.size] = words
        stats[:] = 0
        t1 = time.perf_counter()
        for name in ("program", "stats", *flush):
            buffers[name].sync_to_device()
        t2 = time.perf_counter()
        cycles = self.device.run(buffers, n_desc, timeout_s=timeout_s)
        t3 = time.perf_counter()
        for name in ("stats", *invalidate):
            buffers[name].sync_from_device()
        t4 = time.perf_counter()
        records = [decode_stats(stats[i * S_WORDS:(i + 1) * S_WORDS]) for i in range(n_desc)]
        for i, rec in enumerate(records):
            if rec["error"] != "NONE":
                raise DeviceError(f"{self.name}: descriptor {i} (opcode {rec['opcode']}) refused by the IP: "
                                  f"{error_message(rec['error'])}")
        self.last_program_stats = records
        self.last_stats = {k: sum(r[k] for r in records) for k in _COUNTERS}
        self.last_stats["cycles_register"] = int(cycles)
        # a board's hardware timer beside the counters (devices without one have no attribute or None)
        measured = getattr(self.device, "last_measured_cycles", None)
        if measured is not None:
            self.last_stats["measured_cycles"] = int(measured)
        if records and records[-1]["opcode"] == OPCODES["PRUNE_GRAD"]:
            self.last_stats["tau"] = records[-1]["tau"]
        self.last_timings = {"pack": t1 - t0, "flush": t2 - t1, "run": t3 - t2, "invalidate": t4 - t3}
        return records

    # ------------------------------------------------------------------ one-op plumbing
    def _buffers(self, layout: ArenaLayout) -> Dict[str, object]:
        """Scratch buffers for one-descriptor ops, grown when a call needs more."""
        need = {"program": D_WORDS, "stats": S_WORDS, **{a: layout.size(a) for a in ARENAS}}
        dtypes = {"program": np.uint32, "stats": np.uint32, **ARENA_DTYPES}
        for name, size in need.items():
            buf = self._bufs.get(name)
            if buf is None or buf.size < size:
                if buf is not None:
                    buf.freebuffer()
                self._bufs[name] = self.device.allocate((size,), dtypes[name])
        return self._bufs

    def _run_one(self, layout: ArenaLayout, inputs: Mapping[str, np.ndarray], desc: np.ndarray,
                 outputs: Mapping[str, tuple]) -> Dict[str, np.ndarray]:
        """Pack ``inputs`` (name -> array), run ``desc``, unpack ``outputs`` (name -> (shape, kind))."""
        t0 = time.perf_counter()
        bufs = self._buffers(layout)
        for name, value in inputs.items():
            layout.put(bufs, name, value)
        pack = time.perf_counter() - t0
        self.run_program([desc], bufs, flush=sorted({layout.entries[n][0] for n in inputs}),
                         invalidate=sorted({layout.entries[n][0] for n in outputs}))
        t1 = time.perf_counter()
        out = {name: layout.get(bufs, name, shape, kind) for name, (shape, kind) in outputs.items()}
        self.last_timings["pack"] += pack
        self.last_timings["unpack"] = time.perf_counter() - t1
        return out

    def _flags(self, relu=False, has_mask=False):
        flags = ["SKIP_ZEROS"] if self.skip_zeros else []
        if relu:
            flags.append("RELU")
        if has_mask:
            flags.append("HAS_OUT_MASK")
        return flags

    # ------------------------------------------------------------------ validation
    def _tensor(self, name, a, ndim):
        a = R.check_array(name, a, ndim)
        return np.ascontiguousarray(a, dtype=np.float32)

    def _check_conv(self, x_shape, w_shape, stride, pad):
        lim = self.limits
        n, c, h, w = x_shape
        k, _, r, s = w_shape
        for name, value, hi in (("x channels", c, lim.max_ch), ("w output channels", k, lim.max_ch),
                                ("x height", h, lim.max_dim), ("x width", w, lim.max_dim),
                                ("w kernel rows", r, lim.max_ksize), ("w kernel columns", s, lim.max_ksize)):
            if not 1 <= value <= hi:
                raise ValueError(f"{name}: must be in [1, {hi}] (compiled maximum), got {value}")
        if stride not in (1, 2):
            raise ValueError(f"stride: must be 1 or 2, got {stride!r}")
        if not isinstance(pad, (int, np.integer)) or not 0 <= pad <= min(r, s) - 1:
            raise ValueError(f"pad: must be an integer in [0, {min(r, s) - 1}] (kernel {r}x{s}), got {pad!r}")
        return R.conv_output_shape(x_shape, w_shape, stride, pad)

    def _check_features(self, name, value):
        if not 1 <= value <= self.limits.max_features:
            raise ValueError(f"{name}: must be in [1, {self.limits.max_features}] (compiled maximum), got {value}")

    def _mask(self, name, mask, shape):
        mask = np.asarray(mask)
        if mask.shape != tuple(shape):
            raise ValueError(f"{name}: expected shape {tuple(shape)}, got {mask.shape}")
        if mask.dtype != bool:
            raise TypeError(f"{name}: expected a bool array, got dtype {mask.dtype}")
        return mask

    def _conv_desc(self, opcode, x_shape, w_shape, stride, pad, flags, **offsets):
        n, c, h, w = x_shape
        k, _, r, s = w_shape
        return encode(opcode, flags=flags, limits=self.limits, n=n, c=c, h=h, w=w, k=k, r=r, s=s,
                      stride=stride, pad=pad, **offsets)

    # ------------------------------------------------------------------ convolution
    def conv_forward(self, x, w, b, stride: int = 1, pad: int = 0, relu: bool = True):
        """(y (N, K, OH, OW), mask bool or None) for x (N, C, H, W), w (K, C, R, S), b (K,)."""
        x, w, b = self._tensor("x", x, 4), self._tensor("w", w, 4), self._tensor("b", b, 1)
        y_shape = self._check_conv(x.shape, w.shape, stride, pad)
        if b.shape != (w.shape[0],):
            raise ValueError(f"b: expected shape ({w.shape[0]},), got {b.shape}")
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), wgt=lay.alloc("wgt", "w", w.size),
                   bias=lay.alloc("wgt", "b", b.size), y=lay.alloc("act", "y", int(np.prod(y_shape))),
                   mask_out=lay.alloc("bits", "mask", bit_words(np.prod(y_shape))))
        desc = self._conv_desc("CONV_FWD", x.shape, w.shape, stride, pad, self._flags(relu=relu), **off)
        outputs = {"y": (y_shape, "f32")}
        if relu:
            outputs["mask"] = (y_shape, "bits")
        out = self._run_one(lay, {"x": x, "w": w, "b": b}, desc, outputs)
        return out["y"], out.get("mask")

    def conv_backward_data(self, dy, w, x_shape, stride: int = 1, pad: int = 0, out_mask=None,
                           form: Optional[str] = None):
        """dx (N, C, H, W) from dy (N, K, OH, OW), w (K, C, R, S); zero where out_mask is False.

        ``form``: "scatter", "gather" or "auto" (default: the accelerator's ``bwd_data_form``).
        """
        form = self.bwd_data_form if form is None else check_bwd_data_form(form)
        ref = self._batchnorm_grads.get(id(dy))
        from_batchnorm = ref is not None and ref() is dy
        dy, w = self._tensor("dy", dy, 4), self._tensor("w", w, 4)
        x_shape = tuple(int(v) for v in x_shape)
        y_shape = self._check_conv(x_shape, w.shape, stride, pad)
        if dy.shape != y_shape:
            raise ValueError(f"dy: expected shape {y_shape}, got {dy.shape}")
        size = int(np.prod(x_shape))
        lay = ArenaLayout()
        off = dict(dy=lay.alloc("grad", "dy", dy.size), wgt=lay.alloc("wgt", "w", w.size),
                   dx=lay.alloc("grad", "dx", size), mask_in=lay.alloc("bits", "mask", bit_words(size)))
        inputs = {"dy": dy, "w": w}
        if out_mask is not None:
            inputs["mask"] = self._mask("out_mask", out_mask, x_shape)
        flags = self._flags(has_mask=out_mask is not None) + bwd_data_flags(
            form, out_mask is not None, from_batchnorm, gather_capacity_error(self.limits, x_shape, w.shape, stride, pad))
        desc = self._conv_desc("CONV_BWD_DATA", x_shape, w.shape, stride, pad, flags, **off)
        return self._run_one(lay, inputs, desc, {"dx": (x_shape, "f32")})["dx"]

    def conv_backward_weight(self, x, dy, w_shape, stride: int = 1, pad: int = 0):
        """(dw (K, C, R, S), db (K,)) from x (N, C, H, W) and dy (N, K, OH, OW)."""
        x, dy = self._tensor("x", x, 4), self._tensor("dy", dy, 4)
        w_shape = tuple(int(v) for v in w_shape)
        y_shape = self._check_conv(x.shape, w_shape, stride, pad)
        if dy.shape != y_shape:
            raise ValueError(f"dy: expected shape {y_shape}, got {dy.shape}")
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), dy=lay.alloc("grad", "dy", dy.size),
                   dw=lay.alloc("grad", "dw", int(np.prod(w_shape))), db=lay.alloc("grad", "db", w_shape[0]))
        desc = self._conv_desc("CONV_BWD_WEIGHT", x.shape, w_shape, stride, pad, self._flags(), **off)
        out = self._run_one(lay, {"x": x, "dy": dy}, desc, {"dw": (w_shape, "f32"), "db": ((w_shape[0],), "f32")})
        return out["dw"], out["db"]

    # ------------------------------------------------------------------ fully connected
    def _fc_desc(self, opcode, n, i, j, flags, **offsets):
        return encode(opcode, flags=flags, limits=self.limits, n=n, c=i, k=j, h=1, w=1, r=1, s=1, stride=1,
                      pad=0, **offsets)

    def linear_forward(self, x, w, b, relu: bool = True):
        """(y (N, J), mask or None) for x (N, I), w (J, I), b (J,)."""
        x, w, b = self._tensor("x", x, 2), self._tensor("w", w, 2), self._tensor("b", b, 1)
        n, i = x.shape
        j = w.shape[0]
        if w.shape[1] != i:
            raise ValueError(f"w: has {w.shape[1]} inputs but x has {i} features")
        if b.shape != (j,):
            raise ValueError(f"b: expected shape ({j},), got {b.shape}")
        self._check_features("x features", i)
        self._check_features("w outputs", j)
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), wgt=lay.alloc("wgt", "w", w.size),
                   bias=lay.alloc("wgt", "b", j), y=lay.alloc("act", "y", n * j),
                   mask_out=lay.alloc("bits", "mask", bit_words(n * j)))
        desc = self._fc_desc("FC_FWD", n, i, j, self._flags(relu=relu), **off)
        outputs = {"y": ((n, j), "f32")}
        if relu:
            outputs["mask"] = ((n, j), "bits")
        out = self._run_one(lay, {"x": x, "w": w, "b": b}, desc, outputs)
        return out["y"], out.get("mask")

    def linear_backward_data(self, dy, w, out_mask=None):
        """dx (N, I) = dy (N, J) @ w (J, I), zero where out_mask (N, I) is False."""
        dy, w = self._tensor("dy", dy, 2), self._tensor("w", w, 2)
        n, j = dy.shape
        if w.shape[0] != j:
            raise ValueError(f"w: has {w.shape[0]} outputs but dy has {j}")
        i = w.shape[1]
        self._check_features("w inputs", i)
        self._check_features("dy features", j)
        lay = ArenaLayout()
        off = dict(dy=lay.alloc("grad", "dy", dy.size), wgt=lay.alloc("wgt", "w", w.size),
                   dx=lay.alloc("grad", "dx", n * i), mask_in=lay.alloc("bits", "mask", bit_words(n * i)))
        inputs = {"dy": dy, "w": w}
        if out_mask is not None:
            inputs["mask"] = self._mask("out_mask", out_mask, (n, i))
        desc = self._fc_desc("FC_BWD_DATA", n, i, j, self._flags(has_mask=out_mask is not None), **off)
        return self._run_one(lay, inputs, desc, {"dx": ((n, i), "f32")})["dx"]

    def linear_backward_weight(self, x, dy):
        """(dw (J, I), db (J,)) from x (N, I) and dy (N, J)."""
        x, dy = self._tensor("x", x, 2), self._tensor("dy", dy, 2)
        if dy.shape[0] != x.shape[0]:
            raise ValueError(f"dy: has batch {dy.shape[0]} but x has {x.shape[0]}")
        n, i = x.shape
        j = dy.shape[1]
        self._check_features("x features", i)
        self._check_features("dy features", j)
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), dy=lay.alloc("grad", "dy", dy.size),
                   dw=lay.alloc("grad", "dw", j * i), db=lay.alloc("grad", "db", j))
        desc = self._fc_desc("FC_BWD_WEIGHT", n, i, j, self._flags(), **off)
        out = self._run_one(lay, {"x": x, "dy": dy}, desc, {"dw": ((j, i), "f32"), "db": ((j,), "f32")})
        return out["dw"], out["db"]

    # ------------------------------------------------------------------ pre-defined sparse junctions
    def _sparse_fields(self, pattern, n):
        """Descriptor fields of a sparse junction; refuses a pattern the engine cannot run."""
        i, j, fan_in = pattern.n_in, pattern.n_out, pattern.fan_in
        if pattern.lanes != self.limits.pe_lanes:
            raise ValueError(f"pattern: made clash-free for {pattern.lanes} lanes, this accelerator has "
                             f"pe_lanes={self.limits.pe_lanes} (build the model with lanes={self.limits.pe_lanes})")
        self._check_features("pattern inputs", i)
        self._check_features("pattern outputs", j)
        if pattern.edges > self.limits.max_edges:
            raise ValueError(f"pattern: {pattern.edges} stored edges, more than the compiled maximum "
                             f"{self.limits.max_edges} (max_features^2 / SPARSE_EDGE_DIVISOR of config.h)")
        return dict(n=n, c=i, k=j, h=1, w=1, r=1, s=1, stride=1, pad=0, fan_in=fan_in)

    def sparse_linear_forward(self, x, w, b, pattern, relu: bool = True):
        """(y (N, J), mask or None) for x (N, I), compressed w (J, fan_in), b (J,) of ``pattern``."""
        x, b = self._tensor("x", x, 2), self._tensor("b", b, 1)
        w = np.ascontiguousarray(pattern.check_values(w), dtype=np.float32)
        n = x.shape[0]
        if x.shape[1] != pattern.n_in:
            raise ValueError(f"x: the junction has {pattern.n_in} inputs, x has {x.shape[1]} features")
        if b.shape != (pattern.n_out,):
            raise ValueError(f"b: expected shape ({pattern.n_out},), got {b.shape}")
        fields = self._sparse_fields(pattern, n)
        j = pattern.n_out
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), wgt=lay.alloc("wgt", "w", w.size),
                   pattern=lay.alloc("bits", "pattern", w.size), bias=lay.alloc("wgt", "b", j),
                   y=lay.alloc("act", "y", n * j), mask_out=lay.alloc("bits", "mask", bit_words(n * j)))
        desc = encode("SPARSE_FC_FWD", flags=self._flags(relu=relu), limits=self.limits, **fields, **off)
        outputs = {"y": ((n, j), "f32")}
        if relu:
            outputs["mask"] = ((n, j), "bits")
        out = self._run_one(lay, {"x": x, "w": w, "b": b, "pattern": pattern.idx.astype(np.uint32)}, desc, outputs)
        return out["y"], out.get("mask")

    def sparse_linear_backward_data(self, dy, w, pattern, out_mask=None):
        """dx (N, I): each stored edge adds w * dy[:, j] into dx[:, idx]; zero where out_mask (N, I) is False."""
        dy = self._tensor("dy", dy, 2)
        w = np.ascontiguousarray(pattern.check_values(w), dtype=np.float32)
        n = dy.shape[0]
        if dy.shape[1] != pattern.n_out:
            raise ValueError(f"dy: the junction has {pattern.n_out} outputs, dy has {dy.shape[1]}")
        fields = self._sparse_fields(pattern, n)
        i = pattern.n_in
        lay = ArenaLayout()
        off = dict(dy=lay.alloc("grad", "dy", dy.size), wgt=lay.alloc("wgt", "w", w.size),
                   pattern=lay.alloc("bits", "pattern", w.size), dx=lay.alloc("grad", "dx", n * i),
                   mask_in=lay.alloc("bits", "mask", bit_words(n * i)))
        inputs = {"dy": dy, "w": w, "pattern": pattern.idx.astype(np.uint32)}
        if out_mask is not None:
            inputs["mask"] = self._mask("out_mask", out_mask, (n, i))
        desc = encode("SPARSE_FC_BWD_DATA", flags=self._flags(has_mask=out_mask is not None), limits=self.limits,
                      **fields, **off)
        return self._run_one(lay, inputs, desc, {"dx": ((n, i), "f32")})["dx"]

    def sparse_linear_backward_weight(self, x, dy, pattern):
        """(dw (J, fan_in) compressed, db (J,)) from x (N, I) and dy (N, J) over the stored edges of ``pattern``."""
        x, dy = self._tensor("x", x, 2), self._tensor("dy", dy, 2)
        if x.shape != (dy.shape[0], pattern.n_in) or dy.shape[1] != pattern.n_out:
            raise ValueError(f"x/dy: expected (N, {pattern.n_in}) and (N, {pattern.n_out}), got {x.shape} and "
                             f"{dy.shape}")
        n = x.shape[0]
        fields = self._sparse_fields(pattern, n)
        j, e = pattern.n_out, pattern.edges
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), dy=lay.alloc("grad", "dy", dy.size),
                   pattern=lay.alloc("bits", "pattern", e), dw=lay.alloc("grad", "dw", e),
                   db=lay.alloc("grad", "db", j))
        desc = encode("SPARSE_FC_BWD_WEIGHT", flags=self._flags(), limits=self.limits, **fields, **off)
        out = self._run_one(lay, {"x": x, "dy": dy, "pattern": pattern.idx.astype(np.uint32)}, desc,
                            {"dw": ((j, pattern.fan_in), "f32"), "db": ((j,), "f32")})
        return out["dw"], out["db"]

    # ------------------------------------------------------------------ pooling
    def _pool_shape(self, x_shape, size, stride):
        n, c, h, w = x_shape
        lim = self.limits
        for name, value, hi in (("x channels", c, lim.max_ch), ("x height", h, lim.max_dim),
                                ("x width", w, lim.max_dim)):
            if not 1 <= value <= hi:
                raise ValueError(f"{name}: must be in [1, {hi}] (compiled maximum), got {value}")
        if not 1 <= size <= min(lim.max_ksize, h, w):
            raise ValueError(f"size: must be in [1, {min(lim.max_ksize, h, w)}], got {size}")
        if not 1 <= stride <= lim.max_ksize:
            raise ValueError(f"stride: must be in [1, {lim.max_ksize}], got {stride}")
        return (n, c, (h - size) // stride + 1, (w - size) // stride + 1)

    def maxpool_forward(self, x, size: int = 2, stride: int = 2):
        """(y (N, C, OH, OW), argmax int32 flat h * W + w in the plane, mask = y > 0)."""
        x = self._tensor("x", x, 4)
        y_shape = self._pool_shape(x.shape, size, stride)
        ny = int(np.prod(y_shape))
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), y=lay.alloc("act", "y", ny),
                   argmax=lay.alloc("bits", "argmax", ny), mask_out=lay.alloc("bits", "mask", bit_words(ny)))
        n, c, h, w = x.shape
        desc = encode("MAXPOOL_FWD", flags=["RELU"], limits=self.limits, n=n, c=c, h=h, w=w, r=size,
                      stride=stride, **off)
        out = self._run_one(lay, {"x": x}, desc, {"y": (y_shape, "f32"), "argmax": (y_shape, "index"),
                                                  "mask": (y_shape, "bits")})
        return out["y"], out["argmax"], out["mask"]

    def maxpool_backward(self, dy, argmax, x_shape, size: int = 2, stride: int = 2):
        """dx (N, C, H, W): dy (N, C, OH, OW) accumulated at the argmax positions."""
        dy = self._tensor("dy", dy, 4)
        x_shape = tuple(int(v) for v in x_shape)
        y_shape = self._pool_shape(x_shape, size, stride)
        argmax = np.asarray(argmax)
        if dy.shape != y_shape or argmax.shape != y_shape:
            raise ValueError(f"dy/argmax: expected shape {y_shape}, got {dy.shape} and {argmax.shape}")
        plane = x_shape[2] * x_shape[3]
        if argmax.dtype.kind not in "iu" or (argmax.size and (argmax.min() < 0 or argmax.max() >= plane)):
            raise ValueError(f"argmax: must be integers in [0, {plane - 1}]")
        lay = ArenaLayout()
        off = dict(dy=lay.alloc("grad", "dy", dy.size), argmax=lay.alloc("bits", "argmax", dy.size),
                   dx=lay.alloc("grad", "dx", int(np.prod(x_shape))))
        n, c, h, w = x_shape
        desc = encode("MAXPOOL_BWD", flags=[], limits=self.limits, n=n, c=c, h=h, w=w, r=size, stride=stride,
                      **off)
        return self._run_one(lay, {"dy": dy, "argmax": argmax.astype(np.uint32)}, desc,
                             {"dx": (x_shape, "f32")})["dx"]

    # ------------------------------------------------------------------ residual add, global average pooling
    def add_forward(self, a, b, relu: bool = True):
        """(y = a + b, mask = y > 0 or None when relu is False) for a, b of one shape (the join of a residual block)."""
        shape = np.shape(a)
        a, b = self._tensor("a", a, None), self._tensor("b", b, None)
        if b.shape != a.shape:
            raise ValueError(f"b: expected the shape of a {a.shape}, got {b.shape}")
        if a.size < 1:
            raise ValueError("a: must have at least one element")
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "a", a.size), x2=lay.alloc("act", "b", a.size),
                   y=lay.alloc("act", "y", a.size), mask_out=lay.alloc("bits", "mask", bit_words(a.size)))
        desc = encode("ADD_FWD", flags=self._flags(relu=relu), limits=self.limits, count=a.size, **off)
        outputs = {"y": (shape, "f32")}
        if relu:
            outputs["mask"] = (shape, "bits")
        out = self._run_one(lay, {"a": a, "b": b}, desc, outputs)
        return out["y"], out.get("mask")

    def add_backward(self, da, db, out_mask=None):
        """dx = da + db (two paths of a fork meet), zero where out_mask (shape of da) is False."""
        shape = np.shape(da)
        da, db = self._tensor("da", da, None), self._tensor("db", db, None)
        if db.shape != da.shape:
            raise ValueError(f"db: expected the shape of da {da.shape}, got {db.shape}")
        if da.size < 1:
            raise ValueError("da: must have at least one element")
        lay = ArenaLayout()
        off = dict(dy=lay.alloc("grad", "da", da.size), dy2=lay.alloc("grad", "db", da.size),
                   dx=lay.alloc("grad", "dx", da.size), mask_in=lay.alloc("bits", "mask", bit_words(da.size)))
        inputs = {"da": da, "db": db}
        if out_mask is not None:
            inputs["mask"] = self._mask("out_mask", out_mask, shape)
        desc = encode("ADD_BWD", flags=self._flags(has_mask=out_mask is not None), limits=self.limits,
                      count=da.size, **off)
        return self._run_one(lay, inputs, desc, {"dx": (shape, "f32")})["dx"]

    def _gap_shape(self, x_shape):
        n, c, h, w = x_shape
        lim = self.limits
        for name, value, hi in (("x channels", c, lim.max_ch), ("x height", h, lim.max_dim),
                                ("x width", w, lim.max_dim)):
            if not 1 <= value <= hi:
                raise ValueError(f"{name}: must be in [1, {hi}] (compiled maximum), got {value}")
        if n < 1:
            raise ValueError(f"x batch: must be at least 1, got {n}")
        return dict(n=n, c=c, h=h, w=w)

    def global_avgpool_forward(self, x):
        """y (N, C): the mean of each plane of x (N, C, H, W)."""
        x = self._tensor("x", x, 4)
        shape = self._gap_shape(x.shape)
        n, c = x.shape[:2]
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), y=lay.alloc("act", "y", n * c))
        desc = encode("GAP_FWD", limits=self.limits, **shape, **off)
        return self._run_one(lay, {"x": x}, desc, {"y": ((n, c), "f32")})["y"]

    def global_avgpool_backward(self, dy, x_shape, out_mask=None):
        """dx (N, C, H, W) = dy (N, C) / (H * W) over each plane, zero where out_mask is False."""
        dy = self._tensor("dy", dy, 2)
        x_shape = tuple(int(v) for v in x_shape)
        if len(x_shape) != 4:
            raise ValueError(f"x_shape: expected (N, C, H, W), got {x_shape}")
        shape = self._gap_shape(x_shape)
        if dy.shape != x_shape[:2]:
            raise ValueError(f"dy: expected shape {x_shape[:2]}, got {dy.shape}")
        size = int(np.prod(x_shape))
        lay = ArenaLayout()
        off = dict(dy=lay.alloc("grad", "dy", dy.size), dx=lay.alloc("grad", "dx", size),
                   mask_in=lay.alloc("bits", "mask", bit_words(size)))
        inputs = {"dy": dy}
        if out_mask is not None:
            inputs["mask"] = self._mask("out_mask", out_mask, x_shape)
        desc = encode("GAP_BWD", flags=self._flags(has_mask=out_mask is not None), limits=self.limits,
                      **shape, **off)
        return self._run_one(lay, inputs, desc, {"dx": (x_shape, "f32")})["dx"]

    # ------------------------------------------------------------------ loss, optimiser
    def softmax_xent(self, logits, labels, grad_scale: float = 1.0):
        """(mean loss, dlogits (N, J) * grad_scale) for logits (N, J) and integer labels (N,)."""
        grad_scale = check_grad_scale(grad_scale)
        logits = self._tensor("logits", logits, 2)
        n, j = logits.shape
        labels = np.asarray(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise ValueError(f"labels: expected {n} integer labels, got shape {labels.shape} dtype {labels.dtype}")
        if n and (labels.min() < 0 or labels.max() >= j):
            raise ValueError(f"labels: must lie in [0, {j - 1}]")
        self._check_features("logits classes", j)
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "logits", logits.size), labels=lay.alloc("bits", "labels", n),
                   dx=lay.alloc("grad", "dlogits", logits.size), loss=lay.alloc("grad", "loss", 1))
        desc = encode("SOFTMAX_XENT", limits=self.limits, n=n, c=j, grad_scale=grad_scale, **off)
        out = self._run_one(lay, {"logits": logits, "labels": labels.astype(np.uint32)}, desc,
                            {"dlogits": ((n, j), "f32"), "loss": ((1,), "f32")})
        return float(out["loss"][0]), out["dlogits"]

    def sgd_update(self, param, grad, velocity, lr: float, momentum: float, weight_decay: float,
                   grad_scale: float = 1.0, nesterov: bool = False):
        """(param', velocity') by PyTorch's SGD rule (reference.sgd_update) on grad / grad_scale; any matching shapes.

        ``nesterov``: Nesterov momentum (the kernel's ``FLAG_NESTEROV``).
        """
        grad_scale = check_grad_scale(grad_scale)
        shape = np.shape(param)
        param = self._tensor("param", param, None)
        grad, velocity = self._tensor("grad", grad, None), self._tensor("velocity", velocity, None)
        if not (param.shape == grad.shape == velocity.shape):
            raise ValueError(f"grad/velocity: expected shape {param.shape}, got {grad.shape} and {velocity.shape}")
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        lay = ArenaLayout()
        count = max(1, param.size)
        off = dict(wgt=lay.alloc("wgt", "param", count), vel=lay.alloc("vel", "velocity", count),
                   dw=lay.alloc("grad", "grad", count))
        desc = encode("SGD_UPDATE", ("NESTEROV",) if nesterov else (), limits=self.limits, count=param.size,
                      lr=float(lr), momentum=float(momentum),
                      weight_decay=float(weight_decay), grad_scale=grad_scale, **off)
        out = self._run_one(lay, {"param": param, "velocity": velocity, "grad": grad}, desc,
                            {"param": (shape, "f32"), "velocity": (shape, "f32")})
        return out["param"], out["velocity"]

    # ------------------------------------------------------------------ batch normalisation
    def _bn_dims(self, name, shape):
        """(n, c, h, w) of a batch-normalisation tensor (N, C, H, W) or (N, C) (h = w = 1), checked."""
        if len(shape) not in (2, 4):
            raise ValueError(f"{name}: expected a rank-4 NCHW or rank-2 (N, C) array, got shape {tuple(shape)}")
        n, c, h, w = (tuple(int(v) for v in shape) + (1, 1))[:4]
        lim = self.limits
        for what, value, hi in ((f"{name} channels", c, lim.max_ch), (f"{name} height", h, lim.max_dim),
                                (f"{name} width", w, lim.max_dim)):
            if not 1 <= value <= hi:
                raise ValueError(f"{what}: must be in [1, {hi}] (compiled maximum), got {value}")
        if n < 1:
            raise ValueError(f"{name}: needs at least one sample, got shape {tuple(shape)}")
        return n, c, h, w

    def _per_channel(self, name, a, c):
        a = self._tensor(name, a, 1)
        if a.shape != (c,):
            raise ValueError(f"{name}: expected shape ({c},) (one value per channel), got {a.shape}")
        return a

    @staticmethod
    def _eps(eps) -> float:
        if not np.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps: must be a finite number > 0, got {eps!r}")
        return float(eps)

    def batchnorm_forward(self, x, gamma, beta, eps: float = 1e-5, relu: bool = True):
        """(y, mask or None, xhat (shape of x), mean (C,), var (C,)): training mode, batch statistics.

        x (N, C, H, W) or (N, C); gamma, beta (C,); var biased (reference.batchnorm_forward).
        """
        x = self._tensor("x", x, None)
        n, c, h, w = self._bn_dims("x", x.shape)
        if n * h * w < 2:
            raise ValueError(f"x: training-mode batch normalisation needs more than one value per channel, "
                             f"got shape {x.shape}")
        gamma, beta = self._per_channel("gamma", gamma, c), self._per_channel("beta", beta, c)
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), wgt=lay.alloc("wgt", "gamma", c), bias=lay.alloc("wgt", "beta", c),
                   y=lay.alloc("act", "y", x.size), xhat=lay.alloc("act", "xhat", x.size),
                   mean=lay.alloc("act", "mean", c), var=lay.alloc("act", "var", c),
                   mask_out=lay.alloc("bits", "mask", bit_words(x.size)))
        desc = encode("BN_FWD", flags=self._flags(relu=relu), limits=self.limits, n=n, c=c, h=h, w=w,
                      eps=self._eps(eps), **off)
        outputs = {"y": (x.shape, "f32"), "xhat": (x.shape, "f32"), "mean": ((c,), "f32"), "var": ((c,), "f32")}
        if relu:
            outputs["mask"] = (x.shape, "bits")
        out = self._run_one(lay, {"x": x, "gamma": gamma, "beta": beta}, desc, outputs)
        return out["y"], out.get("mask"), out["xhat"], out["mean"], out["var"]

    def batchnorm_inference(self, x, gamma, beta, running_mean, running_var, eps: float = 1e-5, relu: bool = True):
        """(y, mask or None): x (N, C, H, W) or (N, C) normalised with the running statistics (C,)."""
        x = self._tensor("x", x, None)
        n, c, h, w = self._bn_dims("x", x.shape)
        gamma, beta = self._per_channel("gamma", gamma, c), self._per_channel("beta", beta, c)
        rm, rv = self._per_channel("running_mean", running_mean, c), self._per_channel("running_var", running_var, c)
        if np.any(rv < 0):
            raise ValueError("running_var: must be >= 0 everywhere")
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", x.size), wgt=lay.alloc("wgt", "gamma", c), bias=lay.alloc("wgt", "beta", c),
                   running=lay.alloc("wgt", "running", 2 * c), y=lay.alloc("act", "y", x.size),
                   mask_out=lay.alloc("bits", "mask", bit_words(x.size)))
        desc = encode("BN_INFER", flags=self._flags(relu=relu), limits=self.limits, n=n, c=c, h=h, w=w,
                      eps=self._eps(eps), **off)
        outputs = {"y": (x.shape, "f32")}
        if relu:
            outputs["mask"] = (x.shape, "bits")
        out = self._run_one(lay, {"x": x, "gamma": gamma, "beta": beta, "running": np.concatenate([rm, rv])}, desc,
                            outputs)
        return out["y"], out.get("mask")

    def batchnorm_backward(self, dy, xhat, var, gamma, eps: float = 1e-5, out_mask=None):
        """(dx (shape of dy), dgamma (C,), dbeta (C,)); dx zero where out_mask is False.

        dy: the gradient of the forward's y (before its ReLU); xhat, var: the forward's.
        """
        dy = self._tensor("dy", dy, None)
        n, c, h, w = self._bn_dims("dy", dy.shape)
        if n * h * w < 2:
            raise ValueError(f"dy: training-mode batch normalisation needs more than one value per channel, "
                             f"got shape {dy.shape}")
        xhat = self._tensor("xhat", xhat, dy.ndim)
        if xhat.shape != dy.shape:
            raise ValueError(f"xhat: expected shape {dy.shape} (that of dy), got {xhat.shape}")
        var, gamma = self._per_channel("var", var, c), self._per_channel("gamma", gamma, c)
        if np.any(var < 0):
            raise ValueError("var: must be >= 0 everywhere")
        lay = ArenaLayout()
        off = dict(dy=lay.alloc("grad", "dy", dy.size), xhat=lay.alloc("act", "xhat", dy.size),
                   var=lay.alloc("act", "var", c), wgt=lay.alloc("wgt", "gamma", c),
                   dx=lay.alloc("grad", "dx", dy.size), dw=lay.alloc("grad", "dgamma", c),
                   db=lay.alloc("grad", "dbeta", c), mask_in=lay.alloc("bits", "mask", bit_words(dy.size)))
        inputs = {"dy": dy, "xhat": xhat, "var": var, "gamma": gamma}
        if out_mask is not None:
            inputs["mask"] = self._mask("out_mask", out_mask, dy.shape)
        desc = encode("BN_BWD", flags=self._flags(has_mask=out_mask is not None), limits=self.limits, n=n, c=c,
                      h=h, w=w, eps=self._eps(eps), **off)
        out = self._run_one(lay, inputs, desc, {"dx": (dy.shape, "f32"), "dgamma": ((c,), "f32"),
                                                "dbeta": ((c,), "f32")})
        self._remember_batchnorm_grad(out["dx"])
        return out["dx"], out["dgamma"], out["dbeta"]

    def _remember_batchnorm_grad(self, dx: np.ndarray) -> None:
        key, table = id(dx), self._batchnorm_grads
        table[key] = weakref.ref(dx, lambda _ref, key=key, table=table: table.pop(key, None))

    def batchnorm_update_stats(self, running_mean, running_var, mean, var, count: int, momentum: float):
        """(running_mean', running_var') (C,) by reference.batchnorm_running_update (PyTorch's rule)."""
        rm = self._tensor("running_mean", running_mean, 1)
        c = rm.shape[0]
        if not 1 <= c <= self.limits.max_ch:
            raise ValueError(f"running_mean channels: must be in [1, {self.limits.max_ch}] (compiled maximum), "
                             f"got {c}")
        rv = self._per_channel("running_var", running_var, c)
        mean, var = self._per_channel("mean", mean, c), self._per_channel("var", var, c)
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 2 <= count < 2 ** 32:
            raise ValueError(f"count: must be an integer in [2, {2 ** 32 - 1}] (values per channel), got {count!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum: must lie in [0, 1], got {momentum!r}")
        lay = ArenaLayout()
        off = dict(running=lay.alloc("wgt", "running", 2 * c), mean=lay.alloc("act", "mean", c),
                   var=lay.alloc("act", "var", c))
        desc = encode("BN_STATS", limits=self.limits, c=c, count=int(count), momentum=float(momentum), **off)
        out = self._run_one(lay, {"running": np.concatenate([rm, rv]), "mean": mean, "var": var}, desc,
                            {"running": ((2, c), "f32")})
        return out["running"][0].copy(), out["running"][1].copy()

    # ------------------------------------------------------------------ gradient pruning
    def _prune(self, g, tau: float, tau_scale: float, seed):
        shape = np.shape(g)
        g = self._tensor("g", g, None)
        seed = _seed_word(seed)
        lay = ArenaLayout()
        count = max(1, g.size)
        off = dict(dy=lay.alloc("grad", "g", count), seed=lay.alloc("bits", "seed", 1))
        off["dx"] = off["dy"]  # in place
        if g.size == 0:
            return g.reshape(shape)
        desc = encode("PRUNE_GRAD", limits=self.limits, count=g.size, tau=float(tau), tau_scale=float(tau_scale),
                      **off)
        return self._run_one(lay, {"g": g, "seed": np.array([seed], np.uint32)}, desc, {"g": (shape, "f32")})["g"]

    def prune_gradients(self, g, tau: float, seed):
        """g' (shape of g): stochastic pruning with threshold ``tau`` >= 0 (reference.prune_gradients)."""
        if not np.isfinite(tau) or tau < 0:
            raise ValueError(f"tau: must be a finite number >= 0, got {tau!r}")
        return self._prune(g, tau, 0.0, seed)

    def prune_grad(self, g, rate: float, seed):
        """g' (shape of g) pruned at a target ``rate`` in [0, 1): tau derived on chip from g.

        Equals ``reference.prune_gradients(g, reference.prune_threshold(g, rate), seed)``;
        ``last_stats["tau"]`` is the threshold the kernel applied. ``seed``: an
        integer or a one-word uint32 array.
        """
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate: must be in [0, 1), got {rate!r}")
        if rate == 0.0:
            return np.array(g, dtype=np.float32)
        return self._prune(g, 0.0, float(R.prune_tau_scale(rate)), seed)


def check_grad_scale(grad_scale) -> float:
    """``grad_scale`` as a float: a power of two in [2^-32, 2^32] (so scaling is exact); ValueError otherwise."""
    value = float(grad_scale)
    mantissa, exponent = np.frexp(value) if np.isfinite(value) and value > 0 else (0.0, 0)
    if mantissa != 0.5 or not -31 <= exponent <= 33:
        raise ValueError(f"grad_scale: must be a power of two in [2^-32, 2^32], got {grad_scale!r}")
    return value


def _seed_word(seed) -> int:
    """The uint32 seed from an int or a one-element integer array."""
    value = np.asarray(seed)
    if value.size != 1 or value.dtype.kind not in "iu":
        raise ValueError(f"seed: expected an integer or a one-element integer array, got {seed!r}")
    value = int(value.reshape(-1)[0])
    if not 0 <= value < 2 ** 32:
        raise ValueError(f"seed: must be in [0, {2 ** 32 - 1}], got {value}")
    return value
