"""Pre-defined structured sparsity: clash-free connection patterns, the compressed reference passes against
the dense reference with a mask, sparse models in training, the CLI and the emu backend's refusal."""
import json

import numpy as np
import pytest

from zskip.host import cli
from zskip.models import reference as R
from zskip.models import structured as S
from zskip.models.networks import get_model
from zskip.models.ops import ReferenceOps
from zskip.models.step import train_step


def schedule(edges, n_in, lanes):
    """The documented schedule, written out: a new cycle at every round start (a multiple of n_in) and after
    `lanes` edges. Returns a list of edge lists."""
    cycles, cur = [], []
    for e in range(edges):
        if cur and (e % n_in == 0 or len(cur) == lanes):
            cycles.append(cur)
            cur = []
        cur.append(e)
    if cur:
        cycles.append(cur)
    return cycles


def lane_conflicts(idx, n_in, lanes):
    """Cycles in which two lanes need different words of one bank: inputs (x, dx: bank i mod P), outputs
    (y, dy: bank j mod P; lanes on the same output share its word) or weights (bank e mod P)."""
    n_out, fan_in = idx.shape
    flat = idx.reshape(-1)
    bad = 0
    for cyc in schedule(n_out * fan_in, n_in, lanes):
        e = np.array(cyc)
        inputs, outputs = flat[e], np.unique(e // fan_in)
        if (len(np.unique(inputs % lanes)) < len(e) or len(np.unique(outputs % lanes)) < len(outputs)
                or len(np.unique(e % lanes)) < len(e)):
            bad += 1
    return bad


SIZES = [(16, 10), (17, 5), (31, 84), (64, 64), (120, 84), (256, 120), (300, 7)]


@pytest.mark.parametrize("lanes", [4, 8, 16])
@pytest.mark.parametrize("n_in,n_out", SIZES)
def test_patterns_are_clash_free_with_fixed_fan_in_and_fan_out(n_in, n_out, lanes):
    for density in (0.03, 0.1, 0.25, 0.5, 0.9, 1.0):
        p = S.connection_pattern(n_in, n_out, density, seed=7, lanes=lanes)
        where = f"n_in {n_in} n_out {n_out} density {density} lanes {lanes}"
        assert p.idx.shape == (n_out, p.fan_in) and p.fan_in == max(1, round(density * n_in)), where
        assert all(len(set(row)) == p.fan_in for row in p.idx.tolist()), f"{where}: repeated input of an output"
        fan_out = np.bincount(p.idx.reshape(-1), minlength=n_in)
        assert fan_out.max() - fan_out.min() <= 1, where
        if p.edges % n_in == 0:
            assert np.all(fan_out == p.edges // n_in), where
        assert lane_conflicts(p.idx, n_in, lanes) == 0, where
        cycles = schedule(p.edges, n_in, lanes)
        assert [(c[0], c[-1] + 1) for c in cycles] == [tuple(r) for r in p.cycles()], where


def test_the_conflict_check_finds_conflicts_in_random_patterns():
    rng = np.random.default_rng(0)
    idx = np.array([rng.choice(120, 30, replace=False) for _ in range(84)])
    assert lane_conflicts(idx, 120, 16) > 0


def test_patterns_depend_on_the_seed_only():
    a = S.connection_pattern(256, 120, 0.25, seed=(3, 5))
    assert np.array_equal(a.idx, S.connection_pattern(256, 120, 0.25, seed=(3, 5)).idx)
    assert not np.array_equal(a.idx, S.connection_pattern(256, 120, 0.25, seed=(4, 5)).idx)
    with pytest.raises(ValueError, match=r"density: must be a number in \(0, 1\]"):
        S.connection_pattern(256, 120, 0.0)
    with pytest.raises(ValueError, match=r"density: a sparse junction needs at least lanes = 16 inputs"):
        S.connection_pattern(10, 4, 0.5, lanes=16)


def test_sparse_passes_equal_the_dense_reference_with_a_mask(rng):
    p = S.connection_pattern(120, 84, 0.25, seed=1)
    x = rng.standard_normal((8, 120)).astype(np.float32)
    x[x < 0] = 0
    dy = rng.standard_normal((8, 84)).astype(np.float32)
    values = rng.standard_normal((84, p.fan_in)).astype(np.float32)
    b = rng.standard_normal(84).astype(np.float32)
    dense = p.expand(values)
    assert dense.shape == (84, 120) and np.count_nonzero(p.mask()) == p.edges
    assert np.array_equal(p.compress(dense), values) and np.all(dense[~p.mask()] == 0)
    np.testing.assert_allclose(S.sparse_linear_forward(x, values, b, p), R.linear_forward(x, dense, b),
                               rtol=1e-5, atol=1e-5)
    dx_dense, dw_dense, db_dense = R.linear_backward(dy, x, dense)
    np.testing.assert_allclose(S.sparse_linear_backward_data(dy, values, p), dx_dense, rtol=1e-5, atol=1e-5)
    dv, db = S.sparse_linear_backward_weight(x, dy, p)
    np.testing.assert_allclose(dv, p.compress(dw_dense), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, db_dense, rtol=1e-6)
    with pytest.raises(ValueError, match=r"w: a sparse junction stores \(outputs, fan_in\) = \(84, 30\) values"):
        S.sparse_linear_forward(x, dense, b, p)


def test_sparse_mac_accounting_counts_edges(rng):
    p = S.connection_pattern(32, 12, 0.25, seed=2, lanes=8)
    x = (rng.random((3, 32)) < 0.5) * 1.0
    dy = (rng.random((3, 12)) < 0.5) * 1.0
    live = rng.random((3, 32)) < 0.7
    fwd = bwd_d = bwd_w = 0
    for n in range(3):
        for j in range(12):
            for i in p.idx[j]:
                fwd += x[n, i] != 0
                bwd_d += dy[n, j] != 0 and live[n, i]
                bwd_w += dy[n, j] != 0 and x[n, i] != 0
    m = S.sparse_linear_macs(x, dy, p, out_mask=live)
    assert m["fwd"] == {"macs_dense": 3 * 12 * 32, "macs_nonzero": fwd}   # the dense junction's MACs
    assert m["bwd_data"]["macs_nonzero"] == bwd_d and m["bwd_weight"]["macs_nonzero"] == bwd_w


def test_sparse_model_step_equals_the_masked_dense_step(mnist5k):
    """One SGD step of LeNet-5 with sparse fc junctions equals the dense model started from the expanded
    weights, its updates restricted to the existing edges."""
    dense_model = get_model("lenet5")
    model = dense_model.with_density(0.25, seed=4)
    shapes = model.param_shapes()
    p5, p6 = model.pattern(5), model.pattern(6)
    assert shapes["layer5.w"] == (120, 64) and shapes["layer6.w"] == (84, 30) and shapes["layer7.w"] == (10, 84)
    assert model.pattern(7) is None and p5.edges == 120 * 64
    params = model.init_params(0)
    assert params["layer5.w"].std() == pytest.approx(np.sqrt(2 / 64), rel=0.05)   # He init on the real fan-in
    dense = dict(params, **{"layer5.w": p5.expand(params["layer5.w"]), "layer6.w": p6.expand(params["layer6.w"])})
    x, y = mnist5k.x_train[:32], mnist5k.y_train[:32]
    args = dict(x=x, y=y, lr=0.05, momentum=0.9, weight_decay=0.0)
    sparse = train_step(ReferenceOps(), model, params, model.zero_velocities(), **args)
    full = train_step(ReferenceOps(), dense_model, dense, dense_model.zero_velocities(), **args)
    assert sparse.loss == pytest.approx(full.loss, rel=1e-5)
    for key, p in (("layer5.w", p5), ("layer6.w", p6)):
        np.testing.assert_allclose(p.expand(sparse.params[key]), full.params[key] * p.mask(), rtol=1e-4, atol=1e-6)
    for key in ("layer0.w", "layer2.w", "layer7.w", "layer5.b"):
        np.testing.assert_allclose(sparse.params[key], full.params[key], rtol=1e-4, atol=1e-6)
    info = {l["index"]: l for l in sparse.layers}
    assert info[5]["density"] == 0.25 and info[5]["edges"] == 7680 and info[7]["density"] == 1.0
    assert info[5]["macs"]["fwd"]["macs_dense"] == 32 * 120 * 256   # the dense junction: 256 inputs
    assert info[5]["macs"]["fwd"]["macs_nonzero"] <= 32 * 7680


def test_cli_density_on_the_reference_and_on_emu(tmp_path, capsys):
    args = ["train", "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--batch-size", "32", "--quiet"]
    report = tmp_path / "r.json"
    assert cli.main(args + ["--backend", "reference", "--density", "0.5", "--density-seed", "3",
                            "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["config"]["density"] == 0.5 and r["config"]["density_seed"] == 3
    layers = {l["index"]: l for l in r["epochs"][0]["layers"]}
    assert (layers[5]["density"], layers[5]["edges"]) == (0.5, 120 * 128)
    assert (layers[6]["density"], layers[6]["edges"]) == (0.5, 84 * 60)
    assert (layers[7]["density"], layers[7]["edges"]) == (1.0, 840) and layers[0]["edges"] == 150
    # the emu backend runs them on the sparse_fc kernels (tests/test_sparse_fc.py)
    assert cli.main(args + ["--backend", "emu", "--density", "0.5"]) == 0
    assert cli.main(args + ["--backend", "reference", "--density", "1.5"]) == 2
    assert "density: must be a number in (0, 1]" in capsys.readouterr().err


def test_sparse_passes_take_the_multiplier(rng):
    """With mul=mitchell the sparse forward equals the dense pluggable-multiplier forward on the expanded weights
    (zero weights contribute exact zeros to the float64 sums)."""
    from zskip.models import mul_reference as MR
    p = S.connection_pattern(64, 20, 0.25, seed=3)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    values = rng.standard_normal((20, p.fan_in)).astype(np.float32)
    b = np.zeros(20, np.float32)
    ops = ReferenceOps(mul="mitchell")
    y, _ = ops.sparse_linear_forward(x, values, b, p, relu=False)
    np.testing.assert_allclose(y, MR.linear_forward(x, p.expand(values), b, "mitchell"), rtol=1e-6, atol=1e-7)
    assert np.abs(y - S.sparse_linear_forward(x, values, b, p)).max() > 1e-3


def test_resume_refuses_another_connection_pattern(tmp_path, mnist5k):
    """Two densities' or seeds' patterns can have the same weight shapes: the checkpoint's config tells them apart."""
    from zskip.host.backends import make_backend
    from zskip.models.train import train
    data = mnist5k.subset(64, 16)
    ckpt = tmp_path / "run.npz"
    backend = make_backend("reference", account=False)
    model = get_model("lenet5").with_density(0.5, seed=1)
    r = train(backend, model, data, epochs=1, batch_size=32, quiet=True, checkpoint=str(ckpt), max_steps=1)
    assert r.report["config"]["sparse_junctions"] == {"fc1": [0.5, 1, 0], "fc2": [0.5, 1, 0]}
    with pytest.raises(ValueError, match=r"was written with sparse_junctions=.*resuming needs the same value"):
        train(backend, get_model("lenet5").with_density(0.5, seed=2), data, epochs=1, batch_size=32, quiet=True,
              checkpoint=str(ckpt), resume=True)
    r = train(backend, model, data, epochs=1, batch_size=32, quiet=True, checkpoint=str(ckpt), resume=True)
    assert len(r.report["epochs"]) == 1
