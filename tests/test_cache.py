"""The compiled-library cache is bounded, stale temporaries go on the next run, and
`zskip cache --list/--clear` show and empty it (issue 13, item 5)."""
import os
import subprocess
import sys
import time

import numpy as np

from zskip.host.devices import emu
from zskip.host.cli import main


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _touch(path, age_s=0.0):
    path.write_bytes(b"x" * 100)
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_stale_temporaries_go_and_the_cache_keeps_the_newest(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSKIP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("ZSKIP_CACHE_MAX", "2")
    dead = _touch(tmp_path / f"tmp-{_dead_pid()}-abc.so")          # a build killed mid-compile
    old = _touch(tmp_path / "tmpq1w2e3.so", age_s=2 * emu.STALE_AGE_S)  # an older zskip's temporary
    live = _touch(tmp_path / f"tmp-{os.getpid()}-def.so")          # a build running now
    fresh = _touch(tmp_path / "tmpfresh.so")                       # too young to judge
    libs = [_touch(tmp_path / f"libzskip_{i:016x}.so", age_s=100 * (i + 1)) for i in range(3)]
    path = emu.build_library({"ZSKIP_PE_LANES": 2})
    left = set(tmp_path.iterdir())
    assert dead not in left and old not in left
    assert live in left and fresh in left
    # the new library and the most recently used old one
    assert {p for p in left if p.name.startswith("libzskip_")} == {path, libs[0]}
    # reusing a library makes it the most recently used
    _touch(tmp_path / "libzskip_ffffffffffffffff.so", age_s=0)
    os.utime(path, (time.time() - 50, time.time() - 50))
    assert emu.build_library({"ZSKIP_PE_LANES": 2}) == path
    assert path.exists() and not libs[0].exists()


def test_cache_list_and_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZSKIP_CACHE_DIR", str(tmp_path))
    _touch(tmp_path / "libzskip_0000000000000001.so", age_s=10)
    _touch(tmp_path / "libzskip_0000000000000002.so")
    _touch(tmp_path / "libzskip_0000000000000002.log")
    assert main(["cache", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "libzskip_0000000000000002.so" in out[0] and "libzskip_0000000000000001.so" in out[1]
    assert out[-1].startswith("2 libraries") and str(tmp_path) in out[-1]
    assert main(["cache", "--clear"]) == 0
    assert "removed 3 files" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_stale_checkpoint_partials_go_on_the_next_run(tmp_path):
    dead = _touch(tmp_path / f".ckpt-{_dead_pid()}-abc.npz")
    old = _touch(tmp_path / ".ckpt-q1w2e3.npz", age_s=7200)
    live = _touch(tmp_path / f".ckpt-{os.getpid()}-def.npz")
    assert main(["train", "--backend", "reference", "--data", "synthetic:1x28x28", "--limit-train", "32",
                 "--limit-test", "8", "--batch-size", "32", "--epochs", "1", "--quiet",
                 "--checkpoint", str(tmp_path / "c.npz")]) == 0
    left = set(tmp_path.iterdir())
    assert dead not in left and old not in left and live in left and tmp_path / "c.npz" in left
