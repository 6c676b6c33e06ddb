"""The training loop on the emulated accelerator in program mode: accuracy, loss curve, resume, report.

Loss-curve tolerance: emu float32 and the numpy reference round differently
(summation order), and SGD trajectories drift apart chaotically, so the
curves are compared as follows: the first 10 steps' losses within a relative
1e-3; over 6 epochs (about 35 s for both runs on 2 cores, so always on) each epoch's mean train loss within a relative 15% and
final test accuracies within 2 points (measured: 0.2% to 6% and 0.8 points).
"""
import json

import numpy as np
import pytest

from zskip.host.backends import make_backend
from zskip.host.runtime.streaming import Batch
from zskip.models.datasets import load_dataset
from zskip.models.networks import get_model
from zskip.models.train import epoch_permutation, train


def test_lenet5_on_emu_reaches_94_percent_in_6_epochs_and_follows_the_reference(mnist5k):
    model = get_model("lenet5")
    runs = {}
    for name in ("emu", "reference"):
        backend = make_backend(name, account=False)
        try:
            runs[name] = train(backend, model, mnist5k, epochs=6, batch_size=64, lr=0.02, momentum=0.9, seed=0,
                               quiet=True, check_every=50 if name == "emu" else 0).report
        finally:
            backend.close()
    emu, ref = runs["emu"]["epochs"], runs["reference"]["epochs"]
    assert emu[-1]["test_accuracy"] >= 0.94, [e["test_accuracy"] for e in emu]
    assert abs(emu[-1]["test_accuracy"] - ref[-1]["test_accuracy"]) <= 0.02
    for e, r in zip(emu, ref):
        assert e["train_loss"] == pytest.approx(r["train_loss"], rel=0.15)
    steps = 6 * -(-len(mnist5k.x_train) // 64)
    assert runs["emu"]["check"]["batches_checked"] == -(-steps // 50)         # steps 0, 50, 100, ...
    assert runs["emu"]["check"]["max_rel_error"] <= 1e-4


def test_first_steps_on_emu_follow_the_reference(mnist5k):
    model = get_model("lenet5")
    perm = epoch_permutation(0, 0, len(mnist5k.x_train))
    batches = [Batch(mnist5k.x_train[perm[i * 64:(i + 1) * 64]], mnist5k.y_train[perm[i * 64:(i + 1) * 64]],
                     check=i in (0, 9)) for i in range(10)]
    losses = {}
    for name in ("emu", "reference"):
        backend = make_backend(name, account=False)
        try:
            outs = list(backend.stream(model, model.init_params(0), model.zero_velocities(), batches, 0.02, 0.9, 0.0))
        finally:
            backend.close()
        losses[name] = [o.result.loss for o in outs]
        if name == "emu":
            assert [o.check is not None for o in outs] == [b.check for b in batches]
    np.testing.assert_allclose(losses["emu"], losses["reference"], rtol=1e-3)
    assert losses["emu"][-1] < losses["emu"][0]


@pytest.fixture(scope="module")
def small(mnist5k):
    return mnist5k.subset(train=300, test=100)       # 5 steps per epoch at batch 64, the last one of 44


def _run(small, **kw):
    backend = make_backend("emu")
    try:
        return train(backend, get_model("lenet5"), small, epochs=2, batch_size=64, lr=0.02, momentum=0.9,
                     weight_decay=1e-4, seed=7, quiet=True, **kw)
    finally:
        backend.close()


@pytest.mark.parametrize("stop_after,every", [(3, 0), (7, 2)])
def test_resume_with_device_held_state_is_bit_identical(small, tmp_path, stop_after, every):
    whole = _run(small)
    path = tmp_path / "run.npz"
    first = _run(small, checkpoint=path, checkpoint_every=every, max_steps=stop_after)
    assert "stopped_at" in first.report
    with np.load(path) as f:                       # the momentum buffers were read back from the device
        assert np.any(f["velocity/layer0.w"] != 0)
    rest = _run(small, checkpoint=path, checkpoint_every=every, resume=True)
    for k in whole.params:
        assert np.array_equal(whole.params[k], rest.params[k]), k
        assert np.array_equal(whole.velocities[k], rest.velocities[k]), k
    assert _without_hazard_timing(whole.report) == _without_hazard_timing(rest.report)


def _without_hazard_timing(report):
    """Epoch reports without wall time and without the two counters that depend on the emulated
    accumulator's hazard stamps left by earlier runs in the process (``mac_stalls`` and the
    ``cycles`` they enter): a resumed run starts on a fresh device, so only those may differ."""
    epochs = []
    for e in report["epochs"]:
        e = {k: v for k, v in e.items() if k != "seconds"}
        e["layers"] = [dict(l, kernel={p: {c: v for c, v in counters.items() if c not in ("cycles", "mac_stalls")}
                                       for p, counters in l["kernel"].items()}) for l in e["layers"]]
        epochs.append(e)
    return epochs


def test_cli_report_has_check_and_per_layer_kernel_counters(tmp_path):
    from zskip.host.cli import main
    path = tmp_path / "report.json"
    status = main(["train", "--backend", "emu", "--data", "mnist5k", "--limit-train", "192", "--limit-test", "64",
                   "--epochs", "1", "--check-every", "2", "--report", str(path), "--quiet"])
    assert status == 0
    report = json.loads(path.read_text())
    assert report["check"]["batches_checked"] == 2                     # steps 0 and 2 of 3
    assert 0 < report["check"]["max_rel_error"] <= 1e-4
    assert set(report["timings"]) == {"pack", "flush", "run", "invalidate", "unpack"}
    layers = report["epochs"][0]["layers"]
    assert [l["index"] for l in layers] == [0, 2, 5, 6, 7]
    for layer in layers:
        passes = {"fwd", "bwd_weight"} | ({"bwd_data"} if layer["index"] else set())
        assert set(layer["kernel"]) == passes
        for pass_name, counters in layer["kernel"].items():
            assert counters["cycles"] > 0
            # sparse mode: the kernel executes exactly the reference's nonzero MACs of that pass
            assert counters["macs_executed"] == layer["macs"][pass_name]["macs_nonzero"]
            assert counters["macs_dense"] == layer["macs"][pass_name]["macs_dense"]


def test_vgg_tiny_full_step_on_synthetic_32x32x3_passes_every_check():
    model = get_model("vgg_tiny")
    data = load_dataset("synthetic:3x32x32")
    # its first fully connected layer has 128 * 4 * 4 = 2048 inputs: compile the kernels for that
    backend = make_backend("emu", max_features=2048)
    try:
        (out,) = list(backend.stream(model, model.init_params(0), model.zero_velocities(),
                                     [Batch(data.x_train[:8], data.y_train[:8], check=True)], 0.02, 0.9, 1e-4))
    finally:
        backend.close()
    report = out.check
    assert report.max_rel_error <= 1e-4
    layers = {t.layer.split(" ")[0] for t in report.tensors}
    assert {name for name, l in zip(model.layer_names(), model.layers) if l.kind != "flatten"} <= layers | {"loss"}
    assert len(out.result.layers) == 7 and np.isfinite(out.result.loss)
