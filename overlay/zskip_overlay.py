"""The zskip PYNQ overlay: ``ZskipOverlay`` and the driver class of the accelerator IP.

On a board (Jupyter)::

    from zskip.overlay import ZskipOverlay
    overlay = ZskipOverlay()                 # zskip.bit + zskip.hwh next to this module
    from zskip.host.devices.pynq_device import PynqDevice
    device = PynqDevice(overlay)             # the driver takes the overlay

Importing this module on a machine without a board works (pynq may warn).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .pynq_import import import_pynq
from .boards import ip_identity

pynq = import_pynq()

#: default bitstream: ``make -C overlay`` copies zskip.bit and zskip.hwh here
DEFAULT_BITFILE = Path(__file__).resolve().parent / "zskip.bit"


class ZskipAcceleratorIP(pynq.DefaultIP):
    """PYNQ driver of the ``zskip_top`` HLS IP (bound by its VLNV from overlay/ip.ini)."""

    bindto = [ip_identity().vlnv]


class ZskipOverlay(pynq.Overlay):
    """The zskip bitstream: one ``zskip_top`` accelerator on the PS's HP port(s).

    Args:
        bitfile: path of the .bit (the .hwh must lie beside it); default
            ``zskip.bit`` next to this module.
        **kwargs: passed to ``pynq.Overlay`` (e.g. ``download=False``,
            ``device=RemoteDevice(...)``).
    """

    def __init__(self, bitfile: Optional[str] = None, **kwargs):
        path = Path(bitfile) if bitfile is not None else DEFAULT_BITFILE
        if not path.is_file():
            raise FileNotFoundError(f"bitfile not found: {path} (build it with `make -C overlay BOARD=...` "
                                    f"or pass the path of a zskip.bit)")
        if not path.with_suffix(".hwh").is_file():
            raise FileNotFoundError(f"{path.with_suffix('.hwh')} not found: the .hwh must lie beside the .bit")
        super().__init__(os.fspath(path), **kwargs)
