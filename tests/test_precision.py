"""Precision specs per tensor class, float32 master weights in the optimiser state, saturation counters."""
import numpy as np
import pytest

from zskip.host import cli
from zskip.host.runtime.accelerator import Accelerator
from zskip.host.ip.precision import is_float32, parse_precision, precision_types
from zskip.models import reference as R

#: act, wgt, grad, acc in fixed point (they go together); wgt = ap_fixed<16,4> has ulp 2^-12
FIX = "act=ap_fixed<16,6>,wgt=ap_fixed<16,4>,grad=ap_fixed<16,2>,acc=ap_fixed<32,12>"


def test_shorthand_and_pairs():
    t = parse_precision("fixed16")
    assert t["act"] == "ap_fixed<16,6,AP_RND,AP_SAT>" and t["grad"] == "ap_fixed<16,2,AP_RND,AP_SAT>"
    assert t["opt"] == "float"
    t = parse_precision("act=ap_fixed<12,5,AP_TRN,AP_WRAP>, wgt=ap_fixed<12,3>,grad=ap_fixed<12,1>,"
                        "acc=ap_fixed<40,14>,opt=ap_fixed<24,4>")
    assert t == {"act": "ap_fixed<12,5,AP_TRN,AP_WRAP>", "wgt": "ap_fixed<12,3,AP_RND,AP_SAT>",
                 "grad": "ap_fixed<12,1,AP_RND,AP_SAT>", "acc": "ap_fixed<40,14,AP_RND,AP_SAT>",
                 "opt": "ap_fixed<24,4,AP_RND,AP_SAT>"}
    assert precision_types("float32") == {} and is_float32("float32") and not is_float32("fixed8")
    assert precision_types("opt=ap_fixed<8,2>") == {"ZSKIP_OPT_T": "ap_fixed<8,2,AP_RND,AP_SAT>"}


@pytest.mark.parametrize("spec,message", [
    ("float16", r"precision must be 'float32' or 'ap_fixed<W,I>'.*shorthand \(fixed16, fixed12, fixed8\)"),
    ("act=ap_fixed<16,6>,foo=float32", r"unknown tensor class 'foo'; allowed: act, wgt, grad, acc, opt"),
    ("grad=ap_fixed<16,20>", r"precision: grad: ap_fixed<W,I> needs 2 <= W <= 32 and 1 <= I <= W"),
    ("acc=ap_fixed<80,20>", r"precision: acc: ap_fixed<W,I> needs 2 <= W <= 64"),
    ("wgt=ap_fixed<16,4,AP_FLOOR,AP_SAT>", r"precision: wgt: quantisation mode must be one of AP_RND"),
    ("wgt=ap_fixed<16,4,AP_RND,AP_CLIP>", r"precision: wgt: overflow mode must be one of AP_SAT"),
    ("", r"precision: expected a spec string"),
    ("wgt=ap_fixed<16,4>", r"act, wgt, grad and acc must be all float32 or all ap_fixed"),
])
def test_bad_specs_name_the_class_and_the_allowed_values(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_precision(spec)


def test_saturations_counted_per_descriptor():
    """sgd_update loads each gradient once as grad_t = ap_fixed<8,2> (range [-2, 2 - 2^-6]);
    every load at or beyond a limit is one saturation."""
    acc = Accelerator.emulated(precision=FIX + ",grad=ap_fixed<8,2>")
    g = np.array([0.5, 1.99, 2.0 - 2 ** -6, 2.5, -2.0, -3.0, 100.0, 0.0], np.float32)
    p, v = np.zeros_like(g), np.zeros_like(g)
    p2, _ = acc.sgd_update(p, g, v, lr=1.0, momentum=0.0, weight_decay=0.0)
    expected = int(np.count_nonzero((g >= 2.0 - 2 ** -6) | (g <= -2.0)))
    assert expected == 6 and acc.last_stats["saturations"] == expected
    # saturated, not wrapped: the update uses the clipped gradient
    assert p2[6] == pytest.approx(-(2.0 - 2 ** -6)) and p2[5] == pytest.approx(2.0)
    acc.sgd_update(p, np.full(8, 0.25, np.float32), v, lr=1.0, momentum=0.0, weight_decay=0.0)
    assert acc.last_stats["saturations"] == 0
    # float32 classes never count
    acc32 = Accelerator.emulated()
    acc32.sgd_update(p, g, v, lr=1.0, momentum=0.0, weight_decay=0.0)
    assert acc32.last_stats["saturations"] == 0


def test_float32_master_weights_keep_updates_below_one_weight_ulp():
    """wgt = ap_fixed<16,4> has ulp 2^-12; an SGD step of 1e-5 rounds away when the optimiser state is
    wgt-sized but accumulates in a float32 master copy (lr * g ~ 1e-5) (the reference rule, computed in float)."""
    p = np.full(64, 0.25, np.float32)
    g = np.full(64, 2.0 ** -10, np.float32)  # exact in grad = ap_fixed<16,2>
    v = np.zeros(64, np.float32)
    narrow = Accelerator.emulated(precision=FIX + ",opt=ap_fixed<16,4>")
    master = Accelerator.emulated(precision=FIX + ",opt=float32")
    pn, pm, pr, vr = p, p, p, v
    vn, vm = v, v
    for _ in range(10):
        pn, vn = narrow.sgd_update(pn, g, vn, lr=0.01, momentum=0.0, weight_decay=0.0)
        pm, vm = master.sgd_update(pm, g, vm, lr=0.01, momentum=0.0, weight_decay=0.0)
        pr, vr = R.sgd_update(pr, g, vr, 0.01, 0.0, 0.0)
    assert np.all(pn == 0.25), "a 1e-5 step is below half an ulp of ap_fixed<16,4>"
    np.testing.assert_allclose(pm, pr, rtol=0, atol=1e-7)
    assert np.all(pm < 0.25 - 9e-5)


def test_fixed_point_forward_reads_the_master_copy_narrowed():
    """The MAC kernels narrow the float32 master weights to wgt_t on load: a weight between two
    ap_fixed<16,4> steps gives the same output as the rounded weight."""
    acc = Accelerator.emulated(precision=FIX)
    x = np.ones((1, 8), np.float32)
    w = np.full((2, 8), 0.25 + 2 ** -14, np.float32)
    y, _ = acc.linear_forward(x, w, np.zeros(2, np.float32), relu=False)
    np.testing.assert_allclose(y, 8 * 0.25, rtol=0, atol=1e-6)


def test_training_warns_naming_the_saturating_layer(tmp_path):
    """act = ap_fixed<16,2> holds [-2, 2): LeNet-5's first convolution outputs exceed 2 (reference
    forward), so the second convolution loads saturated activations and the warning names it
    (a saturation is counted where the saturated value is loaded: the next layer)."""
    from zskip.host.backends import make_backend
    from zskip.models.datasets import load_dataset
    from zskip.models.networks import get_model
    from zskip.models.train import train
    model = get_model("lenet5")
    data = load_dataset("mnist5k").subset(64, 16)
    params = model.init_params(0)
    y0 = R.conv2d_forward(data.x_train[:32], params["layer0.w"], params["layer0.b"], model.layers[0].stride,
                          model.layers[0].pad)
    assert data.x_train.max() < 2 and y0.max() > 2
    backend = make_backend("emu", precision="act=ap_fixed<16,2>,wgt=ap_fixed<16,4>,grad=ap_fixed<16,2>,"
                                            "acc=ap_fixed<32,12>")
    try:
        with pytest.warns(RuntimeWarning) as warned:
            result = train(backend, model, data, epochs=1, batch_size=32, quiet=True, max_saturations=10)
    finally:
        backend.close()
    layers = result.report["epochs"][0]["layers"]
    assert layers[0]["saturations"] == 0 and layers[1]["index"] == 2 and layers[1]["name"] == "conv2" and layers[1]["saturations"] > 10
    messages = [str(w.message) for w in warned]
    assert any(m.startswith("conv2: ") and "saturated fixed-point conversions in epoch 1" in m
               for m in messages)
    assert not any(m.startswith("conv1") for m in messages)


def test_cli_precision_errors(capsys):
    assert cli.main(["train", "--backend", "emu", "--precision", "float16", "--epochs", "1", "--quiet"]) == 2
    assert "precision must be 'float32' or 'ap_fixed<W,I>'" in capsys.readouterr().err
    assert cli.main(["train", "--backend", "reference", "--precision", "fixed16", "--epochs", "1", "--quiet"]) == 2
    assert "the reference backend computes in numpy" in capsys.readouterr().err
    assert cli.main(["train", "--backend", "reference", "--prune-rate", "1.5", "--epochs", "1", "--quiet"]) == 2
    assert "prune_rate: must be a number in [0, 1)" in capsys.readouterr().err


def test_cli_trains_fixed_point_with_pruning(tmp_path):
    import json
    report = tmp_path / "r.json"
    assert cli.main(["train", "--backend", "emu", "--precision", "fixed16", "--prune-rate", "0.9", "--epochs", "1",
                     "--limit-train", "128", "--limit-test", "32", "--batch-size", "32", "--quiet",
                     "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["config"]["precision"] == "fixed16" and r["config"]["prune_rate"] == 0.9
    layers = r["epochs"][0]["layers"]
    pruned = [l for l in layers if "pruned_grad_sparsity" in l]
    assert len(pruned) == len(layers) - 1
    assert all(l["pruned_grad_sparsity"] > l["grad_sparsity"] and l["prune_tau"] > 0 for l in pruned)
    assert all("saturations" in l for l in layers)


def test_loss_scale_rule():
    from zskip.host.ip.precision import LOSS_SCALE_HEADROOM_BITS, loss_scale
    assert loss_scale("float32", 64) == 1.0
    for spec, grad_int_bits in (("fixed16", 2), ("fixed12", 1), ("fixed8", 1)):
        for batch in (1, 7, 64, 100):
            s = loss_scale(spec, batch)
            assert np.frexp(s)[0] == 0.5, "a power of two"
            # the largest power of two keeping |dlogit| <= 1 / batch below grad_t's limit by the headroom
            limit = 2.0 ** (grad_int_bits - 1 - LOSS_SCALE_HEADROOM_BITS)
            assert s / batch <= limit < 2 * s / batch
    with pytest.raises(ValueError, match=r"batch: must be an integer >= 1"):
        loss_scale("fixed16", 0)


def test_scaled_softmax_and_sgd_match_the_reference():
    acc = Accelerator.emulated()
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((8, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    loss1, d1 = R.softmax_cross_entropy(logits, labels)
    loss8, d8 = acc.softmax_xent(logits, labels, grad_scale=8.0)
    assert loss8 == pytest.approx(loss1, rel=1e-6)
    np.testing.assert_allclose(d8, 8 * d1, rtol=1e-5, atol=1e-7)
    p, g, v = (rng.standard_normal(50).astype(np.float32) for _ in range(3))
    p2, v2 = acc.sgd_update(p, 8 * g, v, lr=0.1, momentum=0.9, weight_decay=1e-3, grad_scale=8.0)
    pr, vr = R.sgd_update(p, g, v, 0.1, 0.9, 1e-3)
    np.testing.assert_allclose(p2, pr, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v2, vr, rtol=1e-6, atol=1e-7)
    for bad in (3.0, 0.0, -2.0, float("inf"), 2.0 ** 40):
        with pytest.raises(ValueError, match=r"grad_scale: must be a power of two"):
            acc.softmax_xent(logits, labels, grad_scale=bad)


def test_loss_scaling_keeps_fixed_point_gradients_from_underflowing():
    """fixed16 gradients (ap_fixed<16,2>, ulp 2^-14): zeros beyond the float32 reference's (ReLU)
    zeros are gradients that rounded to zero. With the rule's loss scale there are far fewer."""
    from zskip.host.ip.precision import loss_scale
    from zskip.models.datasets import load_dataset
    from zskip.models.networks import get_model
    from zskip.models.ops import ReferenceOps
    from zskip.models.step import train_step
    model = get_model("lenet5")
    data = load_dataset("mnist5k")
    x, y = data.x_train[:64], data.y_train[:64]
    sparsity = lambda ops, scale: np.array([l["grad_sparsity"] for l in train_step(
        ops, model, model.init_params(0), model.zero_velocities(), x, y, 0.02, 0.9, 0.0, grad_scale=scale).layers])
    reference = sparsity(ReferenceOps(), 1.0)
    acc = Accelerator.emulated(precision="fixed16")
    underflow = {s: float(np.sum(sparsity(acc, s) - reference)) for s in (1.0, loss_scale("fixed16", 64))}
    assert underflow[1.0] > 0.01
    assert 0 <= underflow[16.0] < underflow[1.0] / 4
