"""The cycle timer's plumbing on the emulated board: block-design timer -> driver -> stats.

The emulated board models the AXI Timer (PG079: capture mode, T0INT write-one-
to-clear, hold until cleared) and the HLS adapter's interrupt (GIER, IP_IER,
IP_ISR toggle-on-write) on one virtual PL clock; an IP run lasts the cycles its
counters report. So with free bus accesses the driver must measure exactly the
``cycles`` register, and with costly ones the same skew on every run; a driver
that reads the wrong register, forgets to enable the interrupt, or leaves
IP_ISR or T0INT set (no new capture) fails here. The board test
(test_pynq_device_board.py) compares real measurements with the counters.
"""
import numpy as np
import pytest

from zskip.host.devices.axi_timer import REGISTERS
from zskip.host.devices.emulated_board import EmulatedBoard, EmulatedTimer, VirtualClock, _Bus, emu_kernel
from zskip.host.devices.pynq_device import PynqDevice
from zskip.host.runtime.accelerator import Accelerator
from zskip.overlay.boards import timer_identity

from test_pynq_device_emu import allocate_run_buffers, conv_fwd_program


@pytest.fixture(scope="module")
def kernel():
    return emu_kernel()


def open_device(kernel, **board_args):
    board = EmulatedBoard(kernel=kernel, **board_args)
    return PynqDevice(board, close_overlay=True)


def run_conv(device, rng, size):
    x = np.maximum(rng.standard_normal((1, 2, size, size)), 0).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    lay, off, words, _ = conv_fwd_program(x, w, b, 1, 1)
    bufs = allocate_run_buffers(device, lay, 1)
    bufs["program"][:] = words
    bufs["act"][off["x"]:off["x"] + x.size] = x.reshape(-1)
    bufs["wgt"][off["wgt"]:off["wgt"] + w.size] = w.reshape(-1)
    for buf in bufs.values():
        buf.sync_to_device()
    return device.run(bufs, n_desc=1, timeout_s=10)


def test_free_bus_measures_exactly_the_counters(kernel, rng):
    device = open_device(kernel, bus_access_cycles=0)
    try:
        assert device.timer is not None
        for size in (5, 9, 7):  # every run needs a new capture: ISR and T0INT cleared in between
            cycles = run_conv(device, rng, size)
            assert cycles > 0
            assert device.last_measured_cycles == cycles
    finally:
        device.close()


def test_bus_skew_is_the_same_on_every_run(kernel, rng):
    device = open_device(kernel, bus_access_cycles=20)
    try:
        skews = []
        for size in (5, 11, 8):
            cycles = run_conv(device, rng, size)
            skews.append(device.last_measured_cycles - cycles)
        # the TCR0 read and the AP_START write each cost 20 cycles before the IP starts counting
        assert skews[0] > 0 and skews == [skews[0]] * 3
    finally:
        device.close()


def test_accelerator_stats_carry_measured_cycles(kernel):
    device = open_device(kernel, bus_access_cycles=0)
    acc = Accelerator(device)
    try:
        rng = np.random.default_rng(3)
        x = np.maximum(rng.standard_normal((2, 3, 8, 8)), 0).astype(np.float32)
        w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        acc.conv_forward(x, w, np.zeros(4, np.float32), stride=1, pad=1, relu=True)
        assert acc.last_stats["measured_cycles"] == acc.last_stats["cycles_register"] > 0
    finally:
        device.close()


def test_training_step_program_reports_measured_cycles(kernel):
    from zskip.host.runtime.program_backend import ProgramBackend
    from zskip.models.networks import get_model
    model = get_model("lenet5")
    device = open_device(kernel, bus_access_cycles=0)
    backend = ProgramBackend(Accelerator(device), "emulated-board")
    try:
        rng = np.random.default_rng(5)
        params, velocities = model.init_params(0), model.zero_velocities()
        x = rng.standard_normal((2, *model.input_shape)).astype(np.float32)
        backend.train_step(model, params, velocities, x, np.array([1, 7]), 0.01, 0.9, 0.0)
        cycles = backend.last_cycles
        # one start ran the whole step: the timer saw exactly the counters' total
        assert cycles["cycles"] > 0 and cycles["measured_cycles"] == cycles["cycles"]
    finally:
        backend.close()


def test_bitstream_without_timer_has_no_measurement(kernel, rng):
    device = open_device(kernel, timer=False)
    acc = Accelerator(device)
    try:
        assert device.timer is None
        run_conv(device, rng, 5)
        assert device.last_measured_cycles is None
        x = np.ones((1, 1, 4, 4), np.float32)
        acc.conv_forward(x, np.ones((1, 1, 3, 3), np.float32), np.zeros(1, np.float32), stride=1, pad=0, relu=True)
        assert "measured_cycles" not in acc.last_stats
    finally:
        device.close()


def test_timer_found_by_the_block_design_vlnv(kernel):
    board = EmulatedBoard(kernel=kernel)
    try:
        cell = timer_identity()
        assert board.ip_dict[cell.cell]["type"] == cell.vlnv == "xilinx.com:ip:axi_timer:2.0"
        assert board.ip_dict[cell.cell]["registers"] is REGISTERS
    finally:
        board.close()


# -- the emulated AXI Timer against PG079's definitions ------------------------
@pytest.fixture
def timer():
    clock = VirtualClock(0)
    return clock, EmulatedTimer(_Bus(clock))


def test_register_offsets_are_pg079s():
    offsets = {name: reg["address_offset"] for name, reg in REGISTERS.items()}
    assert offsets == {"TCSR0": 0x00, "TLR0": 0x04, "TCR0": 0x08, "TCSR1": 0x10, "TLR1": 0x14, "TCR1": 0x18}
    bits = {f: spec["bit_offset"] for f, spec in REGISTERS["TCSR0"]["fields"].items()}
    assert (bits["MDT0"], bits["CAPT0"], bits["ARHT0"], bits["LOAD0"], bits["ENT0"], bits["T0INT"]) == \
        (0, 3, 4, 5, 7, 8)


def test_capture_holds_until_cleared(timer):
    clock, t = timer
    r = t.register_map
    r.TLR0 = 100
    r.TCSR0.LOAD0 = 1
    r.TCSR0.LOAD0 = 0
    r.TCSR0.MDT0 = 1
    r.TCSR0.CAPT0 = 1
    r.TCSR0.ENT0 = 1
    clock.advance_to(50)
    assert int(r.TCR0) == 150          # counts up from the load value
    t.capture(70)
    assert (int(r.TLR0), r.TCSR0.T0INT) == (170, 1)
    t.capture(90)                      # ARHT0 = 0: the first capture is held
    assert int(r.TLR0) == 170
    r.TCSR0.T0INT = 1                  # write one to clear
    assert r.TCSR0.T0INT == 0
    t.capture(95)
    assert int(r.TLR0) == 195
    r.TCSR0.CAPT0 = 0                  # capture trigger disabled: no capture
    r.TCSR0.T0INT = 1
    t.capture(99)
    assert (int(r.TLR0), r.TCSR0.T0INT) == (195, 0)


def test_hls_interrupt_status_toggles_on_write(kernel):
    board = EmulatedBoard(kernel=kernel, bus_access_cycles=0)
    try:
        regs = board.ip.register_map
        board.ip._set_word("IP_ISR", 1)
        regs.IP_ISR = 1
        assert regs.IP_ISR.CHAN0_INT_ST == 0
        regs.IP_ISR = 1                    # toggles it back on: why the driver writes only when it is set
        assert regs.IP_ISR.CHAN0_INT_ST == 1
    finally:
        board.close()
