"""ResNets with batch normalisation on the reference backend: models as data, the step, checks, refusal."""
import numpy as np
import pytest

from zskip.models import reference as R
from zskip.models.check import CapturingOps, CheckFailed, check_step, op_labels
from zskip.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from zskip.models.networks import (BatchNorm, Conv, Model, Residual, batchnorm, conv, get_model, global_avgpool,
                                   linear, residual, resnet)
from zskip.models.ops import OP_OUTPUTS, ReferenceOps
from zskip.models.step import forward, predict, prune_seeds, train_step


def _conv_count(model):
    return sum(isinstance(layer, Conv) for layer in model.flat_layers)


@pytest.mark.parametrize("name,depth", [("resnet8", 8), ("resnet20", 20)])
@pytest.mark.parametrize("shape,sizes", [((3, 32, 32), (32, 16, 8)), ((1, 28, 28), (28, 14, 7))])
def test_resnets_follow_he_et_al(name, depth, shape, sizes):
    model = get_model(name, shape)
    n = (depth - 2) // 6
    blocks = [layer for layer in model.layers if isinstance(layer, Residual)]
    assert len(blocks) == 3 * n
    # depth counts the weighted layers on the main path: stem + 2 per block + the linear layer
    assert 1 + 2 * len(blocks) + 1 == depth
    assert _conv_count(model) == 1 + 2 * len(blocks) + 2          # + two projection shortcuts
    # every convolution is followed by a batch normalisation
    flat = model.flat_layers
    assert all(isinstance(flat[i + 1], BatchNorm) for i, layer in enumerate(flat) if isinstance(layer, Conv))
    outs = [model.shapes()[i][1] for i, layer in enumerate(flat) if isinstance(layer, Residual)]
    assert [o for o in outs[::n]] == [(16, sizes[0], sizes[0]), (32, sizes[1], sizes[1]), (64, sizes[2], sizes[2])]
    assert model.shapes()[-1][1] == (10,) and model.input_shape == shape
    # trained parameters, counted independently: 3x3 convs, two 1x1 projections, BN (gamma, beta), linear
    c = shape[0]
    convs = 9 * (c * 16 + 16 * 16 * 2 * n + (16 * 32 + 32 * 32 * (2 * n - 1)) + (32 * 64 + 64 * 64 * (2 * n - 1)))
    convs += 16 * 32 + 32 * 64
    bn_channels = 16 + 2 * n * 16 + 2 * n * 32 + 32 + 2 * n * 64 + 64
    conv_biases = bn_channels                                     # one conv before every BN
    total = convs + conv_biases + 2 * bn_channels + 64 * 10 + 10
    assert sum(int(np.prod(s)) for s in model.param_shapes().values()) == total
    assert sum(int(np.prod(s)) for s in model.buffer_shapes().values()) == 2 * bn_channels
    names = model.layer_names()
    assert len(set(names)) == len(flat) and names[:3] == ("conv1", "bn1", "block1")
    assert model.describe().count("shortcut: conv") == 2


def test_resnet20_has_the_published_size():
    # He et al. 2016, table 6: ResNet-20 has 0.27M parameters (with zero-pad shortcuts and no conv biases)
    model = get_model("resnet20")
    total = sum(int(np.prod(s)) for s in model.param_shapes().values())
    assert 0.27e6 < total < 0.28e6


@pytest.mark.parametrize("build,fragment", [
    (lambda: residual(()), "^body:"),
    (lambda: batchnorm(momentum=1.5), "^momentum:"),
    (lambda: batchnorm(eps=0.0), "^eps:"),
    (lambda: resnet(9), "^depth:"),
    (lambda: resnet(8, (3, 2, 2)), "^input_shape:"),
    (lambda: Model("bad", (2, 6, 6), (residual((conv(3, 3, pad=1),)), global_avgpool(), linear(2))),
     "identity shortcut"),
    (lambda: Model("bad", (2, 6, 6), (conv(2, 3, pad=1), global_avgpool(), conv(2, 1), linear(2))),
     r"needs a \(C, H, W\) input"),
])
def test_bad_blocks_are_refused_naming_the_problem(build, fragment):
    with pytest.raises(ValueError, match=fragment):
        build()


# Every kind of layer and both shortcuts, stride 2 and odd sizes, in a model small enough for finite differences.
TINY = Model("tiny_res", (2, 5, 5), (
    conv(3, 3, pad=1, relu=False), batchnorm(),
    residual((conv(3, 3, pad=1, relu=False), batchnorm(), conv(3, 3, pad=1, relu=False), batchnorm(relu=False))),
    residual((conv(4, 3, stride=2, pad=1, relu=False), batchnorm(), conv(4, 3, pad=1, relu=False),
              batchnorm(relu=False)),
             (conv(4, 1, stride=2, relu=False), batchnorm(relu=False))),
    global_avgpool(), linear(3, relu=False)))


def _train_loss(model, params, x, y):
    return R.softmax_cross_entropy(forward(ReferenceOps(), model, params, x, training=True)[0], y)[0]


def test_resnet_step_gradient_matches_finite_differences(rng):
    params = {k: v.astype(np.float64) for k, v in TINY.init_params(2).items()}
    params = {k: v + rng.standard_normal(v.shape) * 0.1 if k.endswith(("gamma", "beta")) else v
              for k, v in params.items()}
    zeros = {k: np.zeros_like(params[k]) for k in TINY.param_shapes()}
    x = rng.standard_normal((4, 2, 5, 5))
    y = np.array([0, 2, 1, 1])
    result = train_step(ReferenceOps(), TINY, params, zeros, x, y, lr=1.0, momentum=0.0, weight_decay=0.0)
    assert result.loss == pytest.approx(_train_loss(TINY, params, x, y), rel=1e-12)
    eps = 1e-6
    for key in TINY.param_shapes():
        p = params[key]
        analytic = p - result.params[key]
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            plus = _train_loss(TINY, params, x, y)
            p[i] = old - eps
            minus = _train_loss(TINY, params, x, y)
            p[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        # a conv bias before a batch normalisation is cancelled by it: its gradient is zero
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-8, err_msg=key)


def test_running_statistics_follow_the_batch_and_predict_uses_them(rng):
    params = TINY.init_params(0)
    x = rng.random((6, 2, 5, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    result = train_step(ReferenceOps(), TINY, params, TINY.zero_velocities(), x, y, 0.0, 0.0, 0.0)
    # BN 1 normalises conv 0's output: its statistics computed here from the conv alone
    z = R.conv2d_forward(x, params["layer0.w"], params["layer0.b"], 1, 1).transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(result.params["layer1.running_mean"], 0.9 * 0 + 0.1 * z.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(result.params["layer1.running_var"], 0.9 * 1 + 0.1 * z.var(axis=1, ddof=1),
                               rtol=1e-5)
    # lr 0: the trained parameters are unchanged, only the buffers moved
    assert all(np.array_equal(result.params[k], params[k]) for k in TINY.param_shapes())
    # inference mode with running statistics equal to this batch's statistics is training mode on it
    logits, records = forward(ReferenceOps(), TINY, params, x, training=True)
    exact = dict(params)
    for i, layer in enumerate(TINY.flat_layers):
        if isinstance(layer, BatchNorm):
            exact[f"layer{i}.running_mean"], exact[f"layer{i}.running_var"] = records[i].mean, records[i].var
    np.testing.assert_allclose(predict(ReferenceOps(), TINY, exact, x), logits, rtol=1e-4, atol=1e-5)
    # and with the initial running statistics (0, 1) it is not
    assert not np.allclose(predict(ReferenceOps(), TINY, params, x), logits, atol=1e-3)


@pytest.mark.parametrize("prune_rate", [0.0, 0.5])
@pytest.mark.parametrize("model", [TINY, get_model("resnet8", (1, 28, 28)), get_model("lenet5")])
def test_check_labels_name_every_call_of_the_step(rng, model, prune_rate):
    params, vel = model.init_params(0), model.zero_velocities()
    x = rng.random((2, *model.input_shape)).astype(np.float32)
    capture = CapturingOps(ReferenceOps())
    train_step(capture, model, params, vel, x, np.array([1, 0]), 0.01, 0.9, 0.0, prune_rate=prune_rate,
               prune_seeds=prune_seeds(0, 0, len(model.flat_layers)))
    labels = op_labels(model, list(params))
    called = {}
    for op, _ in capture.outputs:
        called[op] = called.get(op, 0) + 1
    assert called == {op: len(names) for op, names in labels.items()
                      if names and (prune_rate or op != "prune_grad")}
    every = [name for names in labels.values() for name in names]
    assert len(every) == len(set(every))
    assert set(called) <= set(OP_OUTPUTS)


class _BadBatchNormBackward(ReferenceOps):
    """The reference with one wrong element in the dgamma of the k-th batchnorm_backward call."""

    def __init__(self, k):
        super().__init__()
        self.k, self.calls = k, 0

    def batchnorm_backward(self, *args, **kwargs):
        dx, dgamma, dbeta = super().batchnorm_backward(*args, **kwargs)
        if self.calls == self.k:
            dgamma = dgamma.copy()
            dgamma[1] += 0.5 * np.abs(dgamma).max() + 1e-3
        self.calls += 1
        return dx, dgamma, dbeta


def test_check_step_compares_the_new_ops_and_names_the_faulty_one(rng):
    params, vel = TINY.init_params(1), TINY.zero_velocities()
    x = rng.random((3, 2, 5, 5)).astype(np.float32)
    y = np.array([2, 0, 1])
    capture = CapturingOps(ReferenceOps())
    train_step(capture, TINY, params, vel, x, y, 0.02, 0.9, 1e-4)
    report = check_step(TINY, params, vel, x, y, 0.02, 0.9, 1e-4, capture.outputs)
    assert report.max_rel_error == 0.0
    compared = {t.tensor for t in report.tensors}
    assert {"xhat", "mean", "var", "dgamma", "dbeta", "running_mean", "running_var"} <= compared
    bad = CapturingOps(_BadBatchNormBackward(k=2))
    train_step(bad, TINY, params, vel, x, y, 0.02, 0.9, 1e-4)
    # backward visits BN 13 (shortcut), 11, then 9 (bn6, bn5, bn4): the third call is bn4
    with pytest.raises(CheckFailed, match=r"^check failed: bn4 bwd, tensor dgamma"):
        check_step(TINY, params, vel, x, y, 0.02, 0.9, 1e-4, bad.outputs)


@pytest.mark.parametrize("shift, fails", [(1e-7, False), (1e-3, True)])
def test_check_measures_a_bias_gradient_cancelled_by_batch_norm_against_its_terms(rng, shift, fails):
    """Before a batch normalisation a convolution's db is zero up to rounding: a change of 1e-7 of sum |dy|
    (float32 rounding) passes, one of 1e-3 of it is caught."""
    params, vel = TINY.init_params(1), TINY.zero_velocities()
    x = rng.random((3, 2, 5, 5)).astype(np.float32)
    y = np.array([2, 0, 1])
    capture = CapturingOps(ReferenceOps())
    train_step(capture, TINY, params, vel, x, y, 0.02, 0.9, 1e-4)
    outputs, inputs = list(capture.outputs), {}
    # the last conv backward-weight of the step is the first layer's (conv1, before bn1)
    k = max(i for i, (op, _) in enumerate(outputs) if op == "conv_backward_weight")
    dw, db = outputs[k][1]
    assert np.abs(db).max() <= 1e-6 * max(np.abs(dw).max(), 1e-30) + 1e-12   # cancelled by bn1
    wrong = np.array(db, copy=True)

    class _Grab(ReferenceOps):
        def conv_backward_weight(self, x, dy, w_shape, stride=1, pad=0):
            inputs["dy"] = np.asarray(dy)
            return super().conv_backward_weight(x, dy, w_shape, stride, pad)
    train_step(_Grab(), TINY, params, vel, x, y, 0.02, 0.9, 1e-4)
    terms = np.abs(inputs["dy"].astype(np.float64)).sum(axis=(0, 2, 3))
    wrong[0] += shift * terms[0]
    outputs[k] = ("conv_backward_weight", (dw, wrong))
    if fails:
        with pytest.raises(CheckFailed, match=r"^check failed: conv1 bwd_weight, tensor db"):
            check_step(TINY, params, vel, x, y, 0.02, 0.9, 1e-4, outputs)
    else:
        # (the captured SGD update saw the unchanged db, so only the db comparison is asked about)
        report = check_step(TINY, params, vel, x, y, 0.02, 0.9, 1e-4, outputs, raise_on_failure=False)
        (entry,) = [t for t in report.tensors if (t.layer, t.tensor) == ("conv1 bwd_weight", "db")]
        assert 0 < entry.max_rel <= report.tolerance.rtol


def test_resnet_trains_a_few_steps_on_the_reference(rng):
    model = get_model("resnet8", (1, 28, 28))
    params, vel = model.init_params(0), model.zero_velocities()
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8) % 10
    losses = []
    for _ in range(4):
        result = train_step(ReferenceOps(), model, params, vel, x, y, 0.05, 0.9, 0.0)
        params, vel = result.params, result.velocities
        losses.append(result.loss)
    assert losses[-1] < losses[0]
    # the per-layer report covers every conv and the linear layer, with the MAC split
    assert [info["index"] for info in result.layers] == \
        [i for i, layer in enumerate(model.flat_layers) if layer.kind in ("conv", "linear")]
    conv_in_block = result.layers[1]["macs"]["bwd_data"]
    # after batch normalisation dy is dense: backward-data skips only masked outputs
    assert conv_in_block["macs_skipped_input"] == 0 and conv_in_block["macs_skipped_output"] > 0


def test_checkpoint_carries_running_statistics(tmp_path):
    model = get_model("resnet8")
    params = model.init_params(0)
    params["layer1.running_mean"] = np.arange(16, dtype=np.float32)
    path = tmp_path / "c.npz"
    save_checkpoint(path, Checkpoint(model.name, params, model.zero_velocities(), 1, 0))
    loaded = load_checkpoint(path, model)
    np.testing.assert_array_equal(loaded.params["layer1.running_mean"], np.arange(16))
    assert set(loaded.params) == set(model.state_shapes()) and set(loaded.velocities) == set(model.param_shapes())
    del params["layer20.running_var"]
    save_checkpoint(path, Checkpoint(model.name, params, model.zero_velocities(), 1, 0))
    with pytest.raises(ValueError, match="^checkpoint: .*layer20.running_var"):
        load_checkpoint(path, model)


def test_accelerator_backends_run_a_resnet_step_with_the_per_op_check(rng):
    """Batch normalisation, residual adds and global average pooling all have kernels: resnet8 trains a step on
    both accelerator backends, every op within the float32 tolerance of the reference, and predicts with the
    running statistics as the reference does. Every backward-data convolution fed by a batch normalisation runs
    the gather form (no encoder windows; in program mode its descriptors carry FLAG_GATHER)."""
    from zskip.host.ip.program import decode
    from zskip.host.backends import make_backend
    from zskip.host.runtime.streaming import Batch
    from zskip.models.check import TOLERANCES
    model = get_model("resnet8", (1, 28, 28))
    x = rng.random((2, 1, 28, 28)).astype(np.float32)
    params = model.init_params(0)
    for mode in ("program", "ops"):
        backend = make_backend("emu", mode=mode)
        try:
            (out,) = list(backend.stream(model, params, model.zero_velocities(), [Batch(x, np.array([0, 1]), check=True)],
                                         0.01, 0.9, 0.0))
            assert out.check.max_rel_error <= TOLERANCES["float32"].rtol
            assert {"bn1 fwd", "block1 add", "avgpool1 fwd", "avgpool1 bwd"} <= {t.layer for t in out.check.tensors}
            bwd_data = [info["kernel"]["bwd_data"] for info in out.result.layers
                        if info["kind"] == "conv" and "bwd_data" in info["kernel"]]
            assert bwd_data and all(k["enc_iters"] == 0 for k in bwd_data), "a conv backward-data ran scatter"
            if mode == "program":
                (program,) = backend._programs.values()
                conv_bwd = [d for d in map(decode, program.words) if d["opcode"] == "CONV_BWD_DATA"]
                assert conv_bwd and all("GATHER" in d["flags"] for d in conv_bwd)
            logits = backend.predict(model, out.result.params, x)
            ref = predict(ReferenceOps(), model, out.result.params, x)
            np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        finally:
            backend.close()


def test_resumed_resnet_run_with_augmentation_is_bit_identical(tmp_path, rng):
    from test_datasets import _write_cifar
    from zskip.host.backends import make_backend
    from zskip.models.datasets import load_dataset
    from zskip.models.train import train
    _write_cifar(tmp_path / "data", rng, per_file=4, test=4)
    data = load_dataset(f"cifar10:{tmp_path / 'data'}:augment")
    model = get_model("resnet8", data.input_shape)

    def run(dataset, **kw):
        return train(make_backend("reference", account=False), model, dataset, epochs=2, batch_size=8, lr=0.05,
                     momentum=0.9, weight_decay=1e-4, seed=3, quiet=True, **kw)

    whole = run(data)
    path = tmp_path / "run.npz"
    first = run(data, checkpoint=path, max_steps=4)
    assert first.report["stopped_at"] == {"epoch": 1, "step": 1}
    rest = run(data, checkpoint=path, resume=True)
    assert set(rest.params) == set(model.state_shapes())
    for key in whole.params:
        assert np.array_equal(whole.params[key], rest.params[key]), key
    assert [e["test_accuracy"] for e in whole.report["epochs"]] == [e["test_accuracy"] for e in rest.report["epochs"]]
    # the running statistics moved, and augmentation changed the trajectory
    assert not np.array_equal(whole.params["layer1.running_mean"], model.init_params(3)["layer1.running_mean"])
    plain = run(load_dataset(f"cifar10:{tmp_path / 'data'}"))
    assert not np.array_equal(plain.params["layer0.w"], whole.params["layer0.w"])


def test_resnet8_trains_on_mnist_with_checks_on_the_reference(mnist5k):
    # the always-on form of the accuracy goal: a few steps, every one compared op by op with the reference
    from zskip.host.backends import make_backend
    from zskip.models.train import train
    data = mnist5k.subset(train=64, test=32)
    model = get_model("resnet8", data.input_shape)
    result = train(make_backend("reference"), model, data, epochs=2, batch_size=32, lr=0.05, momentum=0.9,
                   seed=0, quiet=True, check_every=1)
    epochs = result.report["epochs"]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]
    assert result.report["check"]["batches_checked"] == 4 and result.report["check"]["max_rel_error"] == 0.0
    layers = {l["index"]: l for l in epochs[-1]["layers"]}
    assert sorted(layers) == [i for i, l in enumerate(model.flat_layers) if l.kind in ("conv", "linear")]
    split = layers[3]["macs"]["bwd_data"]       # first conv of the first block: dy dense after BN
    assert split["macs_skipped_input"] == 0 and 0 < split["macs_skipped_output"] < split["macs_dense"]


@pytest.mark.slow
def test_resnet8_accuracy_on_mnist5k_in_3_epochs_on_the_reference(mnist5k):
    # Issue 15's goal is >= 97 % within 3 epochs (batch 64, fixed seed) on emu. With a constant learning
    # rate the reference reaches 90.8 % here (lr 0.1; 86.9 % at lr 0.05, 77.4 % at lr 0.2): this test
    # guards the measured level, and README's ResNet section states the gap.
    from zskip.host.backends import make_backend
    from zskip.models.train import train
    model = get_model("resnet8", mnist5k.input_shape)
    result = train(make_backend("reference", account=False), model, mnist5k, epochs=3, batch_size=64, lr=0.1,
                   momentum=0.9, weight_decay=1e-4, seed=0, quiet=True, check_every=100)
    epochs = result.report["epochs"]
    assert result.report["check"]["batches_checked"] == 2       # steps 0 and 100, op by op
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] / 3
    assert epochs[-1]["test_accuracy"] >= 0.88, [e["test_accuracy"] for e in epochs]


@pytest.mark.slow
def test_resnet20_trains_on_synthetic_data_on_emu_with_the_per_op_check():
    """ResNet-20 (3x32x32) for three steps in program mode on the emulated accelerator: every op of every
    step (convolutions, batch normalisation, residual adds, global average pooling, SGD, running statistics)
    within the float32 tolerance of the reference; the MAC accounting shows Sarma et al.'s regime (dy of
    every convolution after a batch normalisation is dense, its backward-data skips only masked outputs)."""
    from zskip.host.backends import make_backend
    from zskip.host.runtime.streaming import Batch
    from zskip.models.check import TOLERANCES
    from zskip.models.datasets import load_dataset
    data = load_dataset("synthetic:3x32x32", seed=0)
    model = get_model("resnet20", data.input_shape)
    batches = [Batch(data.x_train[i:i + 4], data.y_train[i:i + 4], check=True) for i in (0, 4, 8)]
    backend = make_backend("emu")
    try:
        outs = list(backend.stream(model, model.init_params(0), model.zero_velocities(), batches, 0.05, 0.9, 1e-4))
    finally:
        backend.close()
    assert len(outs) == 3
    names = model.layer_names()
    for out in outs:
        assert np.isfinite(out.result.loss)
        assert out.check.max_rel_error <= TOLERANCES["float32"].rtol
        layers = {t.layer for t in out.check.tensors}
        assert {"block9 add", "block1 bwd", "avgpool1 fwd", "bn19 bwd", "bn1 running stats"} <= layers
    for info in outs[-1].result.layers:
        if info["kind"] == "conv" and "bwd_data" in info["macs"]:
            split = info["macs"]["bwd_data"]
            assert split["macs_skipped_input"] == 0, names[info["index"]]
            assert 0 < split["macs_skipped_output"] < split["macs_dense"], names[info["index"]]


def test_bn_momentum_of_a_resnet_sets_how_fast_running_statistics_follow(rng):
    model = resnet(8, (1, 12, 12), bn_momentum=0.5)
    params = model.init_params(0)
    x = rng.random((4, 1, 12, 12)).astype(np.float32)
    result = train_step(ReferenceOps(), model, params, model.zero_velocities(), x, np.arange(4), 0.0, 0.0, 0.0)
    z = R.conv2d_forward(x, params["layer0.w"], params["layer0.b"], 1, 1).transpose(1, 0, 2, 3).reshape(16, -1)
    np.testing.assert_allclose(result.params["layer1.running_mean"], 0.5 * z.mean(axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.params["layer1.running_var"], 0.5 + 0.5 * z.var(axis=1, ddof=1), rtol=1e-5)


def test_resnet_architecture_round_trips_through_its_dict():
    from zskip.models.networks import model_from_dict, model_to_dict
    import json
    model = resnet(8, (1, 28, 28), bn_momentum=0.3)
    again = model_from_dict(json.loads(json.dumps(model_to_dict(model))))
    assert again == model and again.state_shapes() == model.state_shapes()
    broken = model_to_dict(model)
    broken["layers"][2]["body"][1]["kind"] = "groupnorm"
    with pytest.raises(ValueError, match=r"^architecture: layers\[2\]\.body\[1\] has kind 'groupnorm'"):
        model_from_dict(broken)
