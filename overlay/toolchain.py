"""Where the HLS tool pieces live on this machine: the ap_types headers and the build cache.

Shared by everything that compiles the HLS sources with g++ (the emulation
backend in ``zskip.host.devices.emu``, the on-chip footprint probe in
``overlay/resources.py``, the Makefile's C simulation), so that the lower
layer (overlay) owns the fact and the host imports it.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path


class ToolchainError(RuntimeError):
    """A tool piece (hls4ml's ap_types headers) is missing."""


def ap_types_dir() -> Path:
    """The ap_types headers of the installed hls4ml package (found without importing it)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError("the hls4ml package is not installed: it provides the ap_types headers "
                             "(pip install hls4ml)")
    path = Path(list(spec.submodule_search_locations)[0]) / "templates" / "vivado" / "ap_types"
    if not (path / "ap_fixed.h").is_file():
        raise ToolchainError(f"ap_fixed.h not found in {path} (hls4ml install incomplete?)")
    return path


def cache_dir() -> Path:
    """The folder of compiled artefacts: ``$ZSKIP_CACHE_DIR`` or ``~/.cache/zskip``."""
    return Path(os.environ.get("ZSKIP_CACHE_DIR") or Path.home() / ".cache" / "zskip")
