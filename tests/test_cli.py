"""The zskip console script, end to end on tiny runs."""
import json
import subprocess
import sys

import numpy as np

from zskip.host.cli import main
from zskip.models.checkpoint import load_checkpoint

TINY = ["--limit-train", "128", "--limit-test", "64", "--batch-size", "32", "--quiet"]


def test_train_writes_a_report_and_a_checkpoint(tmp_path):
    report, ckpt = tmp_path / "report.json", tmp_path / "ckpt.npz"
    status = main(["train", "--model", "lenet5", "--data", "mnist5k", "--backend", "reference", "--epochs", "2",
                   "--lr", "0.02", "--seed", "3", "--report", str(report), "--checkpoint", str(ckpt)] + TINY)
    assert status == 0
    data = json.loads(report.read_text())
    assert data["config"]["model"] == "lenet5" and data["config"]["seed"] == 3 and data["config"]["n_train"] == 128
    assert [e["epoch"] for e in data["epochs"]] == [1, 2]
    for e in data["epochs"]:
        assert 0 <= e["test_accuracy"] <= 1 and np.isfinite(e["train_loss"])
        assert [l["index"] for l in e["layers"]] == [0, 2, 5, 6, 7]
        assert all(0 <= l["input_sparsity"] <= 1 and 0 <= l["grad_sparsity"] <= 1 for l in e["layers"])
    saved = load_checkpoint(ckpt)
    assert (saved.epoch, saved.step, saved.model) == (2, 0, "lenet5")


def test_resume_through_the_cli_matches_one_run(tmp_path):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    assert main(["train", "--epochs", "2", "--checkpoint", str(one)] + TINY) == 0
    assert main(["train", "--epochs", "1", "--checkpoint", str(two)] + TINY) == 0
    assert main(["train", "--epochs", "2", "--checkpoint", str(two), "--resume"] + TINY) == 0
    a, b = load_checkpoint(one), load_checkpoint(two)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_bad_names_exit_2_with_a_message(capsys):
    assert main(["train", "--model", "alexnet"] + TINY) == 2
    assert "model: unknown model 'alexnet'" in capsys.readouterr().err
    assert main(["train", "--data", "imagenet"] + TINY) == 2
    assert "data: unknown dataset 'imagenet'" in capsys.readouterr().err
    assert main(["train", "--backend", "gpu"] + TINY) == 2
    assert "backend: unknown backend 'gpu'" in capsys.readouterr().err


def test_console_script_runs_as_a_module(tmp_path):
    report = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "zskip.host.cli", "train", "--epochs", "1", "--report", str(report),
                           "--data", "synthetic:1x28x28", "--limit-train", "64", "--limit-test", "32", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["config"]["data"] == "synthetic:1x28x28:10"


def test_resnet_takes_the_data_shape_and_trains_on_the_accelerator_with_checks(tmp_path, capsys):
    report = tmp_path / "r.json"
    tiny = ["--limit-train", "32", "--limit-test", "16", "--batch-size", "16", "--epochs", "1", "--quiet"]
    assert main(["train", "--model", "resnet8", "--data", "synthetic:1x28x28", "--backend", "reference",
                 "--report", str(report)] + tiny) == 0
    data = json.loads(report.read_text())
    assert data["config"]["model"] == "resnet8" and len(data["epochs"]) == 1
    report_emu = tmp_path / "e.json"
    assert main(["train", "--model", "resnet8", "--data", "synthetic:1x28x28", "--backend", "emu",
                 "--check-every", "1", "--report", str(report_emu)] + tiny) == 0
    check = json.loads(report_emu.read_text())["check"]
    assert check["batches_checked"] == 2 and check["max_rel_error"] <= 1e-4
