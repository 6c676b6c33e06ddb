"""The notebooks run headless in emulation, make their plots, and ship the PYNQ way.

Each notebook is executed with ZSKIP_NB_BUDGET=small through nbclient on a
kernel spec written for the running interpreter, so the kernel imports the same
zskip as the tests. The committed copies must hold the outputs of a full run.
"""
from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
#: image/png outputs each notebook must produce (one per figure it draws)
EXPECTED_PLOTS = {"01_train_lenet5.ipynb": 2, "02_layer_explorer.ipynb": 2}
KERNEL_NAME = "zskip-test-python"
MAX_NOTEBOOK_BYTES = 1_500_000


def _outputs(nb, output_type=None):
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
            if output_type is None or o.output_type == output_type]


def _png_count(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


def _stdout(nb) -> str:
    return "".join(o.text for o in _outputs(nb, "stream") if o.name == "stdout")


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernel spec whose argv is this interpreter, found first through JUPYTER_PATH."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    kernelspec.write_kernel_spec(path=str(spec_dir))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return tmp_path


def _execute(path: Path, workdir: Path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=120,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(EXPECTED_PLOTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PLOTS))
def test_notebook_runs_in_emulation_with_small_budget(name, kernel_env, monkeypatch):
    monkeypatch.setenv("ZSKIP_NB_BUDGET", "small")
    nb = _execute(NOTEBOOK_DIR / name, kernel_env)  # raises CellExecutionError on any error
    assert not _outputs(nb, "error")
    assert _png_count(nb) >= EXPECTED_PLOTS[name], f"{name}: missing plots"
    text = _stdout(nb)
    if name.startswith("01_"):
        assert "budget 'small'" in text
        assert ("EMULATION:" in text) != ("BOARD:" in text)
        expected = _why_emulation()
        if expected is not None:
            # no board here: the notebook must say so, and why, and train in emulation
            assert f"EMULATION: {expected}" in text and "backend: emu" in text
        assert "measured speedup" in text


def _why_emulation():
    """The start of the notebook's reason for emulating, or None when a board may be present."""
    try:
        from zskip.overlay.zskip_overlay import DEFAULT_BITFILE
    except ImportError:
        return "pynq is not importable"
    if not DEFAULT_BITFILE.is_file():
        return f"no bitstream at {DEFAULT_BITFILE}"
    return None


def test_unknown_budget_is_a_clear_error(kernel_env, monkeypatch):
    monkeypatch.setenv("ZSKIP_NB_BUDGET", "huge")
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="ZSKIP_NB_BUDGET"):
        _execute(NOTEBOOK_DIR / "01_train_lenet5.ipynb", kernel_env)


@pytest.mark.parametrize("name", sorted(EXPECTED_PLOTS))
def test_committed_notebook_holds_a_full_run(name):
    path = NOTEBOOK_DIR / name
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert not _outputs(nb, "error")
    assert _png_count(nb) >= EXPECTED_PLOTS[name]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{name}: some cells were not executed"
    # papermill overrides the cell tagged "parameters"; it must set the budget from the environment
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "ZSKIP_NB_BUDGET" in tagged[0].source
    text = _stdout(nb)
    if name.startswith("01_"):
        assert "budget 'full'" in text
        # the stored story is a run that learned: final test accuracy parsed from the epoch lines
        accuracies = [float(line.split("test acc ")[1].split()[0]) for line in text.splitlines()
                      if line.startswith("epoch ") and "test acc " in line]
        assert len(accuracies) >= 2 and accuracies[-1] >= 0.9, accuracies
    if name.startswith("02_"):
        assert "checks passed" in text
        # the full sweep: 0 to 95 % in steps of 5 % (the small budget has no 5 % point)
        assert " 0% zeros" in text and " 5% zeros" in text and "95% zeros" in text


def test_registered_for_pynq_get_notebooks():
    eps = [ep for ep in entry_points(group="pynq.notebooks") if ep.value == "zskip.notebooks"]
    assert eps, "zskip.notebooks is not registered in the pynq.notebooks group (reinstall zskip)"
    module = eps[0].load()
    # get-notebooks copies the folder at module.__path__[0]
    assert Path(list(module.__path__)[0]).resolve() == NOTEBOOK_DIR


def test_pynq_delivers_the_notebooks(tmp_path):
    pytest.importorskip("pkg_resources", reason="pynqutils needs pkg_resources (setuptools < 81)")
    from pynqutils.setup_utils import deliver_notebooks
    deliver_notebooks(None, str(NOTEBOOK_DIR), str(tmp_path), "zskip", folder=True, overlays_res_lookup=False)
    delivered = sorted(p.name for p in (tmp_path / "zskip").iterdir())
    assert set(EXPECTED_PLOTS) <= set(delivered)
    assert "__init__.py" not in delivered
