"""The training loop: accuracy on mnist5k, exact resume, report contents, errors."""
import numpy as np
import pytest

from zskip.host.backends import make_backend
from zskip.models.datasets import load_dataset
from zskip.models.networks import get_model
from zskip.models.train import epoch_permutation, train


def test_lenet5_reaches_94_percent_on_mnist5k_in_6_epochs(mnist5k):
    result = train(make_backend("reference", account=False), get_model("lenet5"), mnist5k,
                   epochs=6, batch_size=64, lr=0.02, momentum=0.9, seed=0, quiet=True)
    accuracies = [e["test_accuracy"] for e in result.report["epochs"]]
    assert len(accuracies) == 6
    assert accuracies[-1] >= 0.94, accuracies
    losses = [e["train_loss"] for e in result.report["epochs"]]
    assert losses[-1] < losses[0] / 4


@pytest.fixture(scope="module")
def small(mnist5k):
    return mnist5k.subset(train=300, test=100)       # 5 steps per epoch at batch 64


def _run(small, **kw):
    return train(make_backend("reference"), get_model("lenet5"), small, epochs=3, batch_size=64,
                 lr=0.02, momentum=0.9, weight_decay=1e-4, seed=7, quiet=True, **kw)


def _without_timing(report):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in report["epochs"]]


def _assert_identical(a, b):
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
        assert np.array_equal(a.velocities[k], b.velocities[k]), k
    assert _without_timing(a.report) == _without_timing(b.report)


@pytest.mark.parametrize("stop_after,every", [(5, 0), (7, 2), (11, 3)])
def test_resume_is_bit_identical_to_an_uninterrupted_run(small, tmp_path, stop_after, every):
    whole = _run(small)
    path = tmp_path / "run.npz"
    first = _run(small, checkpoint=path, checkpoint_every=every, max_steps=stop_after)
    assert "stopped_at" in first.report
    rest = _run(small, checkpoint=path, checkpoint_every=every, resume=True)
    _assert_identical(whole, rest)
    assert not np.array_equal(first.params["layer0.w"], whole.params["layer0.w"])


def test_resume_refuses_other_hyperparameters(small, tmp_path):
    path = tmp_path / "run.npz"
    _run(small, checkpoint=path, max_steps=2)
    with pytest.raises(ValueError, match="^checkpoint: .*lr=0.02.*lr=0.1"):
        train(make_backend("reference"), get_model("lenet5"), small, epochs=3, lr=0.1, momentum=0.9,
              weight_decay=1e-4, seed=7, checkpoint=path, resume=True, quiet=True)


def test_report_figures(small):
    report = _run(small).report
    assert report["config"]["model"] == "lenet5" and report["config"]["backend"] == "reference"
    epoch = report["epochs"][0]
    assert {"train_loss", "train_acc", "test_accuracy", "layers"} <= epoch.keys()
    layers = {l["index"]: l for l in epoch["layers"]}
    assert sorted(layers) == [0, 2, 5, 6, 7]
    # layer 0 sees the images: its input sparsity is the fraction of zero pixels
    # over every batch (all batches are full except the last one of 300 - 4 * 64 = 44)
    perm = epoch_permutation(7, 0, 300)
    per_batch = [np.mean(small.x_train[perm[i:i + 64]] == 0) for i in range(0, 300, 64)]
    assert layers[0]["input_sparsity"] == pytest.approx(np.mean(per_batch))
    # dense fwd MACs of conv 1: 6 outputs * 24 * 24 positions * 25 taps per sample, 300 samples
    assert layers[0]["macs"]["fwd"]["macs_dense"] == 300 * 6 * 24 * 24 * 25
    assert layers[5]["macs"]["bwd_weight"]["macs_dense"] == 300 * 256 * 120
    for l in epoch["layers"]:
        for counts in l["macs"].values():
            assert 0 < counts["macs_nonzero"] <= counts["macs_dense"]
            assert counts["ideal_speedup"] >= 1


def test_epoch_permutation_depends_on_seed_and_epoch_only():
    a = epoch_permutation(1, 0, 50)
    assert np.array_equal(a, epoch_permutation(1, 0, 50))
    assert sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, epoch_permutation(1, 1, 50))
    assert not np.array_equal(a, epoch_permutation(2, 0, 50))


def test_mismatched_data_and_bad_settings_are_refused(small):
    with pytest.raises(ValueError, match="^data: .*expects 3x32x32"):
        train(make_backend("reference"), get_model("vgg_tiny"), small, epochs=1, quiet=True)
    with pytest.raises(ValueError, match="^batch_size:"):
        train(make_backend("reference"), get_model("lenet5"), small, epochs=1, batch_size=0, quiet=True)
    with pytest.raises(ValueError, match="^checkpoint:"):
        train(make_backend("reference"), get_model("lenet5"), small, epochs=1, resume=True, quiet=True)


def test_vgg_tiny_learns_synthetic_data():
    data = load_dataset("synthetic:3x32x32", seed=0).subset(train=384, test=128)
    result = train(make_backend("reference", account=False), get_model("vgg_tiny"), data, epochs=3,
                   batch_size=32, lr=0.01, momentum=0.9, seed=0, quiet=True)
    assert result.report["epochs"][-1]["test_accuracy"] > 0.5     # chance is 0.1


def test_unknown_backend_lists_known_ones():
    with pytest.raises(ValueError, match="^backend: unknown backend 'fpga'; known: reference, emu, pynq"):
        make_backend("fpga")
    with pytest.raises(ValueError, match="^backend: bad options"):
        make_backend("reference", bitfile="zskip.bit")  # precision= is an option of reference now (mul=)


def test_accelerator_backends_report_a_missing_accelerator_module(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "zskip.host.runtime.accelerator", None)    # import fails
    with pytest.raises(ValueError, match="^backend: the accelerator backends need zskip.host.runtime.accelerator"):
        make_backend("emu")


def test_factory_builds_accelerator_backends_through_accelerator(monkeypatch, small):
    import sys
    import types
    from zskip.models.ops import ReferenceOps
    calls = []

    class FakeAccelerator:
        @staticmethod
        def emulated(**opts):
            calls.append(("emulated", opts))
            return ReferenceOps()

        @staticmethod
        def pynq(bitfile, **opts):
            calls.append(("pynq", bitfile))
            return ReferenceOps()

        @staticmethod
        def remote(host, **opts):
            calls.append(("remote", host))
            return ReferenceOps()

    monkeypatch.setitem(sys.modules, "zskip.host.runtime.accelerator", types.SimpleNamespace(Accelerator=FakeAccelerator))
    # mode="ops": the fake accelerator is an Ops, not a device a program can run on
    emu = make_backend("emu", precision="float32", skip_zeros=False, mode="ops")
    assert emu.name == "emu"
    make_backend("pynq", bitfile="b.bit", mode="ops")
    remote = make_backend("remote:192.168.2.99", mode="ops")
    assert remote.name == "remote:192.168.2.99"
    assert calls == [("emulated", {"precision": "float32", "skip_zeros": False}), ("pynq", "b.bit"),
                     ("remote", "192.168.2.99")]
    # the loop runs the same on a factory-built accelerator backend
    a = train(emu, get_model("lenet5"), small.subset(64, 32), epochs=1, seed=1, quiet=True)
    b = train(make_backend("reference"), get_model("lenet5"), small.subset(64, 32), epochs=1, seed=1, quiet=True)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_init_params_of_a_batchnorm_model_may_leave_out_the_running_statistics(mnist5k):
    """init_params needs the trained parameters; the BN buffers start as Model.init_params makes them."""
    model = get_model("resnet8", input_shape=(1, 28, 28))
    start = model.init_params(5)
    trained = {k: start[k] for k in model.param_shapes()}
    result = train(make_backend("reference", account=False), model, mnist5k.subset(train=64, test=16), epochs=1,
                   batch_size=64, lr=0.01, quiet=True, init_params=trained)
    fresh = train(make_backend("reference", account=False), model, mnist5k.subset(train=64, test=16), epochs=1,
                  batch_size=64, lr=0.01, quiet=True, init_params=start)
    for k in start:
        assert np.array_equal(result.params[k], fresh.params[k]), k
    with pytest.raises(ValueError, match=r"^init_params: has entries .* needs .*\(and may have .*running_mean"):
        train(make_backend("reference"), model, mnist5k.subset(train=64, test=16), epochs=1, quiet=True,
              init_params={k: v for k, v in trained.items() if k != "layer0.w"})
