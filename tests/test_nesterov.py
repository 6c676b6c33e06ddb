"""Nesterov momentum: the reference against PyTorch, the SGD kernel against the reference, training and resume."""
import json

import numpy as np
import pytest

from zskip.host.backends import make_backend
from zskip.host.ip.program import FLAGS, decode
from zskip.host.runtime.accelerator import Accelerator
from zskip.models import reference as R
from zskip.models.networks import get_model
from zskip.models.train import train


def test_reference_follows_pytorch_sgd_with_nesterov(rng):
    torch = pytest.importorskip("torch")
    p0 = rng.standard_normal(12).astype(np.float64)
    grads = [rng.standard_normal(12) for _ in range(4)]
    tp = torch.tensor(p0.copy(), requires_grad=True)
    opt = torch.optim.SGD([tp], lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    p, v = p0.copy(), np.zeros(12)
    for g in grads:
        tp.grad = torch.tensor(g)
        opt.step()
        p, v = R.sgd_update(p, g, v, 0.1, 0.9, 1e-2, nesterov=True)
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-12)
    heavy = R.sgd_update(p0, grads[0], np.ones(12), 0.1, 0.9, 1e-2)[0]
    look_ahead = R.sgd_update(p0, grads[0], np.ones(12), 0.1, 0.9, 1e-2, nesterov=True)[0]
    # heavy ball steps by v', Nesterov by g' + momentum v': they differ by lr (g' + (momentum - 1) v')
    g_decayed = grads[0] + 1e-2 * p0
    v_new = 0.9 + g_decayed
    np.testing.assert_allclose(heavy - look_ahead, 0.1 * (g_decayed - 0.1 * v_new), rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def acc():
    return Accelerator.emulated()


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_kernel_matches_the_reference(acc, rng, nesterov):
    p = rng.standard_normal((3, 5, 7)).astype(np.float32)
    g = rng.standard_normal(p.shape).astype(np.float32)
    v = rng.standard_normal(p.shape).astype(np.float32)
    p2, v2 = acc.sgd_update(p, g, v, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    p_ref, v_ref = R.sgd_update(p.astype(np.float64), g, v, 0.05, 0.9, 1e-3, nesterov=nesterov)
    np.testing.assert_allclose(v2, v_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p2, p_ref, rtol=1e-6, atol=1e-6)
    other = R.sgd_update(p.astype(np.float64), g, v, 0.05, 0.9, 1e-3, nesterov=not nesterov)[0]
    assert np.abs(p2 - other).max() > 1e-3          # the flag reached the kernel


@pytest.fixture(scope="module")
def small(mnist5k):
    return mnist5k.subset(train=128, test=64)       # 2 steps per epoch at batch 64


def _run(small, backend="reference", **kw):
    b = make_backend(backend)
    try:
        return train(b, get_model("lenet5"), small, epochs=2, batch_size=64, lr=0.05, momentum=0.9,
                     weight_decay=1e-4, seed=5, quiet=True, **kw)
    finally:
        b.close()


def test_device_program_carries_the_flag_and_follows_the_reference(small):
    """emu in program mode, every step checked against the reference's Nesterov update; the weights
    after the run follow the reference's own run and differ from heavy-ball training."""
    emu = _run(small, backend="emu", nesterov=True, check_every=1)
    assert emu.report["check"]["batches_checked"] == 4
    assert emu.report["config"]["nesterov"] is True
    ref = _run(small, nesterov=True)
    heavy = _run(small)
    for k in ref.params:
        np.testing.assert_allclose(emu.params[k], ref.params[k], rtol=0, atol=2e-4, err_msg=k)
    assert max(np.abs(heavy.params[k] - ref.params[k]).max() for k in ref.params) > 1e-3

    backend = make_backend("emu")
    try:
        prog = backend.program(get_model("lenet5"), "train", 8, 0.05, 0.9, 0.0, True)
        sgd = [decode(w) for w in prog.words if decode(w)["opcode"] == "SGD_UPDATE"]
        assert sgd and all("NESTEROV" in d["flags"] for d in sgd)
        plain = backend.program(get_model("lenet5"), "train", 8, 0.05, 0.9, 0.0, False)
        assert all(not int(w[1]) & FLAGS["NESTEROV"] for w in plain.words)
    finally:
        backend.close()


def test_resume_keeps_nesterov(small, tmp_path):
    path = tmp_path / "run.npz"
    _run(small, nesterov=True, checkpoint=path, max_steps=1)
    with pytest.raises(ValueError, match="^checkpoint: .*nesterov=True, this run has nesterov=False"):
        _run(small, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="^nesterov: must be True or False, got 'yes'"):
        _run(small, nesterov="yes")


def test_cli_flag_reaches_the_report(tmp_path):
    from zskip.host.cli import main
    report = tmp_path / "r.json"
    main(["train", "--model", "lenet5", "--data", "mnist5k", "--backend", "reference", "--epochs", "1",
          "--limit-train", "64", "--limit-test", "32", "--nesterov", "--quiet", "--report", str(report)])
    assert json.loads(report.read_text())["config"]["nesterov"] is True
