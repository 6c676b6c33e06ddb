"""Programs for the ``zskip_top`` IP: descriptor encoding, decoding and arena layout.

The descriptor format is written once, in ``hls/common/descriptor.h``; this
module parses its enums at import (and ``ZSKIP_VERSION`` from
``hls/common/version.h``, the default maxima from ``hls/common/config.h``),
so no field position, opcode or flag is repeated here.

A program is an array of ``D_WORDS`` uint32 words per descriptor::

    from zskip.host.ip.program import ArenaLayout, encode, decode, OPCODES
    layout = ArenaLayout()
    x = layout.alloc("act", "x", 1 * 3 * 8 * 8)        # word offset in the act arena
    ...
    words = encode("CONV_FWD", n=1, c=3, h=8, w=8, k=4, r=3, s=3, stride=1, pad=1,
                   x=x, y=y, wgt=w, bias=b, mask_out=m, flags=("SKIP_ZEROS", "RELU"))
    decode(words)["k"] == 4

Field names are the enum names without ``D_`` and ``_F32``, lower case
(``n, c, h, w, k, r, s, stride, pad, count, x, y, wgt, bias, vel, dy, dx, dw,
db, loss, mask_out, mask_in, argmax, labels, lr, momentum, weight_decay, tau,
tau_scale, seed, grad_scale``; residual add: ``x2, dy2``; batch normalisation: ``eps, xhat, mean, var,
running``; sparse junctions: ``pattern, fan_in``);
the header comment says which arena each offset points into. ``encode``
rejects a descriptor the compiled kernel cannot run (:class:`Limits`), with
an error naming the field and its allowed range.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from ... import HLS_DIR  # the one definition: zskip/__init__.py
DESCRIPTOR_H = HLS_DIR / "common" / "descriptor.h"
VERSION_H = HLS_DIR / "common" / "version.h"
CONFIG_H = HLS_DIR / "common" / "config.h"

#: the arenas of the IP, in the order of zskip_top's pointer arguments after ``program``
ARENAS = ("act", "wgt", "grad", "bits", "vel")
#: numpy dtype of each arena's words
ARENA_DTYPES = {"act": np.float32, "wgt": np.float32, "grad": np.float32, "bits": np.uint32, "vel": np.float32}


def _parse_enum(text: str, name: str) -> Dict[str, int]:
    match = re.search(r"enum\s+" + name + r"\s*\{(.*?)\};", text, re.S)
    if not match:
        raise RuntimeError(f"{DESCRIPTOR_H}: enum {name} not found")
    body = re.sub(r"//[^\n]*", "", match.group(1))
    items = re.findall(r"(\w+)\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*,", body)
    if not items:
        raise RuntimeError(f"{DESCRIPTOR_H}: enum {name} has no `NAME = value,` entries")
    return {k: int(v, 0) for k, v in items}


def _parse_define(path: Path, name: str) -> int:
    match = re.search(r"#define\s+" + name + r"\s+(0x[0-9a-fA-F]+|\d+)u?", path.read_text())
    if not match:
        raise RuntimeError(f"{path}: #define {name} not found")
    return int(match.group(1), 0)


_TEXT = DESCRIPTOR_H.read_text()
_FIELD_ENUM = _parse_enum(_TEXT, "zskip_field")
#: words per descriptor
D_WORDS = _FIELD_ENUM.pop("D_WORDS")
#: field name -> word index (names as accepted by :func:`encode`)
FIELDS: Dict[str, int] = {re.sub(r"_F32$", "", k[2:]).lower(): v for k, v in _FIELD_ENUM.items()}
#: fields holding float32 bit patterns
FLOAT_FIELDS = frozenset(re.sub(r"_F32$", "", k[2:]).lower() for k in _FIELD_ENUM if k.endswith("_F32"))
#: opcode name (without OP_) -> value
OPCODES: Dict[str, int] = {k[3:]: v for k, v in _parse_enum(_TEXT, "zskip_opcode").items()}
#: flag name (without FLAG_) -> bit
FLAGS: Dict[str, int] = {k[5:]: v for k, v in _parse_enum(_TEXT, "zskip_flag").items()}
_STAT_ENUM = _parse_enum(_TEXT, "zskip_stat")
#: words per stats record
S_WORDS = _STAT_ENUM.pop("S_WORDS")
#: stats field name -> word index of its low word (every counter but error/opcode is 64-bit)
STAT_FIELDS: Dict[str, int] = {}
for _k, _v in _STAT_ENUM.items():
    if _k.endswith("_HI"):
        continue
    STAT_FIELDS[re.sub(r"(_LO|_F32)$", "", _k[2:]).lower()] = _v
#: stats fields holding float32 bit patterns
_FLOAT_STATS = frozenset(re.sub(r"_F32$", "", k[2:]).lower() for k in _STAT_ENUM if k.endswith("_F32"))
_WIDE_STATS = frozenset(re.sub(r"_LO$", "", k[2:]).lower() for k in _STAT_ENUM if k.endswith("_LO"))
#: error code -> name (without ERR_)
ERRORS: Dict[int, str] = {v: k[4:] for k, v in _parse_enum(_TEXT, "zskip_error").items()}
#: words per beat of the tensor ports: every tensor offset is a multiple of it
BEAT_WORDS: int = _parse_enum(_TEXT, "zskip_beat")["BEAT_WORDS"]
_OFFSET_FIELDS = tuple(k for k, v in FIELDS.items() if FIELDS["x"] <= v <= FIELDS["labels"]) + \
    tuple(k for k in ("x2", "dy2") if k in FIELDS) + \
    tuple(k for k, v in FIELDS.items() if FIELDS["xhat"] <= v <= FIELDS["running"])     # batch normalisation
#: error name -> what it means, for the errors a user can cause by building a program by hand
_ERROR_HINTS = {
    "ALIGN": (f"a tensor offset field ({', '.join(_OFFSET_FIELDS)}) is not a multiple of "
              f"BEAT_WORDS = {BEAT_WORDS} words (one 128-bit beat); allocate tensors with ArenaLayout"),
    "OPCODE": "unknown opcode",
    "HW_RULE": "a hardware-rule assertion failed (ZSKIP_EMU_ASSERTS build)",
}


def error_message(name: str) -> str:
    """``ERR_<name>`` with what it means where a user can cause it (``name`` as in :data:`ERRORS`)."""
    hint = _ERROR_HINTS.get(name)
    return f"ERR_{name}" + (f": {hint}" if hint else "")
#: the version register value this driver expects
ZSKIP_VERSION = _parse_define(VERSION_H, "ZSKIP_VERSION")

if set(FIELDS.values()) and max(FIELDS.values()) >= D_WORDS:
    raise RuntimeError(f"{DESCRIPTOR_H}: a field index is >= D_WORDS ({D_WORDS})")


def _parse_constant(path: Path, name: str) -> int:
    match = re.search(r"static\s+const\s+unsigned\s+" + name + r"\s*=\s*(\d+)\s*;", path.read_text())
    if not match:
        raise RuntimeError(f"{path}: static const unsigned {name} = N; not found")
    return int(match.group(1))


#: fc_config::max_edges = max_features^2 / this (hls/common/config.h)
_SPARSE_EDGE_DIVISOR = _parse_constant(CONFIG_H, "SPARSE_EDGE_DIVISOR")


@dataclass(frozen=True)
class Limits:
    """Compiled maxima of the kernels (the ZSKIP_* macros of hls/common/config.h)."""

    pe_lanes: int
    max_ch: int
    max_dim: int
    max_ksize: int
    max_features: int

    @classmethod
    def defaults(cls) -> "Limits":
        """The defaults written in hls/common/config.h."""
        return cls(**{f: _parse_define(CONFIG_H, "ZSKIP_" + f.upper()) for f in
                      ("pe_lanes", "max_ch", "max_dim", "max_ksize", "max_features")})

    @property
    def max_edges(self) -> int:
        """Stored edges of a pre-defined sparse junction the kernel holds (fc_config::max_edges, config.h)."""
        f, div = self.max_features, _SPARSE_EDGE_DIVISOR
        return f // div * f if f >= div else f

    def defines(self) -> Dict[str, int]:
        """``{macro: value}`` to compile the kernels with these maxima."""
        return {"ZSKIP_" + k.upper(): v for k, v in self.__dict__.items()}

    def check(self) -> "Limits":
        """``self`` when every maximum is an integer in :data:`LIMIT_RANGES`; ValueError naming it otherwise."""
        for name, (lo, hi) in LIMIT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise ValueError(f"{name}: must be an integer in [{lo}, {hi}], got {value!r}")
        return self

    def check_model(self, model, backend: str = "the accelerator") -> None:
        """ValueError naming the layer and the option to set when ``model`` exceeds these maxima.

        ``model``: a :class:`zskip.models.networks.Model` (its layers' shapes).
        """
        need: Dict[str, tuple] = {}   # option -> (largest value needed, where)

        def want(option, value, where):
            if value > getattr(self, option) and value > need.get(option, (0,))[0]:
                need[option] = (value, where)

        for name, layer, (shape_in, shape_out) in zip(model.layer_names(), model.layers, model.shapes()):
            where = f"layer {name}"
            if layer.kind in ("conv", "maxpool", "avgpool"):
                want("max_ch", max(shape_in[0], shape_out[0]), f"{where} has {{}} channels")
                want("max_dim", max(shape_in[1:]), f"{where} has a {{}}-pixel input side")
                want("max_ksize", getattr(layer, "kernel", getattr(layer, "size", 1)), f"{where} has a {{}}-wide window")
            elif layer.kind == "linear":
                want("max_features", max(shape_in[0], shape_out[0]), f"{where} has {{}} features")
            elif layer.kind == "batchnorm":
                want("max_ch", shape_in[0], f"{where} has {{}} channels")
                if len(shape_in) == 3:
                    want("max_dim", max(shape_in[1:]), f"{where} has a {{}}-pixel input side")
        if need:
            option, (value, where) = next(iter(need.items()))
            others = "".join(f" --backend-opt {o}={v}" for o, (v, _) in list(need.items())[1:])
            raise ValueError(f"model {model.name!r}: {where.format(value)}, more than {backend}'s compiled "
                             f"{option}={getattr(self, option)}; set --backend-opt {option}={value}{others}")


#: allowed range of each compiled maximum (max_dim and max_ksize: 8-bit coordinates, see config.h;
#: the other upper bounds keep the emulator's static on-chip arrays within memory)
LIMIT_RANGES = {"pe_lanes": (1, 256), "max_ch": (1, 4096), "max_dim": (1, 255), "max_ksize": (1, 255),
                "max_features": (1, 65536)}


def f32_bits(value: float) -> int:
    """The uint32 bit pattern of ``value`` as float32."""
    return int(np.array(value, dtype=np.float32).view(np.uint32))


def bits_f32(word: int) -> float:
    """The float32 whose bit pattern is ``word``."""
    return float(np.array(word, dtype=np.uint32).view(np.float32))


def _check_range(opcode: str, field: str, value: int, lo: int, hi: int):
    if not lo <= value <= hi:
        raise ValueError(f"{opcode}: field {field!r} must be in [{lo}, {hi}], got {value}")


def _validate(opcode: str, f: Mapping[str, int], limits: Limits):
    """Raise ValueError naming the field when the compiled kernel cannot run it."""
    conv_like = {"CONV_FWD", "CONV_BWD_DATA", "CONV_BWD_WEIGHT"}
    fc_like = {"FC_FWD", "FC_BWD_DATA", "FC_BWD_WEIGHT"}
    u32 = 2 ** 32 - 1
    if opcode in conv_like:
        _check_range(opcode, "n", f["n"], 1, u32)
        _check_range(opcode, "c", f["c"], 1, limits.max_ch)
        _check_range(opcode, "k", f["k"], 1, limits.max_ch)
        _check_range(opcode, "h", f["h"], 1, limits.max_dim)
        _check_range(opcode, "w", f["w"], 1, limits.max_dim)
        _check_range(opcode, "r", f["r"], 1, limits.max_ksize)
        _check_range(opcode, "s", f["s"], 1, limits.max_ksize)
        if f["stride"] not in (1, 2):
            raise ValueError(f"{opcode}: field 'stride' must be 1 or 2, got {f['stride']}")
        _check_range(opcode, "pad", f["pad"], 0, min(f["r"], f["s"]) - 1)
        if f["r"] > f["h"] + 2 * f["pad"] or f["s"] > f["w"] + 2 * f["pad"]:
            raise ValueError(f"{opcode}: fields 'r'/'s' ({f['r']}x{f['s']}) must fit the padded input "
                             f"{f['h'] + 2 * f['pad']}x{f['w'] + 2 * f['pad']}")
    elif opcode in fc_like:
        _check_range(opcode, "n", f["n"], 1, u32)
        _check_range(opcode, "c", f["c"], 1, limits.max_features)
        _check_range(opcode, "k", f["k"], 1, limits.max_features)
        for name in ("h", "w", "r", "s", "stride"):
            _check_range(opcode, name, f[name], 1, 1)
        _check_range(opcode, "pad", f["pad"], 0, 0)
    elif opcode in ("SPARSE_FC_FWD", "SPARSE_FC_BWD_DATA", "SPARSE_FC_BWD_WEIGHT"):
        _check_range(opcode, "n", f["n"], 1, u32)
        _check_range(opcode, "c", f["c"], 1, limits.max_features)
        _check_range(opcode, "k", f["k"], 1, limits.max_features)
        for name in ("h", "w", "r", "s", "stride"):
            _check_range(opcode, name, f[name], 1, 1)
        _check_range(opcode, "pad", f["pad"], 0, 0)
        _check_range(opcode, "fan_in", f["fan_in"], 1, min(f["c"], limits.max_edges // f["k"]))
        if f["pattern"] % BEAT_WORDS:
            raise ValueError(f"{opcode}: field 'pattern' must be a multiple of BEAT_WORDS = {BEAT_WORDS} words")
    elif opcode in ("MAXPOOL_FWD", "MAXPOOL_BWD"):
        _check_range(opcode, "n", f["n"], 1, u32)
        _check_range(opcode, "c", f["c"], 1, limits.max_ch)
        _check_range(opcode, "h", f["h"], 1, limits.max_dim)
        _check_range(opcode, "w", f["w"], 1, limits.max_dim)
        _check_range(opcode, "r", f["r"], 1, min(limits.max_ksize, f["h"], f["w"]))
        _check_range(opcode, "stride", f["stride"], 1, limits.max_ksize)
    elif opcode == "SGD_UPDATE":
        _check_range(opcode, "count", f["count"], 1, u32)
    elif opcode == "SOFTMAX_XENT":
        _check_range(opcode, "n", f["n"], 1, u32)
        _check_range(opcode, "c", f["c"], 1, limits.max_features)
    elif opcode == "PRUNE_GRAD":
        _check_range(opcode, "count", f["count"], 1, u32)
    elif opcode in ("BN_FWD", "BN_INFER", "BN_BWD"):
        _check_range(opcode, "n", f["n"], 1, u32)
        _check_range(opcode, "c", f["c"], 1, limits.max_ch)
        _check_range(opcode, "h", f["h"], 1, limits.max_dim)
        _check_range(opcode, "w", f["w"], 1, limits.max_dim)
        if opcode != "BN_INFER" and f["n"] * f["h"] * f["w"] < 2:
            raise ValueError(f"{opcode}: fields 'n' * 'h' * 'w' (values per channel) must be >= 2 in training "
                             f"mode, got {f['n'] * f['h'] * f['w']}")
    elif opcode == "BN_STATS":
        _check_range(opcode, "c", f["c"], 1, limits.max_ch)
        _check_range(opcode, "count", f["count"], 2, u32)
    elif opcode in ("ADD_FWD", "ADD_BWD"):
        _check_range(opcode, "count", f["count"], 1, u32)
    elif opcode in ("GAP_FWD", "GAP_BWD"):
        _check_range(opcode, "n", f["n"], 1, u32)
        _check_range(opcode, "c", f["c"], 1, limits.max_ch)
        _check_range(opcode, "h", f["h"], 1, limits.max_dim)
        _check_range(opcode, "w", f["w"], 1, limits.max_dim)


def encode(opcode: str, flags: Iterable[str] = (), limits: Optional[Limits] = None,
           **fields: Union[int, float]) -> np.ndarray:
    """One descriptor, (D_WORDS,) uint32.

    ``opcode``: a name of :data:`OPCODES`; ``flags``: names of :data:`FLAGS`;
    ``fields``: names of :data:`FIELDS` (unset fields are 0; float fields take
    Python floats). ``limits`` (default: config.h defaults) are the compiled
    maxima the descriptor is checked against.
    """
    if opcode not in OPCODES:
        raise ValueError(f"opcode must be one of {sorted(OPCODES)}, got {opcode!r}")
    limits = limits or Limits.defaults()
    words = np.zeros(D_WORDS, dtype=np.uint32)
    words[FIELDS["opcode"]] = OPCODES[opcode]
    flag_word = 0
    for flag in flags:
        if flag not in FLAGS:
            raise ValueError(f"flags: each must be one of {sorted(FLAGS)}, got {flag!r}")
        flag_word |= FLAGS[flag]
    words[FIELDS["flags"]] = flag_word
    ints = {k: 0 for k in FIELDS if k not in FLOAT_FIELDS}
    for name, value in fields.items():
        if name not in FIELDS or name in ("opcode", "flags"):
            allowed = sorted(k for k in FIELDS if k not in ("opcode", "flags"))
            raise ValueError(f"field {name!r} is not a descriptor field; allowed: {allowed}")
        if name in FLOAT_FIELDS:
            if not np.isfinite(value):
                raise ValueError(f"{opcode}: field {name!r} must be finite, got {value!r}")
            words[FIELDS[name]] = f32_bits(value)
            continue
        if not isinstance(value, (int, np.integer)) or not 0 <= int(value) < 2 ** 32:
            raise ValueError(f"{opcode}: field {name!r} must be an integer in [0, {2 ** 32 - 1}], got {value!r}")
        ints[name] = int(value)
        words[FIELDS[name]] = int(value)
    _validate(opcode, ints, limits)
    return words


def decode(words: Sequence[int]) -> dict:
    """Inverse of :func:`encode`: ``{"opcode": name, "flags": (names...), field: value...}``."""
    words = np.asarray(words, dtype=np.uint32)
    if words.shape != (D_WORDS,):
        raise ValueError(f"words: expected shape ({D_WORDS},), got {words.shape}")
    names = {v: k for k, v in OPCODES.items()}
    op = int(words[FIELDS["opcode"]])
    if op not in names:
        raise ValueError(f"words: opcode word {op} is not one of {sorted(names)}")
    flag_word = int(words[FIELDS["flags"]])
    out = {"opcode": names[op], "flags": tuple(k for k, v in FLAGS.items() if flag_word & v)}
    for name, index in FIELDS.items():
        if name in ("opcode", "flags"):
            continue
        out[name] = bits_f32(int(words[index])) if name in FLOAT_FIELDS else int(words[index])
    return out


def decode_stats(record: Sequence[int]) -> dict:
    """One stats record (S_WORDS uint32) as ``{field: int}``; ``error`` as its name."""
    rec = np.asarray(record, dtype=np.uint32).astype(np.uint64)
    if rec.shape != (S_WORDS,):
        raise ValueError(f"record: expected shape ({S_WORDS},), got {rec.shape}")
    out = {}
    for name, index in STAT_FIELDS.items():
        value = int(rec[index])
        if name in _WIDE_STATS:
            value |= int(rec[index + 1]) << 32
        out[name] = bits_f32(value) if name in _FLOAT_STATS else value
    out["error"] = ERRORS.get(out["error"], f"UNKNOWN_{out['error']}")
    return out


def bit_words(n_bits: int) -> int:
    """Words a bit tensor of ``n_bits`` elements occupies (it owns its last word)."""
    return (int(n_bits) + 31) // 32


def pack_bits(mask: np.ndarray) -> np.ndarray:
    """bool array -> uint32 words, bit i of word j = element 32 j + i (row-major)."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    padded = np.zeros(bit_words(flat.size) * 32, dtype=np.uint8)
    padded[:flat.size] = flat
    return np.packbits(padded.reshape(-1, 8), axis=1, bitorder="little").reshape(-1).view("<u4").copy()


def unpack_bits(words: np.ndarray, shape) -> np.ndarray:
    """Inverse of :func:`pack_bits` for a tensor of ``shape``."""
    n = int(np.prod(shape))
    bits = np.unpackbits(np.asarray(words, dtype="<u4").view(np.uint8), bitorder="little")
    return bits[:n].astype(bool).reshape(shape)


class ArenaLayout:
    """Word offsets of named tensors in the four arenas.

    ``alloc(arena, name, words)`` reserves ``words`` 32-bit words at the next
    multiple of :data:`BEAT_WORDS` (the IP refuses an unaligned tensor with
    ERR_ALIGN) and returns the offset; ``size(arena)`` is the arena length a buffer must have. Bit
    tensors are allocated with :func:`bit_words` so each owns its last word.
    ``put`` / ``get`` move a named tensor between numpy and the host side of
    the arena buffers (``Accelerator.allocate_arenas``).
    """

    def __init__(self):
        self._next = {a: 0 for a in ARENAS}
        #: name -> (arena, offset, words)
        self.entries: Dict[str, tuple] = {}

    def alloc(self, arena: str, name: str, words: int) -> int:
        if arena not in ARENAS:
            raise ValueError(f"arena must be one of {ARENAS}, got {arena!r}")
        if name in self.entries:
            raise ValueError(f"name {name!r} is already allocated")
        words = int(words)
        if words < 1:
            raise ValueError(f"words must be >= 1, got {words}")
        offset = -(-self._next[arena] // BEAT_WORDS) * BEAT_WORDS
        self._next[arena] = offset + words
        self.entries[name] = (arena, offset, words)
        return offset

    def offset(self, name: str) -> int:
        return self.entries[name][1]

    def put(self, buffers: Mapping[str, np.ndarray], name: str, value) -> None:
        """Write ``value`` into the host side of ``buffers[arena]`` at ``name``'s place.

        bool arrays are packed as bits (:func:`pack_bits`); integer arrays
        become uint32 words; float arrays float32. Flush the arena afterwards.
        """
        arena, off, words = self.entries[name]
        value = np.asarray(value)
        if value.dtype == bool:
            value = pack_bits(value)
        flat = value.reshape(-1)
        if flat.size > words:
            raise ValueError(f"{name}: {flat.size} words do not fit its {words} allocated words")
        buffers[arena][off:off + flat.size] = flat

    def get(self, buffers: Mapping[str, np.ndarray], name: str, shape, kind: str = "f32") -> np.ndarray:
        """A copy of ``name`` from the host side of its arena (invalidate first).

        ``kind``: "f32" (float32 tensor), "bits" (bool tensor of ``shape``) or
        "index" (int32 tensor, e.g. argmax).
        """
        arena, off, words = self.entries[name]
        raw = buffers[arena][off:off + words]
        count = int(np.prod(shape))
        if kind == "bits":
            return unpack_bits(raw, shape)
        if kind == "index":
            return raw[:count].astype(np.int32).reshape(shape)
        if kind == "f32":
            return np.array(raw[:count], dtype=np.float32).reshape(shape)
        raise ValueError(f"kind must be 'f32', 'bits' or 'index', got {kind!r}")

    def size(self, arena: str) -> int:
        """Words in ``arena``: whole beats (a tensor owns the words up to the next beat, so a
        128-bit port may write its last beat whole), at least one, so a buffer can always be
        allocated."""
        return max(BEAT_WORDS, -(-self._next[arena] // BEAT_WORDS) * BEAT_WORDS)


def _conv_out(h, r, stride, pad):
    return (h + 2 * pad - r) // stride + 1 if stride and h + 2 * pad >= r else 0


#: how CONV_BWD_DATA runs: "scatter" (the sparse-scatter engine, hls/conv_bwd_data/conv_bwd_data.h),
#: "gather" (output-stationary, FLAG_GATHER, conv_bwd_data_gather.h) or "auto" (gather where dy comes
#: from a batch normalisation backward and the layer has an output mask, scatter elsewhere)
BWD_DATA_FORMS = ("auto", "scatter", "gather")


def check_bwd_data_form(form) -> str:
    """``form`` when it is one of :data:`BWD_DATA_FORMS`; ValueError naming it otherwise."""
    if form not in BWD_DATA_FORMS:
        raise ValueError(f"bwd_data_form: must be one of {', '.join(BWD_DATA_FORMS)}, got {form!r}")
    return form


def gather_row_words(k: int, lanes: int) -> int:
    """Words of a tap row of the gather form (``gather_row_words`` of conv_bwd_data_gather.h): K rounded up to a
    multiple of the lanes when K >= lanes, else the smallest divisor of the lanes at least K."""
    if k >= lanes:
        return -(-k // lanes) * lanes
    return min(d for d in range(k, lanes + 1) if lanes % d == 0)


def gather_capacity_error(limits: Limits, x_shape, w_shape, stride: int, pad: int) -> Optional[str]:
    """Why the gather form cannot hold this convolution on chip, or None when it can.

    Mirrors the kernel's ``gather_fits`` (conv_bwd_data_gather.h): rows of KG words
    (:func:`gather_row_words`), G = lanes / KG tap groups when K < lanes (else 1); the weights,
    C x slots x KG words (each phase's taps padded to a multiple of G), must fit the weight
    memory (max_ch^2 * max_ksize^2 words) and dy, OH x OW x G x KG words, the plane memory
    (max_dim^2 * max_ch).
    """
    _, c, h, w = (int(v) for v in x_shape)
    k, _, r, s = (int(v) for v in w_shape)
    p = limits.pe_lanes
    kg = gather_row_words(k, p)
    g = p // kg if k < p else 1
    oh, ow = _conv_out(h, r, stride, pad), _conv_out(w, s, stride, pad)

    def phase_taps(ksize, phase):
        return sum(1 for t in range(ksize) if (phase + pad - t) % stride == 0)
    slots = sum(-(-phase_taps(r, ph) * phase_taps(s, pw) // g) * g for ph in range(stride) for pw in range(stride))
    wsize, xsize = limits.max_ch ** 2 * limits.max_ksize ** 2, limits.max_dim ** 2 * limits.max_ch
    if c * slots * kg > wsize:
        return (f"its weights in rows of {kg} words ({c * slots * kg} words) exceed the weight memory "
                f"({wsize} words)")
    if oh * ow * g * kg > xsize:
        return (f"dy in rows of {kg} words, {g} cop{'ies' if g > 1 else 'y'} ({oh * ow * g * kg} words), exceeds "
                f"the plane memory ({xsize} words)")
    return None


def bwd_data_flags(form: str, has_mask: bool, dy_from_batchnorm: bool, capacity_error: Optional[str]) -> list:
    """The CONV_BWD_DATA flags of the form chosen: ``["GATHER"]`` or ``[]`` (scatter).

    ``form`` "auto" takes gather where dy comes from a batch normalisation backward (dense: the
    scatter form's input-type skipping has nothing to skip) and the layer has an output mask
    (the gather form's output-type skipping), when it fits (``capacity_error`` None); else
    scatter. "gather" with a ``capacity_error`` raises ValueError naming it.
    """
    if form == "scatter":
        return []
    if form == "gather":
        if capacity_error:
            raise ValueError(f"bwd_data_form: the gather form cannot run this convolution: {capacity_error} "
                             f"(use bwd_data_form=auto or scatter)")
        return ["GATHER"]
    return ["GATHER"] if has_mask and dy_from_batchnorm and capacity_error is None else []


def operand_extents(words: Sequence[int]) -> Dict[str, int]:
    """Per arena, one past the last word descriptor ``words`` reads or writes.

    Used to check a program against its buffers before a run. An unknown
    opcode touches nothing (the IP stops on it with ERR_OPCODE).
    """
    words = np.asarray(words, dtype=np.uint32)
    f = {name: int(words[i]) for name, i in FIELDS.items() if name not in FLOAT_FIELDS}
    op = {v: k for k, v in OPCODES.items()}.get(f["opcode"])
    n, c, h, w, k, r, s = (f[x] for x in ("n", "c", "h", "w", "k", "r", "s"))
    flags = f["flags"]
    x_size = n * c * h * w
    if op in ("CONV_FWD", "CONV_BWD_DATA", "CONV_BWD_WEIGHT", "FC_FWD", "FC_BWD_DATA", "FC_BWD_WEIGHT"):
        y_size = n * k * _conv_out(h, r, f["stride"], f["pad"]) * _conv_out(w, s, f["stride"], f["pad"])
        w_size = k * c * r * s
    elif op in ("MAXPOOL_FWD", "MAXPOOL_BWD"):
        oh = (h - r) // f["stride"] + 1 if f["stride"] and 0 < r <= h else 0
        ow = (w - r) // f["stride"] + 1 if f["stride"] and 0 < r <= w else 0
        y_size = n * c * oh * ow
    operands = []  # (arena, offset field, words)
    if op in ("CONV_FWD", "FC_FWD"):
        operands = [("act", "x", x_size), ("wgt", "wgt", w_size), ("wgt", "bias", k), ("act", "y", y_size)]
        if flags & FLAGS["RELU"]:
            operands.append(("bits", "mask_out", bit_words(y_size)))
    elif op in ("CONV_BWD_DATA", "FC_BWD_DATA"):
        operands = [("grad", "dy", y_size), ("wgt", "wgt", w_size), ("grad", "dx", x_size)]
        if flags & FLAGS["HAS_OUT_MASK"]:
            operands.append(("bits", "mask_in", bit_words(x_size)))
    elif op in ("CONV_BWD_WEIGHT", "FC_BWD_WEIGHT"):
        operands = [("act", "x", x_size), ("grad", "dy", y_size), ("grad", "dw", w_size), ("grad", "db", k)]
    elif op == "MAXPOOL_FWD":
        operands = [("act", "x", x_size), ("act", "y", y_size), ("bits", "argmax", y_size)]
        if flags & FLAGS["RELU"]:
            operands.append(("bits", "mask_out", bit_words(y_size)))
    elif op == "MAXPOOL_BWD":
        operands = [("grad", "dy", y_size), ("bits", "argmax", y_size), ("grad", "dx", x_size)]
    elif op == "SGD_UPDATE":
        operands = [("wgt", "wgt", f["count"]), ("vel", "vel", f["count"]), ("grad", "dw", f["count"])]
    elif op == "SOFTMAX_XENT":
        operands = [("act", "x", n * c), ("bits", "labels", n), ("grad", "dx", n * c), ("grad", "loss", 1)]
    elif op == "PRUNE_GRAD":
        operands = [("grad", "dy", f["count"]), ("grad", "dx", f["count"]), ("bits", "seed", 1)]
    elif op in ("BN_FWD", "BN_INFER"):
        operands = [("act", "x", x_size), ("wgt", "wgt", c), ("wgt", "bias", c), ("act", "y", x_size)]
        operands += [("act", "xhat", x_size), ("act", "mean", c), ("act", "var", c)] if op == "BN_FWD" \
            else [("wgt", "running", 2 * c)]
        if flags & FLAGS["RELU"]:
            operands.append(("bits", "mask_out", bit_words(x_size)))
    elif op == "BN_BWD":
        operands = [("grad", "dy", x_size), ("act", "xhat", x_size), ("act", "var", c), ("wgt", "wgt", c),
                    ("grad", "dx", x_size), ("grad", "dw", c), ("grad", "db", c)]
        if flags & FLAGS["HAS_OUT_MASK"]:
            operands.append(("bits", "mask_in", bit_words(x_size)))
    elif op == "BN_STATS":
        operands = [("wgt", "running", 2 * c), ("act", "mean", c), ("act", "var", c)]
    ends: Dict[str, int] = {}
    for arena, field, size in operands:
        if size:
            ends[arena] = max(ends.get(arena, 0), f[field] + size)
    return ends


def board_limits(board: Optional[str]):
    """The compiled maxima (``program.Limits``) of ``board``'s bitstream; None: config.h defaults."""
    defaults = Limits.defaults()
    if board is None:
        return defaults
    from ...overlay.boards import board as board_profile
    defines = board_profile(board).hls_defines
    # Limits.defines() names each field's macro, in field order
    macros = list(defaults.defines())
    missing = [m for m in macros if m not in defines]
    if missing:
        raise ValueError(f"boards.ini [hls_macros] lacks {missing}, which the kernels are compiled with")
    return Limits(**{f.name: defines[m] for f, m in zip(dataclasses.fields(Limits), macros)})
