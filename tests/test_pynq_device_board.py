"""The driver on a real board: `pytest -m board` on the board itself, or from a
workstation with ZSKIP_REMOTE_HOST=<board address> (PYNQ RemoteDevice).
ZSKIP_BITFILE and ZSKIP_BOARD (a boards.ini section) say which bitstream."""
import os

import numpy as np
import pytest

from zskip.host.ip import program as P
from zskip.host.devices.pynq_device import open_pynq_device, open_remote_device
from zskip.models import reference as R

from test_pynq_device_emu import allocate_run_buffers, conv_fwd_program

pytestmark = pytest.mark.board


@pytest.fixture(scope="module")
def device():
    bitfile, board = os.environ.get("ZSKIP_BITFILE"), os.environ.get("ZSKIP_BOARD")
    host = os.environ.get("ZSKIP_REMOTE_HOST")
    dev = open_remote_device(host, bitfile, board=board) if host else open_pynq_device(bitfile, board=board)
    yield dev
    dev.close()


def test_conv_fwd_on_the_board_matches_reference(device):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((2, 3, 9, 9)), 0).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    lay, off, words, y_shape = conv_fwd_program(x, w, b, 1, 1)
    bufs = allocate_run_buffers(device, lay, 1)
    bufs["program"][:] = words
    bufs["act"][off["x"]:off["x"] + x.size] = x.reshape(-1)
    bufs["wgt"][off["wgt"]:off["wgt"] + w.size] = w.reshape(-1)
    bufs["wgt"][off["bias"]:off["bias"] + b.size] = b
    for buf in bufs.values():
        buf.sync_to_device()
    cycles = device.run(bufs, n_desc=1, timeout_s=10)
    for buf in bufs.values():
        buf.sync_from_device()
    y_ref, _ = R.relu_forward(R.conv2d_forward(x.astype(np.float64), w, b, 1, 1))
    y = bufs["act"][off["y"]:off["y"] + y_ref.size].reshape(y_ref.shape)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    assert P.decode_stats(bufs["stats"][:P.S_WORDS])["error"] == "NONE"
    assert cycles > 0
