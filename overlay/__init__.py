"""Board data, Vivado block-design scripts, the PYNQ overlay class and the HLS tool
side: the toolchain paths, the lint of the HLS sources (``hls_lint``) and the
Vitis HLS report readers (``vitis_reports``).

``ZskipOverlay`` is imported on first use so that reading board data does not
import pynq. Every import of pynq in zskip goes through :func:`import_pynq`,
which turns pynq's best-known install failure into a message saying the fix.
"""


from .pynq_import import PynqImportError, import_pynq


def __getattr__(name):
    if name == "ZskipOverlay":
        from .zskip_overlay import ZskipOverlay
        return ZskipOverlay
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ZskipOverlay", "import_pynq", "PynqImportError"]
