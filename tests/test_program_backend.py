"""Program mode: the recorded step program vs op-by-op runs and the reference; device-held weights."""
import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.host.ip.program import OPCODES, decode
from zskip.host.runtime.program_backend import ProgramBackend
from zskip.models import step
from zskip.models.check import CapturingOps
from zskip.models.networks import get_model
from zskip.models.ops import ReferenceOps

LR, MOMENTUM, WD = 0.02, 0.9, 1e-4

# opcode each Ops method becomes (independent of the recorder's table)
_OPCODE_OF = {"conv_forward": "CONV_FWD", "conv_backward_data": "CONV_BWD_DATA",
              "conv_backward_weight": "CONV_BWD_WEIGHT", "maxpool_forward": "MAXPOOL_FWD",
              "maxpool_backward": "MAXPOOL_BWD", "linear_forward": "FC_FWD", "linear_backward_data": "FC_BWD_DATA",
              "linear_backward_weight": "FC_BWD_WEIGHT", "softmax_xent": "SOFTMAX_XENT", "sgd_update": "SGD_UPDATE"}


@pytest.fixture(scope="module")
def lenet():
    return get_model("lenet5")


@pytest.fixture(scope="module")
def batch(lenet):
    rng = np.random.default_rng(5)
    x = rng.random((16, *lenet.input_shape), dtype=np.float32)
    x[x < 0.4] = 0                      # sparse inputs, like MNIST's background
    return x, rng.integers(0, 10, 16)


@pytest.fixture
def backend():
    b = ProgramBackend(Accelerator.emulated(), "emu")
    yield b
    b.close()


def test_program_has_one_descriptor_per_op_call_in_step_order(lenet, backend, batch):
    capture = CapturingOps(ReferenceOps())
    params, velocities = lenet.init_params(0), lenet.zero_velocities()
    step.train_step(capture, lenet, params, velocities, *batch, LR, MOMENTUM, WD)
    prog = backend.program(lenet, "train", 16, LR, MOMENTUM, WD)
    decoded = [decode(w) for w in prog.words]
    assert [d["opcode"] for d in decoded] == [_OPCODE_OF[op] for op, _ in capture.outputs]
    sgd = [d for d in decoded if d["opcode"] == "SGD_UPDATE"]
    assert sorted(d["count"] for d in sgd) == sorted(p.size for p in params.values())
    assert sgd[0]["lr"] == pytest.approx(LR) and sgd[0]["momentum"] == pytest.approx(MOMENTUM)
    # two buffer sets for ping-pong, the program written once into each
    assert len(prog.slots) == 2
    assert all(np.array_equal(s["program"].reshape(-1), prog.words.reshape(-1)) for s in prog.slots)
    assert set(OPCODES) >= {d["opcode"] for d in decoded}


def test_program_step_is_bit_identical_to_op_by_op_and_close_to_reference(lenet, backend, batch):
    params, velocities = lenet.init_params(0), lenet.zero_velocities()
    ops_acc = Accelerator.emulated()
    by_ops = step.train_step(ops_acc, lenet, params, velocities, *batch, LR, MOMENTUM, WD)
    ref = step.train_step(ReferenceOps(), lenet, params, velocities, *batch, LR, MOMENTUM, WD)
    prog = backend.train_step(lenet, params, velocities, *batch, LR, MOMENTUM, WD)
    assert prog.loss == by_ops.loss
    assert prog.loss == pytest.approx(ref.loss, rel=1e-5)
    for key in params:
        assert np.array_equal(prog.params[key], by_ops.params[key]), key
        assert np.array_equal(prog.velocities[key], by_ops.velocities[key]), key
        np.testing.assert_allclose(prog.params[key], ref.params[key], rtol=1e-4, atol=1e-6)
    # per layer and pass: the kernels' counters from the program's stats records equal the
    # one-call-per-op counters, and the MAC accounting is the reference's
    for p_layer, o_layer, r_layer in zip(prog.layers, by_ops.layers, ref.layers):
        assert p_layer["index"] == o_layer["index"]
        assert p_layer["macs"] == r_layer["macs"]
        assert p_layer["input_sparsity"] == r_layer["input_sparsity"]
        assert p_layer["grad_sparsity"] == pytest.approx(r_layer["grad_sparsity"], abs=1e-3)
        for pass_name, counters in o_layer["kernel"].items():
            got = p_layer["kernel"][pass_name]
            for name in ("cycles", "macs_executed", "macs_dense"):
                assert got[name] == counters[name], (p_layer["index"], pass_name, name)
            assert got["macs_executed"] <= got["macs_dense"]
        assert p_layer["kernel"]["fwd"]["macs_executed"] == r_layer["macs"]["fwd"]["macs_nonzero"]


def test_weights_stay_on_device_and_are_read_back_only_when_asked(lenet, backend, batch, monkeypatch):
    params, velocities = lenet.init_params(0), lenet.zero_velocities()
    first = backend.train_step(lenet, params, velocities, *batch, LR, MOMENTUM, WD)
    reads = []
    buffer = backend.weights.buffers["wgt"]
    original = type(buffer).sync_from_device
    monkeypatch.setattr(type(buffer), "sync_from_device",
                        lambda self: (reads.append(self is buffer), original(self))[1])
    uploads = []
    monkeypatch.setattr(backend.weights, "upload", lambda *a: uploads.append(a))
    second = backend.train_step(lenet, first.params, first.velocities, *batch, LR, MOMENTUM, WD)
    assert uploads == []                          # the mirrors were recognised: nothing re-sent
    assert True not in reads                      # ... and nothing read back
    w = second.params["layer0.w"]
    assert reads.count(True) == 1
    second.velocities["layer7.b"], second.params["layer7.w"]
    assert reads.count(True) == 1                 # one read-back per device state
    assert w.shape == lenet.param_shapes()["layer0.w"] and not np.array_equal(w, params["layer0.w"])
    with pytest.raises(RuntimeError, match="superseded"):
        first.params["layer0.w"]


def test_predict_runs_the_forward_program_on_device_weights(lenet, backend, batch):
    params, velocities = lenet.init_params(3), lenet.zero_velocities()
    result = backend.train_step(lenet, params, velocities, *batch, LR, MOMENTUM, WD)
    host = {k: np.array(v) for k, v in result.params.items()}
    vel_before = {k: np.array(v) for k, v in result.velocities.items()}
    logits = backend.predict(lenet, result.params, batch[0][:5])
    expected = step.predict(ReferenceOps(), lenet, host, batch[0][:5])
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    # foreign params are uploaded, the device's momentum buffers kept
    other = lenet.init_params(4)
    np.testing.assert_allclose(backend.predict(lenet, other, batch[0][:3]),
                               step.predict(ReferenceOps(), lenet, other, batch[0][:3]), rtol=1e-4, atol=1e-5)
    _, vel = backend.read_weights()
    assert all(np.array_equal(vel[k], vel_before[k]) for k in vel)
    assert any(np.any(v != 0) for v in vel_before.values())


def test_mirrors_stay_readable_after_close(lenet, batch):
    b = ProgramBackend(Accelerator.emulated(), "emu")
    params, velocities = lenet.init_params(0), lenet.zero_velocities()
    result = b.train_step(lenet, params, velocities, *batch, LR, MOMENTUM, WD)
    b.close()
    assert result.params["layer0.w"].shape == params["layer0.w"].shape


def test_bad_inputs_are_refused_naming_the_argument(lenet, backend, batch):
    params, velocities = lenet.init_params(0), lenet.zero_velocities()
    x, y = batch
    with pytest.raises(ValueError, match=r"^y: labels must lie in \[0, 9\]"):
        backend.train_step(lenet, params, velocities, x, y + 10, LR, MOMENTUM, WD)
    with pytest.raises(ValueError, match="^params: expected keys"):
        backend.train_step(lenet, {"w": params["layer0.w"]}, velocities, x, y, LR, MOMENTUM, WD)
    with pytest.raises(ValueError, match="^lr: must be a finite number >= 0"):
        backend.train_step(lenet, params, velocities, x, y, -1.0, MOMENTUM, WD)
    with pytest.raises(ValueError, match="^x: expected a batch"):
        backend.predict(lenet, params, np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"^x: expected a batch of shape \(16, 1, 28, 28\), got \(16, 1, 28, 27\)"):
        backend.train_step(lenet, params, velocities, x[..., :27], y, LR, MOMENTUM, WD)
    # a failed step leaves the backend usable
    result = backend.train_step(lenet, params, velocities, x, y, LR, MOMENTUM, WD)
    assert np.isfinite(result.loss)


def test_factory_builds_program_mode_by_default_and_ops_mode_on_request():
    from zskip.host.backends import OpsBackend, make_backend
    emu = make_backend("emu")
    try:
        assert isinstance(emu, ProgramBackend)
    finally:
        emu.close()
    ops = make_backend("emu", mode="ops")
    assert isinstance(ops, OpsBackend)
    with pytest.raises(ValueError, match="^mode: must be one of program, ops"):
        make_backend("emu", mode="fast")


def test_recorded_descriptors_carry_the_layer_shapes(lenet, backend):
    prog = backend.program(lenet, "predict", 4)
    conv0, pool1, conv2 = (decode(w) for w in prog.words[:3])
    assert (conv0["opcode"], conv0["n"], conv0["c"], conv0["h"], conv0["k"], conv0["r"]) == ("CONV_FWD", 4, 1, 28, 6, 5)
    assert "RELU" in conv0["flags"] and "SKIP_ZEROS" in conv0["flags"]
    assert (pool1["opcode"], pool1["c"], pool1["h"], pool1["r"], pool1["stride"]) == ("MAXPOOL_FWD", 6, 24, 2, 2)
    # each op reads the tensor the previous one wrote: conv2's input is the pool's output
    assert conv2["x"] == pool1["y"] and pool1["x"] == conv0["y"]
    last = decode(prog.words[-1])
    assert (last["opcode"], last["c"], last["k"], last["flags"]) == ("FC_FWD", 84, 10, ("SKIP_ZEROS",))


def test_a_model_beyond_the_compiled_maxima_is_refused_when_its_program_is_recorded(backend):
    vgg = get_model("vgg_tiny")                 # 2048 inputs to its first fully connected layer
    with pytest.raises(ValueError, match=r"^model 'vgg_tiny': layer fc1 has 2048 features, .*"
                                         r"max_features=1024; set --backend-opt max_features=2048"):
        backend.program(vgg, "train", 2, LR, MOMENTUM, WD)
