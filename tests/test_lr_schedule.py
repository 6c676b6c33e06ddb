"""Learning-rate schedules: the rates, exact resume, and the device program's rewritten lr."""
import math

import numpy as np
import pytest

from zskip.host.backends import make_backend
from zskip.models.lr_schedule import lr_at
from zskip.models.networks import get_model
from zskip.models.train import train


def test_rates_follow_their_formulas():
    total = 11
    assert [lr_at("constant", 0.1, t, total) for t in range(total)] == [0.1] * total
    cosine = [lr_at("cosine", 0.1, t, total) for t in range(total)]
    assert cosine[0] == pytest.approx(0.1)
    assert all(a > b > 0 for a, b in zip(cosine, cosine[1:]))          # strictly falling, never 0
    # the half-cosine is symmetric about lr / 2: rate(t) + rate(T - t) = lr
    assert cosine[3] + 0.1 * 0.5 * (1 + math.cos(math.pi * (total - 3) / total)) == pytest.approx(0.1)
    linear = [lr_at("linear", 0.1, t, total) for t in range(total)]
    assert np.allclose(np.diff(linear), -0.1 / total)
    warm = [lr_at("cosine", 0.1, t, total, warmup_steps=3) for t in range(total)]
    assert warm[:3] == pytest.approx([0.025, 0.05, 0.075])                # ramp to lr ...
    assert warm[3] == pytest.approx(0.1)                                 # ... then the schedule from lr


@pytest.mark.parametrize("args,match", [
    (("sawtooth", 0.1, 0, 5), "^lr_schedule: must be one of constant, cosine, linear, got 'sawtooth'"),
    (("cosine", 0.1, 5, 5), r"^step: must lie in \[0, 4\], got 5"),
    (("cosine", 0.1, 0, 5, -1), "^warmup_steps: must be an integer >= 0, got -1"),
])
def test_bad_settings_name_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        lr_at(*args)


@pytest.fixture(scope="module")
def small(mnist5k):
    return mnist5k.subset(train=300, test=100)       # 5 steps per epoch at batch 64


def _run(small, backend="reference", **kw):
    b = make_backend(backend)
    try:
        return train(b, get_model("lenet5"), small, epochs=2, batch_size=64, lr=0.05, momentum=0.9,
                     weight_decay=1e-4, seed=3, quiet=True, lr_schedule="cosine", warmup_steps=2, **kw)
    finally:
        b.close()


def test_schedule_changes_the_trajectory_and_resume_stays_exact(small, tmp_path):
    whole = _run(small)
    assert [e["lr"] for e in whole.report["epochs"]] == pytest.approx(
        [0.05 / 3, lr_at("cosine", 0.05, 5, 10, 2)])
    constant = train(make_backend("reference"), get_model("lenet5"), small, epochs=2, batch_size=64, lr=0.05,
                     momentum=0.9, weight_decay=1e-4, seed=3, quiet=True)
    assert not np.array_equal(constant.params["layer0.w"], whole.params["layer0.w"])
    path = tmp_path / "run.npz"
    _run(small, checkpoint=path, max_steps=7)
    rest = _run(small, checkpoint=path, resume=True)
    for k in whole.params:
        assert np.array_equal(whole.params[k], rest.params[k]), k
    with pytest.raises(ValueError, match="^checkpoint: .*lr_schedule='cosine'.*lr_schedule='constant'"):
        train(make_backend("reference"), get_model("lenet5"), small, epochs=2, batch_size=64, lr=0.05,
              momentum=0.9, weight_decay=1e-4, seed=3, quiet=True, warmup_steps=2, checkpoint=path, resume=True)
    _run(small, checkpoint=tmp_path / "b.npz", max_steps=2)
    with pytest.raises(ValueError, match="^checkpoint: .*2 epochs.*needs epochs=2 .this run has 3"):
        train(make_backend("reference"), get_model("lenet5"), small, epochs=3, batch_size=64, lr=0.05,
              momentum=0.9, weight_decay=1e-4, seed=3, quiet=True, lr_schedule="cosine", warmup_steps=2,
              checkpoint=tmp_path / "b.npz", resume=True)


def test_warmup_longer_than_the_run_is_refused(small):
    with pytest.raises(ValueError, match="^warmup_steps: must be below the run's 10 steps, got 10"):
        train(make_backend("reference"), get_model("lenet5"), small, epochs=2, batch_size=64, lr=0.05,
              quiet=True, lr_schedule="cosine", warmup_steps=10)


def test_device_program_runs_every_step_at_its_scheduled_rate(small):
    """One recorded program serves every step: the host rewrites the SGD descriptors' lr between runs.
    Every step is compared with the reference at that step's rate (check_every=1), and the weights
    after the run follow the reference's own scheduled run."""
    emu = _run(small, backend="emu", check_every=1)
    assert emu.report["check"]["batches_checked"] == 10
    ref = _run(small)
    for k in ref.params:
        np.testing.assert_allclose(emu.params[k], ref.params[k], rtol=0, atol=2e-4, err_msg=k)

