"""The README's set-up commands are the ones CI and users actually run."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fenced_lines(text):
    return [line.strip() for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S) for line in block.splitlines()]


def test_readme_test_command_is_what_ci_runs():
    readme = _fenced_lines((ROOT / "README.md").read_text())
    test_cmd = [l for l in readme if "pytest" in l and "venv" in l]
    assert len(test_cmd) == 1, test_cmd
    parts = test_cmd[0].split(" && ")
    assert parts[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"]
    ci = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert " && ".join(parts[2:]) == 'pip install -e ".[test]" && python -m pytest -q'
    assert " && ".join(parts[2:]) in ci
    assert "python3 -m venv .venv" in ci and ". .venv/bin/activate" in ci


def test_readme_train_command_uses_known_names():
    from zskip.host.backends import BACKENDS
    from zskip.host.cli import build_parser
    from zskip.models.networks import MODELS
    readme = _fenced_lines((ROOT / "README.md").read_text())
    train_cmd = [l for l in readme if "zskip train" in l and "venv" in l]
    assert len(train_cmd) == 1, train_cmd
    assert train_cmd[0].startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e . && ")
    argv = train_cmd[0].split(" && ")[-1].split()[1:]
    args = build_parser().parse_args(argv)
    assert args.model in MODELS and args.data == "mnist5k" and args.backend in BACKENDS
