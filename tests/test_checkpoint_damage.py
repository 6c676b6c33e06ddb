"""Damaged or crafted checkpoints give one `checkpoint: ...` error, never a traceback (issue 13, item 7)."""
import json
import warnings

import numpy as np
import pytest

from zskip.host.cli import main
from zskip.models import checkpoint as C
from zskip.models.networks import get_model

TINY = ["--model", "lenet5", "--data", "synthetic:1x28x28", "--limit-train", "64", "--limit-test", "16",
        "--batch-size", "32", "--quiet", "--backend", "reference"]


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "c.npz"
    assert main(["train", "--epochs", "1", "--checkpoint", str(path)] + TINY) == 0
    return path


def _damaged(path, kind):
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif kind == "flipped":
        b = bytearray(data)
        b[len(b) // 3] ^= 0x40          # inside the first compressed-or-stored member's data
        path.write_bytes(bytes(b))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "npy":
        np.save(open(path, "wb"), np.zeros(3))


@pytest.mark.parametrize("kind", ["truncated", "flipped", "empty", "text", "npy"])
def test_a_damaged_file_is_one_clear_error(good, kind, capsys):
    _damaged(good, kind)
    with pytest.raises(ValueError, match="checkpoint: "):
        C.load_checkpoint(good, get_model("lenet5"))
    assert main(["train", "--epochs", "2", "--checkpoint", str(good), "--resume"] + TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zskip: error: checkpoint: ") and str(good) in err[0], err


def _rewrite_meta(path, change):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    text = change(meta)
    arrays["meta"] = np.array(text if isinstance(text, str) else json.dumps(meta))
    np.savez(path, **arrays)


@pytest.mark.parametrize("change, words", [
    (lambda m: "{not json", "not valid JSON"),
    (lambda m: m.update(epoch=-1), "'epoch'"),
    (lambda m: m.update(step=10 ** 12), "'step'"),
    (lambda m: m.update(step=5), "meta step 5 must be below 2"),
    (lambda m: m.update(step=1), "state.totals counts 0 steps but meta step is 1"),
    (lambda m: m.update(epoch="1"), "'epoch'"),
    (lambda m: m.update(config=[1, 2]), "'config'"),
    (lambda m: m["state"]["totals"].update(seen="many"), "state.totals.seen"),
    (lambda m: m["state"].update(history={"a": 1}), "state.history"),
    (lambda m: m["state"]["check"].update(max_rel_error=None), "state.check.max_rel_error"),
])
def test_crafted_meta_is_validated(good, change, words, capsys):
    _rewrite_meta(good, change)
    assert main(["train", "--epochs", "2", "--checkpoint", str(good), "--resume"] + TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zskip: error: checkpoint: ") and words in err[0], err


def test_resuming_with_another_precision_is_refused(tmp_path, capsys):
    path = tmp_path / "c.npz"
    emu = [a if a != "reference" else "emu" for a in TINY]
    assert main(["train", "--epochs", "1", "--checkpoint", str(path), "--precision", "fixed16"] + emu) == 0
    assert main(["train", "--epochs", "2", "--checkpoint", str(path), "--resume"] + emu) == 2
    err = capsys.readouterr().err
    assert "precision='fixed16'" in err and "precision='float32'" in err


def test_resuming_on_another_backend_warns_and_is_recorded(good, tmp_path):
    report = tmp_path / "r.json"
    emu = [a if a != "reference" else "emu" for a in TINY]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--epochs", "2", "--checkpoint", str(good), "--resume", "--report", str(report)]
                    + emu) == 0
    assert any("written with {'backend': 'reference'}" in str(w.message) for w in caught)
    assert json.loads(report.read_text())["config"]["resumed_from"] == {"backend": "reference"}
