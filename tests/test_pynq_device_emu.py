"""The real PYNQ driver on the emulated board with the C-sim kernels behind the IP.

The program goes through device memory exactly as on a board: descriptors and
operands flushed, pointer registers written by field name, AP_START, AP_DONE
polled, results invalidated. Results are compared with the numpy reference.
"""
import numpy as np
import pytest

from zskip.host.ip import program as P
from zskip.host.devices.device import DeviceError, DeviceTimeout
from zskip.host.devices.emulated_board import EmulatedBoard, emu_kernel
from zskip.host.devices.pynq_device import PynqDevice
from zskip.models import reference as R


@pytest.fixture(scope="module")
def kernel():
    return emu_kernel()  # compiled once per module; config.h defaults, like the emu backend


@pytest.fixture
def device(kernel):
    board = EmulatedBoard(kernel=kernel)
    dev = PynqDevice(board)  # refuses the IP unless the compiled ZSKIP_VERSION matches version.h
    yield dev
    dev.close()
    board.close()


def conv_fwd_program(x, w, b, stride, pad, skip_zeros=True):
    """One CONV_FWD descriptor with its arena layout."""
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    oh, ow = R.conv_output_shape(x.shape, w.shape, stride, pad)[2:]
    lay = P.ArenaLayout()
    off = {"x": lay.alloc("act", "x", x.size), "y": lay.alloc("act", "y", n * k * oh * ow),
           "wgt": lay.alloc("wgt", "w", w.size), "bias": lay.alloc("wgt", "b", k),
           "mask_out": lay.alloc("bits", "mask", P.bit_words(n * k * oh * ow))}
    flags = ("RELU", "SKIP_ZEROS") if skip_zeros else ("RELU",)
    words = P.encode("CONV_FWD", flags=flags, n=n, c=c, h=h, w=wd, k=k, r=r, s=s,
                     stride=stride, pad=pad, **off)
    return lay, off, words, (n, k, oh, ow)


def allocate_run_buffers(device, lay, n_desc):
    bufs = {"program": device.allocate((n_desc * P.D_WORDS,), np.uint32),
            "stats": device.allocate((n_desc * P.S_WORDS,), np.uint32)}
    for arena in P.ARENAS:
        bufs[arena] = device.allocate((lay.size(arena),), P.ARENA_DTYPES[arena])
    return bufs


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1)])
def test_conv_fwd_descriptor_matches_reference(device, stride, pad):
    rng = np.random.default_rng(stride)
    x = np.maximum(rng.standard_normal((2, 3, 9, 9)), 0).astype(np.float32)  # post-ReLU: ~half zeros
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    lay, off, words, y_shape = conv_fwd_program(x, w, b, stride, pad)
    bufs = allocate_run_buffers(device, lay, 1)
    bufs["program"][:] = words
    bufs["act"][off["x"]:off["x"] + x.size] = x.reshape(-1)
    bufs["wgt"][off["wgt"]:off["wgt"] + w.size] = w.reshape(-1)
    bufs["wgt"][off["bias"]:off["bias"] + b.size] = b
    for buf in bufs.values():
        buf.sync_to_device()

    cycles = device.run(bufs, n_desc=1, timeout_s=30)

    for name in ("act", "bits", "stats"):
        bufs[name].sync_from_device()
    y_ref, mask_ref = R.relu_forward(R.conv2d_forward(x.astype(np.float64), w, b, stride, pad))
    size = int(np.prod(y_shape))
    y = bufs["act"][off["y"]:off["y"] + size].reshape(y_shape)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    mask = P.unpack_bits(bufs["bits"][off["mask_out"]:], y_shape)
    np.testing.assert_array_equal(mask, mask_ref)
    stats = P.decode_stats(bufs["stats"][:P.S_WORDS])
    macs = R.conv_macs(x, np.ones(y_shape), w.shape, stride, pad)["fwd"]
    assert stats["error"] == "NONE"
    assert stats["macs_dense"] == macs["macs_dense"]
    assert stats["macs_executed"] < stats["macs_dense"]  # zeros of x were skipped
    assert cycles == stats["cycles"] > 0                 # the register is the program's total


def test_missing_invalidate_leaves_host_stale(device):
    rng = np.random.default_rng(7)
    x = np.abs(rng.standard_normal((1, 2, 6, 6))).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    b = np.ones(2, np.float32)
    lay, off, words, y_shape = conv_fwd_program(x, w, b, 1, 0)
    bufs = allocate_run_buffers(device, lay, 1)
    bufs["program"][:] = words
    bufs["act"][off["x"]:off["x"] + x.size] = x.reshape(-1)
    bufs["wgt"][off["wgt"]:off["wgt"] + w.size] = w.reshape(-1)
    bufs["wgt"][off["bias"]:off["bias"] + 2] = b
    for buf in bufs.values():
        buf.sync_to_device()
    device.run(bufs, n_desc=1)
    size = int(np.prod(y_shape))
    assert np.all(bufs["act"][off["y"]:off["y"] + size] == 0)  # not yet invalidated
    bufs["act"].sync_from_device()
    assert np.any(bufs["act"][off["y"]:off["y"] + size] != 0)


def test_descriptor_beyond_its_buffer_is_a_bus_fault_not_a_crash(device):
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    lay, off, words, _ = conv_fwd_program(x, w, np.zeros(1, np.float32), 1, 0)
    bufs = allocate_run_buffers(device, lay, 1)
    bufs["act"] = device.allocate((4,), np.float32)  # far smaller than the descriptor's x and y
    bufs["program"][:] = words
    for buf in bufs.values():
        buf.sync_to_device()
    # reported at once, naming the fault, not as a timeout (issue 13, item 9)
    with pytest.raises(DeviceError, match="stalled on a bus fault: descriptor 0 reaches word .* act buffer"):
        device.run(bufs, n_desc=1, timeout_s=30)
    assert "act buffer" in str(device.ip.fault)


def test_lenet_training_step_through_the_driver_matches_reference():
    """A whole LeNet-5 step (every op of the training loop) via Accelerator -> PynqDevice -> emulated board."""
    from zskip.host.runtime.accelerator import Accelerator
    from zskip.host.devices.pynq_device import open_emulated_board_device
    from zskip.models.networks import get_model
    from zskip.models.ops import ReferenceOps
    from zskip.models.step import train_step

    model = get_model("lenet5")
    params = model.init_params(seed=3)
    velocities = {k: np.zeros_like(v) for k, v in params.items()}
    rng = np.random.default_rng(3)
    x = rng.random((4, 1, 28, 28)).astype(np.float32) * (rng.random((4, 1, 28, 28)) > 0.7)
    y = rng.integers(0, 10, 4)
    args = dict(lr=0.05, momentum=0.9, weight_decay=1e-4, account=False)
    expected = train_step(ReferenceOps(), model, params, velocities, x, y, **args)
    device = open_emulated_board_device()
    try:
        acc = Accelerator(device)
        got = train_step(acc, model, params, velocities, x, y, **args)
        assert device.ip.starts > 10  # one start per op: the driver really ran each of them
    finally:
        device.close()
    assert device.overlay.device.allocated == 0  # every buffer freed, board stopped
    assert got.loss == pytest.approx(expected.loss, rel=1e-5)
    for key in params:
        np.testing.assert_allclose(got.params[key], expected.params[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_training_loop_runs_on_the_emulated_board_like_the_reference():
    """models.train.train, unchanged, on the board driver: same losses and weights as the reference."""
    from zskip.host.runtime.accelerator import Accelerator
    from zskip.host.backends import OpsBackend, make_backend
    from zskip.host.devices.pynq_device import open_emulated_board_device
    from zskip.models.datasets import synthetic
    from zskip.models.networks import get_model
    from zskip.models.train import train

    model = get_model("lenet5")
    data = synthetic((1, 28, 28), 10, n_train=48, n_test=16)
    kwargs = dict(epochs=1, batch_size=16, lr=0.05, momentum=0.9, seed=1, quiet=True)
    expected = train(make_backend("reference"), model, data, **kwargs)
    backend = OpsBackend(Accelerator(open_emulated_board_device()), "board-emu")
    try:
        got = train(backend, model, data, **kwargs)
    finally:
        backend.close()
    assert got.report["epochs"][0]["train_loss"] == pytest.approx(expected.report["epochs"][0]["train_loss"], rel=1e-4)
    for key, value in expected.params.items():
        np.testing.assert_allclose(got.params[key], value, rtol=1e-3, atol=1e-5, err_msg=key)
    # the board's stats records and cycles register came back through the driver:
    # executed MACs equal the reference's count of nonzero MACs, pass by pass
    for layer in got.report["epochs"][0]["layers"]:
        for pass_name, macs in layer["macs"].items():
            assert layer["kernel"][pass_name]["macs_executed"] == macs["macs_nonzero"], (layer["index"], pass_name)
            assert layer["kernel"][pass_name]["cycles_register"] > 0
