"""Comparison with the reference: a clean step passes, planted wrong results are caught and located."""
import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.host.backends import make_backend
from zskip.host.runtime.program_backend import ProgramBackend
from zskip.host.runtime.streaming import Batch
from zskip.models import step
from zskip.models.check import (TOLERANCES, CapturingOps, CheckFailed, check_step, op_labels,
                                tolerance_for)
from zskip.models.networks import get_model
from zskip.models.ops import ReferenceOps

LR, MOMENTUM, WD = 0.02, 0.9, 1e-4


@pytest.fixture(scope="module")
def lenet():
    return get_model("lenet5")


@pytest.fixture(scope="module")
def batch(lenet):
    rng = np.random.default_rng(11)
    return rng.random((8, *lenet.input_shape), dtype=np.float32), rng.integers(0, 10, 8)


def _device_outputs(ops, model, batch):
    capture = CapturingOps(ops)
    params, velocities = model.init_params(0), model.zero_velocities()
    step.train_step(capture, model, params, velocities, *batch, LR, MOMENTUM, WD)
    return params, velocities, capture.outputs


def test_clean_emulated_step_is_within_float32_tolerance(lenet, batch):
    params, velocities, outputs = _device_outputs(Accelerator.emulated(), lenet, batch)
    report = check_step(lenet, params, velocities, *batch, LR, MOMENTUM, WD, outputs)
    assert 0 < report.max_rel_error <= TOLERANCES["float32"].rtol
    labels = {(t.layer, t.tensor) for t in report.tensors}
    # per layer and tensor: activations, masks, gradients, weight gradients, updated weights
    for expected in [("conv1 fwd", "y"), ("conv1 fwd", "mask"), ("pool1 fwd", "argmax (value at)"),
                     ("conv2 bwd_data", "dx"), ("fc1 bwd_weight", "dw"), ("loss", "loss"),
                     ("sgd layer0.w", "param"), ("sgd layer7.b", "velocity")]:
        assert expected in labels


@pytest.mark.parametrize("op, k, position, tensor, label", [
    ("conv_forward", 1, 0, "y", "conv2 fwd"),
    ("linear_backward_weight", 0, 0, "dw", "fc3 bwd_weight"),
    ("conv_backward_data", 0, 0, "dx", "conv2 bwd_data"),
    ("sgd_update", 3, 1, "velocity", "sgd layer2.b"),
])
def test_a_planted_wrong_value_is_caught_with_layer_tensor_and_index(lenet, batch, op, k, position, tensor, label):
    params, velocities, outputs = _device_outputs(ReferenceOps(), lenet, batch)
    calls = [i for i, (name, _) in enumerate(outputs) if name == op]
    out = outputs[calls[k]][1]
    values = list(out) if isinstance(out, tuple) else [out]
    wrong = np.array(values[position], copy=True)
    index = tuple(s // 2 for s in wrong.shape)
    wrong[index] += 0.01 * (np.abs(wrong).max() + 1)
    values[position] = wrong
    outputs[calls[k]] = (op, tuple(values) if isinstance(out, tuple) else values[0])
    with pytest.raises(CheckFailed) as info:
        check_step(lenet, params, velocities, *batch, LR, MOMENTUM, WD, outputs)
    message = str(info.value)
    assert message.startswith(f"check failed: {label}, tensor {tensor}: max relative error")
    assert f"at index {index}" in message


def test_a_corrupted_device_tensor_stops_training_with_its_layer_tensor_and_index(lenet, batch, monkeypatch):
    backend = ProgramBackend(Accelerator.emulated(), "emu")
    params, velocities = lenet.init_params(0), lenet.zero_velocities()
    prog = backend.program(lenet, "train", 8, LR, MOMENTUM, WD)
    # the first fully connected layer's output: 'y' of the 3rd recorded forward op
    fc_y = [c for c in prog.calls if c.op == "linear_forward"][0].outputs[0]
    _, offset, _ = prog.layout.entries[fc_y.name]
    run = backend.accelerator.device.run

    def corrupting_run(buffers, n_desc, timeout_s=30.0):
        cycles = run(buffers, n_desc, timeout_s)
        buffers["act"].device_copy[offset + 125] += 3.0      # sample 1, feature 5 of (8, 120)
        return cycles
    monkeypatch.setattr(backend.accelerator.device, "run", corrupting_run)
    try:
        with pytest.raises(CheckFailed, match=r"^check failed: fc1 fwd, tensor y: .* at index \(1, 5\)"):
            list(backend.stream(lenet, params, velocities, [Batch(*batch, check=True)], LR, MOMENTUM, WD))
    finally:
        backend.close()


def test_the_cli_stops_on_a_failed_check(monkeypatch, capsys):
    from zskip.host import cli
    from zskip.models import check as C
    monkeypatch.setitem(C.TOLERANCES, "float32", C.Tolerance(rtol=0.0, floor=0.1))   # nothing passes
    status = cli.main(["train", "--backend", "emu", "--data", "synthetic:1x28x28", "--limit-train", "64",
                       "--limit-test", "8", "--epochs", "1", "--check-every", "1", "--quiet"])
    assert status == 2
    assert "zskip: error: check failed: conv1 fwd, tensor y" in capsys.readouterr().err


def test_labels_follow_the_model_and_unknown_precision_is_refused(lenet):
    labels = op_labels(lenet, list(lenet.param_shapes()))
    assert labels["conv_backward_data"] == ["conv2 bwd_data"]      # none for the first layer
    assert labels["maxpool_backward"] == ["pool2 bwd", "pool1 bwd"]
    assert labels["linear_forward"] == ["fc1 fwd", "fc2 fwd", "fc3 fwd"]
    with pytest.raises(ValueError, match=r"^precision: .*not 'ap_fixed<16,6>'"):
        tolerance_for("ap_fixed<16,6>")


def test_ops_mode_backend_checks_too(lenet, batch):
    backend = make_backend("emu", mode="ops")
    params, velocities = lenet.init_params(0), lenet.zero_velocities()
    (out,) = list(backend.stream(lenet, params, velocities, [Batch(*batch, check=True)], LR, MOMENTUM, WD))
    assert out.check is not None and out.check.max_rel_error <= TOLERANCES["float32"].rtol


def test_a_sum_of_cancelling_terms_is_measured_against_their_magnitude():
    """Under a batch normalisation, a convolution's bias gradient sums BN's dx, which is zero over each
    channel: the reference's db is rounding noise, so emu's db (summed in another order) differs from it
    by more than rtol of its own size. The check measures a sum against the magnitude of its terms
    instead: the emulated step passes, and an error of 1e-3 of that magnitude is still caught."""
    from zskip.models.networks import Model, batchnorm, conv, flatten, linear
    model = Model("conv_bn", (2, 6, 6), (conv(4, 3, pad=1, relu=False), batchnorm(), flatten(),
                                         linear(3, relu=False)))
    rng = np.random.default_rng(5)
    batch = rng.standard_normal((6, 2, 6, 6)).astype(np.float32), rng.integers(0, 3, 6)
    params, velocities, outputs = _device_outputs(Accelerator.emulated(), model, batch)
    k = next(i for i, (op, _) in enumerate(outputs) if op == "conv_backward_weight")
    dw, db = outputs[k][1]
    dy = next(out for op, out in outputs if op == "batchnorm_backward")[0]
    magnitude = np.abs(dy).sum(axis=(0, 2, 3))
    assert np.all(np.abs(db) < 1e-5 * magnitude)              # the regime: db is noise next to its terms
    report = check_step(model, params, velocities, *batch, LR, MOMENTUM, WD, outputs)
    assert report.max_rel_error <= TOLERANCES["float32"].rtol
    planted = list(outputs)
    wrong = db.copy()
    wrong[2] += 1e-3 * magnitude[2]
    planted[k] = ("conv_backward_weight", (dw, wrong))
    with pytest.raises(CheckFailed, match=r"conv1 bwd_weight, tensor db: .* at index \(2,\)"):
        check_step(model, params, velocities, *batch, LR, MOMENTUM, WD, planted)



def test_long_sums_of_a_resnet8_step_at_batch_64_pass_on_emu(mnist5k):
    """resnet8's first step at batch 64 on MNIST: a 28x28 layer's weight gradient sums 50,176 products in
    the engine's accumulators, whose float32 rounding (about 2e-5 of the terms' magnitude here) exceeds
    0.1 x rtol of it; the check allows a sum of n terms the worst-case rounding n 2^-24 of the magnitude."""
    from zskip.models.train import train
    backend = make_backend("emu")
    try:
        result = train(backend, get_model("resnet8", input_shape=(1, 28, 28)), mnist5k.subset(train=64, test=8),
                       epochs=1, batch_size=64, lr=0.3, quiet=True, check_every=1)
    finally:
        backend.close()
    check = result.report["check"]
    assert check["batches_checked"] == 1
    assert check["max_rel_error"] <= TOLERANCES["float32"].rtol


def test_batchnorm_outputs_are_measured_against_what_its_sums_carry():
    """A convolution whose outputs sit 10^4 standard deviations from zero (a large bias) feeds a batch
    normalisation: float32 rounding of the channel mean, ~2^-24 of 10^4, moves xhat by ~1e-3 of its size
    on emu. The check measures xhat against mean|x| / std (1e-5 of it, as every sum: about 0.2 here),
    so the emulated step passes, while an error of one standard deviation in one xhat element is still
    caught."""
    from zskip.models.networks import Model, batchnorm, conv, flatten, linear
    model = Model("conv_bn", (2, 6, 6), (conv(4, 3, pad=1, relu=False), batchnorm(), flatten(),
                                         linear(3, relu=False)))
    rng = np.random.default_rng(5)
    batch = rng.standard_normal((6, 2, 6, 6)).astype(np.float32), rng.integers(0, 3, 6)
    capture = CapturingOps(Accelerator.emulated())
    params, velocities = model.init_params(0), model.zero_velocities()
    params["layer0.b"][:] = 1e4
    step.train_step(capture, model, params, velocities, *batch, LR, MOMENTUM, WD)
    outputs = capture.outputs
    k = next(i for i, (op, _) in enumerate(outputs) if op == "batchnorm_forward")
    y, mask, xhat, mean, var = outputs[k][1]
    report = check_step(model, params, velocities, *batch, LR, MOMENTUM, WD, outputs)
    assert report.max_rel_error <= TOLERANCES["float32"].rtol
    wrong = xhat.copy()
    wrong[1, 2, 3, 4] += 1.0
    planted = list(outputs)
    planted[k] = ("batchnorm_forward", (y, mask, wrong, mean, var))
    with pytest.raises(CheckFailed, match=r"bn1 fwd, tensor xhat: .* at index \(1, 2, 3, 4\)"):
        check_step(model, params, velocities, *batch, LR, MOMENTUM, WD, planted)
