"""The PYNQ driver (host/devices/pynq_device.py) against the emulated board (host/devices/emulated_board.py).

A small Python kernel stands in for the accelerator here so that the driver's
own duties are tested in isolation: addresses by register name, flush and
invalidate, the timeout, the version check, freeing buffers. The C-sim kernel
behind the same board is tested in test_pynq_device_emu.py.
"""
import numpy as np
import pytest

from zskip.host.devices.device import DeviceError, DeviceTimeout
from zskip.host.devices.emulated_board import EmulatedBoard
from zskip.host.devices.pynq_device import PynqDevice
from zskip.host.ip.register_map import load_top

TOP = load_top()

VERSION = 0x00010002


def saxpy_kernel(arrays, n_desc):
    """grad[:n] = 2 * act[:n] + wgt[:n]; stats[0] = n; fixed version; cycles = 10 n + 7."""
    n = n_desc
    arrays["grad"][:n] = 2 * arrays["act"][:n] + arrays["wgt"][:n]
    arrays["stats"][0] = n
    return {"version": VERSION, "cycles": 10 * n + 7 + (1 << 33)}


def open_device(hang=False, version=VERSION):
    board = EmulatedBoard(kernel=saxpy_kernel, hang=hang, interface=TOP)
    try:
        return board, PynqDevice(board, interface=TOP, expected_version=version, probe_timeout_s=1.0)
    except Exception:
        board.close()
        raise


def buffers(device, n):
    names = TOP.pointer_arguments
    dtypes = {"program": np.uint32, "bits": np.uint32, "stats": np.uint32}
    return {name: device.allocate((n,), dtypes.get(name, np.float32)) for name in names}


@pytest.fixture
def device():
    board, dev = open_device()
    yield dev
    dev.close()
    board.close()


def test_run_moves_data_through_registers_and_returns_cycles(device):
    rng = np.random.default_rng(0)
    bufs = buffers(device, 64)
    bufs["act"][:] = rng.standard_normal(64)
    bufs["wgt"][:] = rng.standard_normal(64)
    expected = 2 * bufs["act"][:50] + bufs["wgt"][:50]
    for b in bufs.values():
        b.sync_to_device()
    cycles = device.run(bufs, n_desc=50)
    for b in bufs.values():
        b.sync_from_device()
    assert cycles == 10 * 50 + 7 + (1 << 33)  # both halves of the 64-bit register
    assert bufs["act"].device_address >> 32, "addresses above 4 GiB test both pointer words"
    np.testing.assert_array_equal(bufs["grad"][:50], expected)
    assert np.all(bufs["grad"][50:] == 0)
    assert bufs["stats"][0] == 50


def test_missing_flush_is_caught(device):
    bufs = buffers(device, 8)
    bufs["act"][:] = 1.0
    bufs["wgt"][:] = 3.0
    bufs["wgt"].sync_to_device()          # act never flushed: device still holds zeros
    bufs["grad"].sync_to_device()
    device.run(bufs, n_desc=8)
    bufs["grad"].sync_from_device()
    assert np.all(bufs["grad"] == 3.0), "the IP must not see host data that was not flushed"
    assert not np.allclose(bufs["grad"], 2 * 1.0 + 3.0)


def test_missing_invalidate_is_caught(device):
    bufs = buffers(device, 8)
    bufs["act"][:] = 1.0
    for b in bufs.values():
        b.sync_to_device()
    device.run(bufs, n_desc=8)
    assert np.all(bufs["grad"] == 0), "results must not reach the host before sync_from_device"
    bufs["grad"].sync_from_device()
    assert np.all(bufs["grad"] == 2.0)


def test_hung_ip_times_out_with_clear_error():
    board = EmulatedBoard(kernel=saxpy_kernel, hang=True, interface=TOP)
    try:
        with pytest.raises(DeviceTimeout, match=r"zskip_top_0 did not raise AP_DONE within 0.2 s"):
            PynqDevice(board, interface=TOP, expected_version=VERSION, probe_timeout_s=0.2)
        assert board.ip.starts == 1
    finally:
        board.close()


def test_hang_during_run_times_out(device):
    bufs = buffers(device, 4)
    device.ip.hang = True
    with pytest.raises(DeviceTimeout, match="AP_DONE"):
        device.run(bufs, n_desc=4, timeout_s=0.1)


def test_version_mismatch_refused_and_buffers_freed():
    board = EmulatedBoard(kernel=saxpy_kernel, interface=TOP)
    try:
        with pytest.raises(DeviceError, match=r"version 0x10002 but this driver needs 0x10003"):
            PynqDevice(board, interface=TOP, expected_version=VERSION + 1, probe_timeout_s=1.0)
        assert board.device.allocated == 0
    finally:
        board.close()


def test_close_frees_every_buffer_and_refuses_later_runs():
    board, dev = open_device()
    try:
        bufs = buffers(dev, 16)
        assert board.device.allocated == len(bufs)
        with dev:
            pass
        assert board.device.allocated == 0
        with pytest.raises(DeviceError, match="closed"):
            dev.run(bufs, n_desc=1)
        with pytest.raises(DeviceError, match="freed"):
            bufs["act"].sync_to_device()
    finally:
        board.close()


@pytest.mark.parametrize("bad, message", [
    ({"n_desc": -1}, r"n_desc must be an integer in \[0, 4294967295\]"),
    ({"n_desc": 1 << 32}, r"n_desc must be an integer in \[0, 4294967295\]"),
    ({"timeout_s": 0}, "timeout_s must be > 0"),
])
def test_bad_arguments_named(device, bad, message):
    kwargs = {"n_desc": 1, **bad}
    with pytest.raises(ValueError, match=message):
        device.run(buffers(device, 4), **kwargs)


def test_missing_buffer_named(device):
    bufs = buffers(device, 4)
    del bufs["bits"]
    with pytest.raises(ValueError, match=r"missing \['bits'\]"):
        device.run(bufs, n_desc=1)


def test_pointer_outside_device_memory_stalls_the_ip(device):
    bufs = buffers(device, 4)
    bufs["act"] = np.zeros(4, np.float32).view(type(bufs["act"]))
    bufs["act"].device_address = 0x10  # an address no buffer owns
    # reported at once, naming the fault, not as a timeout (issue 13, item 9)
    with pytest.raises(DeviceError, match="bus fault: address 0x10 is outside every allocated buffer"):
        device.run(bufs, n_desc=1, timeout_s=30)
    assert "outside every allocated buffer" in str(device.ip.fault)


def test_start_returns_before_the_ip_finishes_and_wait_collects_cycles(device):
    """start() does not block: the host can prepare the next batch meanwhile (ping-pong)."""
    import threading
    release = threading.Event()
    kernel = device.ip.kernel

    def slow_kernel(arrays, n_desc):
        release.wait(5)
        return kernel(arrays, n_desc)

    device.ip.kernel = slow_kernel
    bufs = buffers(device, 4)
    device.start(bufs, n_desc=3)
    assert not device.ip.register_map.CTRL.AP_DONE  # still running
    release.set()
    assert device.wait(timeout_s=5) == 10 * 3 + 7 + (1 << 33)


def test_hdl_keyword_renamed_registers_are_accepted_and_others_refused():
    """Vitis HLS appends _r to an argument named like an HDL keyword; the driver accepts that
    spelling, and refuses a map that lacks a field in either spelling."""
    from pynq.registers import RegisterMap

    def board_with_renamed(arg, drop=False):
        board = EmulatedBoard(kernel=saxpy_kernel, interface=TOP)
        regs = TOP.pynq_registers()
        for field in TOP.data_fields(arg):
            entry = regs.pop(field)
            if not drop:
                regs[arg + "_r" + field[len(arg):]] = entry
        board.ip.register_map = RegisterMap.create_subclass("renamed", regs)(board.ip.bus_view)
        return board

    board = board_with_renamed("program")
    try:
        dev = PynqDevice(board, interface=TOP, expected_version=VERSION, probe_timeout_s=1.0)
        bufs = buffers(dev, 8)
        bufs["act"][:] = 1.0
        for b in bufs.values():
            b.sync_to_device()
        dev.run(bufs, n_desc=8)
        bufs["grad"].sync_from_device()
        assert np.all(bufs["grad"] == 2.0)
        dev.close()
    finally:
        board.close()
    board = board_with_renamed("n_desc", drop=True)
    try:
        with pytest.raises(DeviceError, match=r"register map lacks \['n_desc'\]"):
            PynqDevice(board, interface=TOP, expected_version=VERSION, probe_timeout_s=1.0)
    finally:
        board.close()
