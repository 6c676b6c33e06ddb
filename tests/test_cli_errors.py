"""Every user error is one line `zskip: error: ...` naming the cause, found before training starts
(issue 13, items 6 and 9)."""
import os
import sys

import numpy as np
import pytest

from zskip.host.devices import emu
from zskip.host.runtime.accelerator import Accelerator
from zskip.host.backends import make_backend
from zskip.host.cli import main
from zskip.host.devices.device import DeviceError

TINY = ["--model", "lenet5", "--data", "synthetic:1x28x28", "--limit-train", "64", "--limit-test", "16",
        "--batch-size", "32", "--epochs", "1", "--quiet"]


def _one_error(capsys, status, *words):
    assert status == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zskip: error: "), captured.err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: output paths must be refused before."""
    import zskip.models.train as T

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the output paths were checked")
    monkeypatch.setattr(T, "train", refuse)


@pytest.mark.parametrize("option", ["--report", "--checkpoint"])
def test_output_paths_are_checked_before_training(option, tmp_path, capsys, no_training):
    _one_error(capsys, main(["train", option, str(tmp_path / "missing" / "out")] + TINY), option, "does not exist")
    _one_error(capsys, main(["train", option, str(tmp_path)] + TINY), option, "is a directory")
    assert sorted(os.listdir(tmp_path)) == []           # no DIR.tmp left behind


def test_bench_output_paths_are_checked_first(tmp_path, capsys, monkeypatch):
    import zskip.host.bench.report as B
    monkeypatch.setattr(B, "run_bench", lambda *a, **k: (_ for _ in ()).throw(AssertionError("bench started")))
    _one_error(capsys, main(["bench", "--report", str(tmp_path / "x" / "b.json")]), "--report", "does not exist")
    _one_error(capsys, main(["bench", "--plot", str(tmp_path)]), "--plot", "is a directory")


@pytest.mark.parametrize("opt, words", [
    ("skip_zeros=maybe", ("skip_zeros", "true or false", "'maybe'")),
    ("account=1", ("account", "true or false")),
    ("max_features=-5", ("max_features", "[1, 65536]", "-5")),
    ("max_features=abc", ("max_features", "'abc'")),
    ("max_dim=300", ("max_dim", "[1, 255]")),
])
def test_backend_options_are_validated_before_compiling(opt, words, capsys, monkeypatch):
    monkeypatch.setattr(emu, "build_library", lambda *a, **k: (_ for _ in ()).throw(AssertionError("compiled")))
    _one_error(capsys, main(["train", "--backend-opt", opt] + TINY), *words)


def test_a_model_beyond_the_compiled_maxima_names_the_option(capsys):
    _one_error(capsys, main(["train", "--model", "vgg_tiny", "--data", "synthetic:3x32x32"] + TINY[4:]),
               "vgg_tiny", "layer fc1 has 2048 features", "--backend-opt max_features=2048")


def test_an_unreachable_remote_board_is_one_line(capsys):
    _one_error(capsys, main(["train", "--backend", "remote:127.0.0.1"] + TINY), "cannot reach", "127.0.0.1")


def test_a_compiler_failure_is_one_line_with_a_log(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ZSKIP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", sys.executable)           # "compiles" by failing on the flags
    _one_error(capsys, main(["train"] + TINY), "building the emulation library failed", ".log")
    assert list(tmp_path.glob("*.log"))


def test_a_bus_fault_on_the_emulated_board_is_reported_at_once():
    from zskip.host.devices.pynq_device import open_emulated_board_device
    from zskip.host.ip.program import ArenaLayout, encode
    import time
    device = open_emulated_board_device()
    try:
        acc = Accelerator(device)
        lay = ArenaLayout()
        off = dict(x=lay.alloc("act", "x", 2), y=lay.alloc("act", "y", 1), wgt=lay.alloc("wgt", "w", 2),
                   bias=lay.alloc("wgt", "b", 1))
        bufs = acc.allocate_arenas(lay, 1)
        # a descriptor reaching far past its buffers: the IP stalls on a bus fault
        desc = encode("FC_FWD", n=1000, c=2, k=1, h=1, w=1, r=1, s=1, stride=1, **off)
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="bus fault: descriptor 0 reaches word"):
            acc.run_program([desc], bufs, timeout_s=30)
        assert time.monotonic() - t0 < 10                # not the 30 s timeout
    finally:
        device.close()


def test_use_after_close_is_one_clear_error():
    acc = Accelerator.emulated()
    acc.device.close()
    with pytest.raises(DeviceError, match="device was closed"):
        acc.conv_forward(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32), np.zeros(1, np.float32))
    backend = make_backend("emu")
    backend.close()
    from zskip.models.networks import get_model
    with pytest.raises(DeviceError, match="backend was closed"):
        backend.predict(get_model("lenet5"), get_model("lenet5").init_params(0), np.zeros((2, 1, 28, 28), np.float32))
    backend.close()                                      # closing twice is harmless
