"""Model definitions (shape inference, init) and the Ops-only training step."""
import numpy as np
import pytest

from zskip.models import reference as R
from zskip.models.networks import Model, conv, flatten, get_model, linear, maxpool, MODELS
from zskip.models.ops import ReferenceOps
from zskip.models.step import predict, train_step


def test_lenet5_shapes():
    shapes = [out for _, out in get_model("lenet5").shapes()]
    assert shapes == [(6, 24, 24), (6, 12, 12), (16, 8, 8), (16, 4, 4), (256,), (120,), (84,), (10,)]


def test_vgg_tiny_and_strided_shapes():
    assert [o for _, o in get_model("vgg_tiny").shapes()][-4:] == [(128, 4, 4), (2048,), (256,), (10,)]
    strided = get_model("vgg_strided")
    assert any(getattr(layer, "stride", 1) == 2 and layer.kind == "conv" for layer in strided.layers)
    assert [o for _, o in strided.shapes()][:6] == [(32, 32, 32), (32, 16, 16), (64, 16, 16), (64, 8, 8),
                                                   (128, 8, 8), (128, 4, 4)]


@pytest.mark.parametrize("layers,fragment", [
    ((conv(4, 7), flatten(), linear(2)), "larger than its padded input"),
    ((flatten(), conv(4, 3), flatten(), linear(2)), "needs a (C, H, W) input"),
    ((conv(4, 3), linear(2)), "add flatten()"),
    ((conv(4, 3),), "must end with a linear layer"),
])
def test_inconsistent_models_fail_at_construction(layers, fragment):
    with pytest.raises(ValueError, match="layers") as info:
        Model("bad", (1, 6, 6), layers)
    assert fragment in str(info.value)


def test_layer_spec_arguments_are_validated():
    with pytest.raises(ValueError, match="^stride:"):
        conv(4, 3, stride=0)
    with pytest.raises(ValueError, match="^out:"):
        linear(0)


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError) as info:
        get_model("resnet50")
    assert str(info.value).startswith("model:")
    for name in MODELS:
        assert name in str(info.value)


def test_init_is_deterministic_and_he_scaled():
    m = get_model("vgg_tiny")
    a, b, c = m.init_params(3), m.init_params(3), m.init_params(4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["layer0.w"], c["layer0.w"])
    assert all(v.dtype == np.float32 for v in a.values())
    w = a["layer9.w"]                     # 256 x 2048, followed by a ReLU
    assert w.std() == pytest.approx(np.sqrt(2 / 2048), rel=0.02)
    assert not a["layer10.b"].any()


# Strided and padded convolutions, overlapping pooling. Every conv output sees
# at least one image pixel: an output that sees only padding equals its zero
# bias, sits on the ReLU kink, and finite differences there are meaningless.
TINY = Model("tiny", (2, 9, 8), (
    conv(3, 3, stride=2, pad=1), maxpool(2, 1), conv(4, 3, pad=2), maxpool(2),
    flatten(), linear(5), linear(3, relu=False)))


def _loss(model, params, x, y):
    return R.softmax_cross_entropy(predict(ReferenceOps(), model, params, x), y)[0]


def test_train_step_gradient_matches_finite_differences(rng):
    # lr 1, no momentum or decay: param' = param - grad, so the step's update is
    # the whole network's gradient, compared with central differences in float64
    params = {k: v.astype(np.float64) for k, v in TINY.init_params(5).items()}
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    x = rng.standard_normal((3, 2, 9, 8))
    y = np.array([0, 2, 1])
    result = train_step(ReferenceOps(), TINY, params, zeros, x, y, lr=1.0, momentum=0.0, weight_decay=0.0)
    assert result.loss == pytest.approx(_loss(TINY, params, x, y), rel=1e-12)
    eps = 1e-6
    for key, p in params.items():
        analytic = p - result.params[key]
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            plus = _loss(TINY, params, x, y)
            p[i] = old - eps
            minus = _loss(TINY, params, x, y)
            p[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-8, err_msg=key)


class SpyOps(ReferenceOps):
    """ReferenceOps that records each call's name and out_mask."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if callable(attr) and not name.startswith("_") and name in ReferenceOps.__dict__:
            def record(*args, **kwargs):
                self.calls.append((name, kwargs.get("out_mask")))
                return attr(*args, **kwargs)
            return record
        return attr


def test_step_skips_first_backward_data_and_passes_relu_masks(rng):
    model = get_model("lenet5")
    params, vel = model.init_params(0), model.zero_velocities()
    x = rng.random((4, 1, 28, 28)).astype(np.float32)
    spy = SpyOps()
    result = train_step(spy, model, params, vel, x, np.array([1, 2, 3, 4]), 0.01, 0.9, 0.0)
    names = [n for n, _ in spy.calls]
    assert names.count("conv_backward_data") == 1          # layer 2 only: layer 0 needs no dx
    assert names.count("linear_backward_data") == 3
    assert names.count("sgd_update") == 10
    masks = [m for n, m in spy.calls if n.endswith("backward_data")]
    assert all(m is not None for m in masks)
    # the mask given to conv layer 2's backward-data is pool 1's output > 0, recomputed here
    pool_in = R.relu_forward(R.conv2d_forward(x, params["layer0.w"], params["layer0.b"]))[0]
    pooled = R.maxpool2d_forward(pool_in, 2, 2)[0]
    np.testing.assert_array_equal(masks[-1], pooled > 0)
    assert [info["index"] for info in result.layers] == [0, 2, 5, 6, 7]
    assert "bwd_data" not in result.layers[0]["macs"] and "bwd_data" in result.layers[1]["macs"]


def test_step_sparsity_counts_zeros_of_each_layer_input(rng):
    model = get_model("lenet5")
    params = model.init_params(1)
    x = rng.random((3, 1, 28, 28)).astype(np.float32)
    x[x < 0.5] = 0
    result = train_step(ReferenceOps(), model, params, model.zero_velocities(), x, np.array([0, 1, 2]),
                        0.01, 0.0, 0.0)
    assert result.layers[0]["input_sparsity"] == pytest.approx(np.mean(x == 0))
    h = R.relu_forward(R.conv2d_forward(x, params["layer0.w"], params["layer0.b"]))[0]
    h = R.maxpool2d_forward(h, 2, 2)[0]
    assert result.layers[1]["input_sparsity"] == pytest.approx(np.mean(h == 0))
    for info in result.layers:
        assert 0.0 <= info["grad_sparsity"] <= 1.0


def test_strided_model_trains_a_step(rng):
    model = get_model("vgg_strided")
    params = model.init_params(0)
    x = rng.random((2, 3, 32, 32)).astype(np.float32)
    y = np.array([3, 7])
    before = _loss(model, params, x, y)
    vel = model.zero_velocities()
    for _ in range(3):
        result = train_step(ReferenceOps(), model, params, vel, x, y, 0.01, 0.9, 0.0)
        params, vel = result.params, result.velocities
    assert _loss(model, params, x, y) < before


def test_step_rejects_wrong_input_shape():
    model = get_model("lenet5")
    with pytest.raises(ValueError, match="^x:"):
        predict(ReferenceOps(), model, model.init_params(0), np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ValueError, match="^lr:"):
        train_step(ReferenceOps(), model, model.init_params(0), model.zero_velocities(),
                   np.zeros((2, 1, 28, 28), np.float32), np.array([0, 1]), float("nan"), 0.9, 0.0)


def test_layers_have_readable_names_numbered_per_kind():
    assert get_model("lenet5").layer_names() == ("conv1", "pool1", "conv2", "pool2", "flatten1", "fc1", "fc2", "fc3")
    mixed = Model("mixed", (1, 8, 8), (conv(2, 3), conv(2, 3), maxpool(), flatten(), linear(4), linear(3)))
    assert mixed.layer_names() == ("conv1", "conv2", "pool1", "flatten1", "fc1", "fc2")
    assert "  1 conv2: conv 3x3 2" in mixed.describe()
