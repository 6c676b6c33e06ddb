"""The emulation backend: the HLS sources compiled by g++ and run through ctypes.

hls4ml's ``compile()`` pattern: ``g++ -O2 -fPIC -shared -std=c++14`` over
``hls/zskip_top/zskip_top.cpp`` and the ``extern "C"`` bridge
``hls/emu/bridge.cpp``, with ``-I`` the ``ap_types`` folder that the installed
hls4ml package ships. The library's file name carries a hash of every HLS
source and of the flags, so a changed source or precision builds a new
library (dlopen caches by path); it is cached under ``$ZSKIP_CACHE_DIR`` or
``~/.cache/zskip`` and written to a temporary name first, then renamed, so
concurrent builds are safe. Every build first removes stale temporaries
(``tmp-PID-*.so`` of a process that is gone) and keeps the cache to
``$ZSKIP_CACHE_MAX`` (default 64) libraries, least recently used out first;
``zskip cache --list/--clear`` shows and empties it.

Each :class:`EmuDevice` loads its own copy of the library (``dlopen`` returns
one handle per path, and the kernels' function-local statics are the IP's
on-chip memory): two emulators in one process, in one thread or several,
never share scratch buffers. Calls on one device are serialised by its lock,
as a board runs one program at a time. ``close()`` unloads the copy.

Two environment variables, read when a library is built (both part of its
hash), select what is compiled:

- ``ZSKIP_EMU_FORM=synthesis``: the synthesis branch of the kernels
  (``-D__SYNTHESIS__``: streams between the DATAFLOW stages, the per-lane
  hazard history) instead of the C-simulation speed paths, with the small
  shim of ``hls/emu/synthesis_shim`` that lets hls4ml's ap_types headers
  compile; results and every counter equal the default form
  (tests/test_emu_forms.py). Default ``csim``.
- ``ZSKIP_EMU_ASSERTS=1``: hardware-rule assertions (hls/common/hw_assert.h);
  a violation raises :class:`DeviceError` naming kernel, loop and rule.

:class:`EmuDevice` implements :class:`zskip.host.devices.device.Device`. Its buffers
are numpy arrays whose *device copy* is separate: the kernels see only what
``sync_to_device()`` copied and the host sees results only after
``sync_from_device()``, exactly as with ``pynq.allocate`` on a board.
"""
from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Mapping, Optional, Tuple

import numpy as np
from numpy.ctypeslib import ndpointer

from ...models.checkpoint import pid_alive
from ...overlay import toolchain
from ...overlay.toolchain import cache_dir
from .device import DeviceError
from ..ip.precision import precision_types
from ..ip.program import ARENA_DTYPES, ARENAS, D_WORDS, HLS_DIR, S_WORDS, Limits, operand_extents

SOURCES = (HLS_DIR / "zskip_top" / "zskip_top.cpp", HLS_DIR / "emu" / "bridge.cpp")
# -fno-gnu-unique: the kernels' function-local statics (on-chip buffers, scoreboards) are
# otherwise STB_GNU_UNIQUE symbols, bound once per process across every loaded library, so two
# emulators with different precisions or maxima in one process would share (and overrun) them
CXX_FLAGS = ("-O2", "-fPIC", "-shared", "-std=c++14", "-fno-gnu-unique")
#: words written by zskip_emu_config (enum zskip_emu_config_word in bridge.cpp)
_CONFIG_FIELDS = ("version", "pe_lanes", "max_ch", "max_dim", "max_ksize", "max_features")


def ap_types_dir() -> Path:
    """The ap_types headers of the installed hls4ml package; DeviceError when they are missing."""
    try:
        return toolchain.ap_types_dir()
    except toolchain.ToolchainError as e:
        raise DeviceError(str(e)) from None


#: compiled libraries kept in the cache (least recently used out first); ``$ZSKIP_CACHE_MAX`` overrides
CACHE_MAX_LIBRARIES = 64
#: a temporary without a live owner process id older than this is stale (seconds)
STALE_AGE_S = 3600


def _cache_max() -> int:
    raw = os.environ.get("ZSKIP_CACHE_MAX")
    if raw is None:
        return CACHE_MAX_LIBRARIES
    if not raw.isdigit() or int(raw) < 1:
        raise DeviceError(f"ZSKIP_CACHE_MAX: must be an integer >= 1 (libraries kept), got {raw!r}")
    return int(raw)


def _is_stale(path: Path, now: float) -> bool:
    """A temporary ``tmp-PID-*`` whose process is gone, or an older ``tmp*`` left by a killed build."""
    parts = path.name.split("-")
    if len(parts) >= 3 and parts[0] == "tmp" and parts[1].isdigit():
        return not pid_alive(int(parts[1]))
    try:
        return now - path.stat().st_mtime > STALE_AGE_S
    except FileNotFoundError:
        return False


def cache_entries(directory: Optional[Path] = None):
    """The compiled libraries in the cache: (path, bytes, last use as a POSIX time), most recent first."""
    directory = directory or cache_dir()
    out = []
    for path in directory.glob("libzskip_*.so"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        out.append((path, st.st_size, st.st_mtime))
    return sorted(out, key=lambda e: -e[2])


def tidy_cache(directory: Optional[Path] = None, keep: Optional[int] = None) -> list:
    """Remove stale temporaries and all but the ``keep`` most recently used libraries; returns what went."""
    directory = directory or cache_dir()
    keep = _cache_max() if keep is None else keep
    now = time.time()
    removed = [p for p in directory.glob("tmp*.so") if _is_stale(p, now)]
    removed += [p for p, _, _ in cache_entries(directory)[keep:]]
    removed += [p.with_suffix(".log") for p in removed if p.with_suffix(".log").exists()]
    gone = []
    for path in removed:
        try:
            path.unlink()
            gone.append(path)
        except FileNotFoundError:
            pass
    return gone


def clear_cache(directory: Optional[Path] = None) -> list:
    """Remove every compiled library, build log and temporary of the cache; returns what went.

    A library that a running process has loaded stays mapped there; the next
    device compiles it again.
    """
    directory = directory or cache_dir()
    gone = []
    for pattern in ("libzskip_*.so", "libzskip_*.log", "tmp*.so"):
        for path in directory.glob(pattern):
            try:
                path.unlink()
                gone.append(path)
            except FileNotFoundError:
                pass
    return gone


def _source_hash(flags) -> str:
    h = hashlib.sha256()
    for path in sorted(HLS_DIR.rglob("*")):
        if path.suffix in (".h", ".cpp") and not path.name.endswith("_tb.cpp"):
            h.update(str(path.relative_to(HLS_DIR)).encode())
            h.update(path.read_bytes())
    h.update("\0".join(flags).encode())
    return h.hexdigest()[:16]


#: values of ZSKIP_EMU_FORM
EMU_FORMS = ("csim", "synthesis")
SYNTHESIS_SHIM = HLS_DIR / "emu" / "synthesis_shim"


def emu_form() -> str:
    """The emulation form the environment asks for (``ZSKIP_EMU_FORM``, default ``csim``)."""
    form = os.environ.get("ZSKIP_EMU_FORM", "") or "csim"
    if form not in EMU_FORMS:
        raise DeviceError(f"ZSKIP_EMU_FORM: must be one of {EMU_FORMS}, got {form!r}")
    return form


def emu_asserts() -> bool:
    """Whether the environment asks for hardware-rule assertions (``ZSKIP_EMU_ASSERTS``: 0 or 1)."""
    value = os.environ.get("ZSKIP_EMU_ASSERTS", "") or "0"
    if value not in ("0", "1"):
        raise DeviceError(f"ZSKIP_EMU_ASSERTS: must be 0 or 1, got {value!r}")
    return value == "1"


def compile_flags(defines: Mapping[str, object]) -> Tuple[str, ...]:
    """g++ flags for ``defines`` (macro -> value), the form and assertion flags of the
    environment (see the module docstring) and the ap_types include."""
    flags = CXX_FLAGS
    if emu_form() == "synthesis":
        flags += ("-D__SYNTHESIS__", f"-I{SYNTHESIS_SHIM}")
    if emu_asserts():
        flags += ("-DZSKIP_EMU_ASSERTS=1",)
    return flags + (f"-I{ap_types_dir()}",) + tuple(f"-D{k}={v}" for k, v in sorted(defines.items()))


def build_library(defines: Mapping[str, object], cxx: Optional[str] = None) -> Path:
    """Compile (or reuse from the cache) the emulation library for ``defines``."""
    cxx = cxx or os.environ.get("CXX", "g++")
    flags = compile_flags(defines)
    target = cache_dir() / f"libzskip_{_source_hash(flags + (cxx,))}.so"
    if target.is_file():
        try:
            os.utime(target)        # its last use: the cache keeps the most recently used ones
        except OSError:
            pass
    if target.parent.is_dir():
        tidy_cache(target.parent)
    if target.is_file():
        return target
    if shutil.which(cxx) is None:
        raise DeviceError(f"C++ compiler {cxx!r} not found on PATH: the emulation backend needs g++ "
                          f"(apt-get install g++, or set CXX)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tidy_cache(target.parent, keep=_cache_max() - 1)
    fd, tmp = tempfile.mkstemp(prefix=f"tmp-{os.getpid()}-", suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [cxx, *flags, *map(str, SOURCES), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            log = target.with_suffix(".log")
            log.write_text(f"{' '.join(cmd)}\n{proc.stderr}")
            errors = [l for l in proc.stderr.splitlines() if "error" in l] or proc.stderr.strip().splitlines() or [""]
            raise DeviceError(f"building the emulation library failed ({cxx} exit {proc.returncode}): "
                              f"{errors[0].strip()} (command and full output in {log})")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_private_copy(path: Path) -> ctypes.CDLL:
    """``path`` loaded from a private copy (RTLD_LOCAL), so its statics belong to this load alone.

    The copy lives in the cache directory (a temporary directory may be
    mounted noexec) and is unlinked as soon as it is mapped.
    """
    fd, tmp = tempfile.mkstemp(prefix=f"tmp-{os.getpid()}-", suffix=".so", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out)
        return ctypes.CDLL(tmp, mode=os.RTLD_LOCAL)
    except OSError as e:
        raise DeviceError(f"cannot load the emulation library {path}: {e}") from e
    finally:
        os.unlink(tmp)


def unload(lib: ctypes.CDLL) -> None:
    import _ctypes
    _ctypes.dlclose(lib._handle)


class EmuBuffer(np.ndarray):
    """A ``pynq.allocate``-like buffer: host array plus a separate device copy."""

    _addresses = itertools.count(0x1000_0000, 0x1000_0000)

    def __new__(cls, shape, dtype):
        obj = np.zeros(shape, dtype=dtype).view(cls)
        obj.device_copy = np.zeros(shape, dtype=dtype)
        obj.device_address = next(cls._addresses)
        obj.freed = False
        return obj

    def __array_finalize__(self, obj):
        # views and slices share nothing with the device: only the allocated
        # buffer itself syncs
        if obj is not None and not hasattr(self, "device_copy"):
            self.device_copy = None
            self.device_address = 0
            self.freed = False

    def _check(self):
        if self.device_copy is None:
            raise DeviceError("sync on a view of a buffer: sync the allocated buffer itself")
        if self.freed:
            raise DeviceError("buffer was freed")

    def sync_to_device(self) -> None:
        """Copy the host contents to the device (flush)."""
        self._check()
        np.copyto(self.device_copy, np.asarray(self))

    def sync_from_device(self) -> None:
        """Copy the device contents to the host (invalidate)."""
        self._check()
        np.copyto(np.asarray(self), self.device_copy)

    def freebuffer(self) -> None:
        """Release the device copy (as pynq frees the contiguous memory); later syncs raise DeviceError."""
        self.freed = True
        if self.device_copy is not None:
            self.device_copy = np.zeros(0, dtype=self.dtype)


class EmuDevice:
    """The IP emulated by the compiled HLS sources (see module docstring).

    ``precision``: a spec of :mod:`zskip.host.ip.precision` ("float32", "fixed16",
    "ap_fixed<W,I>" or class=type pairs); ``limits``: compiled maxima
    and PE lanes (default: config.h defaults).
    """

    name = "emu"

    def __init__(self, precision: str = "float32", limits: Optional[Limits] = None):
        self.precision = precision
        self.limits = (limits or Limits.defaults()).check()
        defines = dict(self.limits.defines())
        defines.update(precision_types(precision))
        self.library_path = build_library(defines)
        lib = load_private_copy(self.library_path)
        u32p = ndpointer(np.uint32, flags="C_CONTIGUOUS")
        f32p = ndpointer(np.float32, flags="C_CONTIGUOUS")
        # program, the arenas in ARENAS order (bridge.cpp), stats
        arena_ptrs = [f32p if ARENA_DTYPES[a] == np.float32 else u32p for a in ARENAS]
        lib.zskip_emu_run.argtypes = [u32p, *arena_ptrs, u32p, ctypes.c_uint32,
                                      ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint64)]
        lib.zskip_emu_run.restype = None
        lib.zskip_emu_config.argtypes = [u32p]
        lib.zskip_emu_config.restype = None
        lib.zskip_emu_violation.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
        lib.zskip_emu_violation.restype = ctypes.c_int
        self._lib = lib
        cfg = np.zeros(len(_CONFIG_FIELDS), dtype=np.uint32)
        lib.zskip_emu_config(cfg)
        #: the compiled configuration as the library reports it
        self.config = dict(zip(_CONFIG_FIELDS, (int(v) for v in cfg)))
        self._buffers = []
        self._version = None
        self._lock = threading.Lock()
        # unloaded when the device is closed or garbage-collected, whichever comes first
        self._unload = weakref.finalize(self, unload, lib)

    def _call(self, *args) -> Tuple[int, int]:
        """zskip_emu_run(*args) under the device lock; (version, cycles) registers."""
        ver, cyc = ctypes.c_uint32(0), ctypes.c_uint64(0)
        with self._lock:
            if self._lib is None:
                raise DeviceError("emu: the device was closed; create a new one (Accelerator.emulated())")
            self._lib.zskip_emu_run(*args, ctypes.byref(ver), ctypes.byref(cyc))
            # an assertion build's violation record of this start (hls/common/hw_assert.h)
            text = ctypes.create_string_buffer(512)
            violation = text.value.decode() if self._lib.zskip_emu_violation(text, len(text)) else None
        if violation:
            kernel, loop, rule = violation.split("\t")
            raise DeviceError(f"hardware rule violated in kernel {kernel}, loop {loop}: {rule}")
        return ver.value, cyc.value

    def allocate(self, shape, dtype=np.float32) -> EmuBuffer:
        if self._lib is None:
            raise DeviceError("emu: the device was closed; create a new one (Accelerator.emulated())")
        buf = EmuBuffer(shape, dtype)
        # weak references: a buffer the host dropped is freed with it, not kept until close()
        self._buffers = [r for r in self._buffers if r() is not None and not r().freed]
        self._buffers.append(weakref.ref(buf))
        return buf

    def version(self) -> int:
        """The version register (written by the IP on every start; read here from a start with no program)."""
        if self._version is None:
            empty_u = np.zeros(1, np.uint32)
            empty_f = np.zeros(1, np.float32)
            arenas = [empty_f if ARENA_DTYPES[a] == np.float32 else empty_u for a in ARENAS]
            self._version, _ = self._call(empty_u, *arenas, empty_u, 0)
        return self._version

    def run(self, buffers: Mapping[str, EmuBuffer], n_desc: int, timeout_s: float = 30.0) -> int:
        """Run ``n_desc`` descriptors on the buffers' device copies; returns the cycles register."""
        names = ("program",) + ARENAS + ("stats",)
        missing = [n for n in names if n not in buffers]
        if missing:
            raise DeviceError(f"run: buffers {missing} missing (need {names})")
        dev = {}
        for n in names:
            b = buffers[n]
            if not isinstance(b, EmuBuffer) or b.device_copy is None:
                raise DeviceError(f"run: buffer {n!r} was not allocated by this device")
            b._check()
            dev[n] = b.device_copy.reshape(-1)
        n_desc = int(n_desc)
        if n_desc < 0 or dev["program"].size < n_desc * D_WORDS:
            raise DeviceError(f"run: n_desc must be in [0, {dev['program'].size // D_WORDS}] "
                              f"(the program buffer's descriptors), got {n_desc}")
        if dev["stats"].size < n_desc * S_WORDS:
            raise DeviceError(f"run: the stats buffer holds {dev['stats'].size // S_WORDS} records, "
                              f"need {n_desc}")
        # a board would read or write out of its buffers silently; the emulator
        # refuses, since the same mistake here would corrupt the Python process
        sizes = {a: dev[a].size for a in ARENAS}
        for a in ARENAS:
            # the data ports are 128-bit (hls/common/wide_port.h): the IP takes
            # each arena as 16-byte beats
            if dev[a].ctypes.data % 16:
                raise DeviceError(f"run: the {a} arena's device copy is not 16-byte aligned "
                                  f"(the 128-bit data ports need it)")
        for i in range(n_desc):
            for arena, end in operand_extents(dev["program"][i * D_WORDS:(i + 1) * D_WORDS]).items():
                if end > sizes[arena]:
                    raise DeviceError(f"run: descriptor {i} reaches word {end} of the {arena} arena, "
                                      f"which has {sizes[arena]} words")
        self._version, cycles = self._call(*(dev[n] for n in names), int(n_desc))
        return int(cycles)

    def close(self) -> None:
        """Free every buffer and unload this device's copy of the library (later runs raise DeviceError)."""
        with self._lock:
            for ref in self._buffers:
                b = ref()
                if b is not None:
                    b.freebuffer()
            self._buffers.clear()
            if self._lib is not None:
                self._lib = None
                self._unload()
