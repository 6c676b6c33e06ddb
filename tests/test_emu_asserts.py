"""The hardware-rule assertion build (``ZSKIP_EMU_ASSERTS=1``, hls/common/hw_assert.h): whole
training steps of LeNet-5, vgg_tiny and a small model with batch normalisation run clean in both emulation forms, and a planted violation
(the MAC arbiter built without its bank check, -DZSKIP_PLANT_BANK_CONFLICT) raises a DeviceError
naming the kernel, the loop and the rule."""
from dataclasses import replace

import numpy as np
import pytest

from zskip.host.devices import emu
from zskip.host.runtime.accelerator import Accelerator
from zskip.host.devices.device import DeviceError
from zskip.host.ip.program import Limits
from zskip.models import step as S
from zskip.models.networks import get_model


def _step(acc, name, batch, seed=0):
    model = get_model(name) if isinstance(name, str) else name
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *model.input_shape)).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0
    y = rng.integers(0, model.num_classes, batch)
    return S.train_step(acc, model, model.init_params(seed), model.zero_velocities(), x, y, 0.02, 0.9, 1e-4,
                        account=False, prune_rate=0.5, prune_seeds=S.prune_seeds(seed, 0, len(model.layers)))


@pytest.mark.parametrize("form", ["csim", "synthesis"])
@pytest.mark.parametrize("skip", [True, False], ids=["sparse", "dense"])
def test_lenet5_and_vgg_tiny_steps_run_clean_with_assertions(monkeypatch, form, skip):
    monkeypatch.setenv("ZSKIP_EMU_ASSERTS", "1")
    monkeypatch.setenv("ZSKIP_EMU_FORM", form)
    acc = Accelerator.emulated(skip_zeros=skip)
    assert "-DZSKIP_EMU_ASSERTS=1" in emu.compile_flags({})
    assert np.isfinite(_step(acc, "lenet5", 4).loss)
    # pre-defined sparse fc1/fc2: the sparse_fc kernels' generated patterns never clash
    model = get_model("lenet5").with_density(0.25, 2)
    rng = np.random.default_rng(1)
    x = rng.random((4, *model.input_shape)).astype(np.float32)
    assert np.isfinite(S.train_step(acc, model, model.init_params(1), model.zero_velocities(), x,
                                    rng.integers(0, 10, 4), 0.02, 0.9, 1e-4, account=False).loss)
    # vgg_tiny's first fully connected layer has 2048 inputs
    wide = Accelerator.emulated(skip_zeros=skip, limits=replace(Limits.defaults(), max_features=2048))
    assert np.isfinite(_step(wide, "vgg_tiny", 2).loss)
    from test_kernels_batchnorm import small_bn_model
    assert np.isfinite(_step(acc, small_bn_model(), 3).loss)


@pytest.mark.parametrize("form", ["csim", "synthesis"])
def test_residual_network_step_runs_clean_with_assertions(monkeypatch, form):
    """Residual adds (beat-wide and word loops) and global average pooling in a training step."""
    from test_kernels_residual import small_resnet
    monkeypatch.setenv("ZSKIP_EMU_ASSERTS", "1")
    monkeypatch.setenv("ZSKIP_EMU_FORM", form)
    acc = Accelerator.emulated()
    model = small_resnet()
    rng = np.random.default_rng(0)
    x = rng.random((3, *model.input_shape)).astype(np.float32)
    result = S.train_step(acc, model, model.init_params(0), model.zero_velocities(), x, rng.integers(0, 3, 3),
                          0.02, 0.9, 1e-4, account=False)
    assert np.isfinite(result.loss)


@pytest.mark.parametrize("form", ["csim", "synthesis"])
def test_planted_bank_conflict_raises_device_error_naming_kernel_loop_and_rule(monkeypatch, form):
    monkeypatch.setenv("ZSKIP_EMU_ASSERTS", "1")
    monkeypatch.setenv("ZSKIP_EMU_FORM", form)
    real_build = emu.build_library
    monkeypatch.setattr(emu, "build_library", lambda defines, cxx=None: real_build(
        dict(defines, ZSKIP_PLANT_BANK_CONFLICT=1), cxx))
    acc = Accelerator.emulated(skip_zeros=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    with pytest.raises(DeviceError, match=r"kernel conv_fwd, loop MAC_CYCLE: two lanes touch one accumulator bank"):
        acc.conv_forward(x, w, np.zeros(8, np.float32), 1, 1)


def test_without_assertions_the_planted_conflict_goes_unnoticed(monkeypatch):
    """The same planted build without ZSKIP_EMU_ASSERTS computes (the check is what catches it)."""
    monkeypatch.delenv("ZSKIP_EMU_ASSERTS", raising=False)
    real_build = emu.build_library
    monkeypatch.setattr(emu, "build_library", lambda defines, cxx=None: real_build(
        dict(defines, ZSKIP_PLANT_BANK_CONFLICT=1), cxx))
    acc = Accelerator.emulated(skip_zeros=False)
    rng = np.random.default_rng(0)
    acc.conv_forward(rng.standard_normal((1, 4, 8, 8)).astype(np.float32),
                     rng.standard_normal((8, 4, 3, 3)).astype(np.float32), np.zeros(8, np.float32), 1, 1)


def test_asserts_variable_is_checked(monkeypatch):
    monkeypatch.setenv("ZSKIP_EMU_ASSERTS", "yes")
    with pytest.raises(DeviceError, match="ZSKIP_EMU_ASSERTS: must be 0 or 1"):
        emu.compile_flags({})
