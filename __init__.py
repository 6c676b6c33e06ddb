"""zskip: CNN training on PYNQ FPGA boards with zero-skipping HLS kernels.

Import packages: ``zskip.models`` (numpy reference, models, datasets, training
loop), ``zskip.host`` (accelerator runtime and backends, CLI) and
``zskip.overlay`` (board data and the PYNQ overlay class).
"""
from pathlib import Path

__version__ = "0.1.0"

#: Root of the shipped HLS sources (``hls/``), compiled by the emulation backend.
HLS_DIR = Path(__file__).resolve().parent / "hls"
