"""Resource estimate per board (overlay/resources.py) and its table in overlay/README.md."""
import dataclasses
import re
from pathlib import Path

import pytest

from zskip.overlay import resources as R
from zskip.overlay.boards import load_boards

BOARDS = load_boards()
README = Path(R.__file__).resolve().parent / "README.md"


@pytest.fixture(scope="module")
def structs():
    return R.onchip_structs()


@pytest.fixture(scope="module")
def estimates(structs):
    return [R.estimate(b, structs) for b in BOARDS.values()]


def test_probe_finds_every_kernel_the_interpreter_dispatches(structs):
    labels = {s.label for s in structs}
    # one shared engine memory serves the three passes, for convolutions and for
    # fully-connected layers; one pooling memory serves both pooling passes
    assert "scatter_engine_memory<conv_config>" in labels and "scatter_engine_memory<fc_config>" in labels
    assert any(label.startswith("maxpool_memory<") for label in labels)


def test_probe_sizes_follow_the_board_macros(structs):
    """sizeof must come from the board's -D values: the weight array alone bounds it
    from below, and doubling the fc width quadruples the fc weight store."""
    board = BOARDS["pynq-z2"]
    small = R.onchip_bytes(board, structs)
    d = board.hls_defines
    fc_weights = 4 * d["ZSKIP_MAX_FEATURES"] ** 2
    conv_weights = 4 * d["ZSKIP_MAX_CH"] ** 2 * d["ZSKIP_MAX_KSIZE"] ** 2
    assert fc_weights <= small["scatter_engine_memory<fc_config>"] < 1.5 * fc_weights
    assert small["scatter_engine_memory<conv_config>"] >= conv_weights
    wide = dataclasses.replace(board, hls_defines=dict(d, ZSKIP_MAX_FEATURES=2 * d["ZSKIP_MAX_FEATURES"]))
    growth = R.onchip_bytes(wide, structs)["scatter_engine_memory<fc_config>"] / small["scatter_engine_memory<fc_config>"]
    assert 3.5 < growth <= 4.0


def test_banks_are_rounded_per_bank_and_placed_bank_by_bank():
    # 4 banks of 1024 words: 2 BRAM18 each, or one URAM each
    big = R.ArrayBanks("f<c>", "big", 4096, 4, 4)
    # 16 banks of 40 words: LUTRAM; a complete partition: registers
    small = R.ArrayBanks("f<c>", "small", 640, 4, 16)
    regs = R.ArrayBanks("f<c>", "regs", 16, 4, 0)
    # 3 banks of 400 words: one BRAM18 each (a bank never shares a block with another)
    odd = R.ArrayBanks("f<c>", "odd", 1200, 4, 3)
    assert (big.bram18_per_bank, small.bram18_per_bank, regs.bram18_per_bank, odd.bram18_per_bank) == (2, 0, 0, 1)
    board = dataclasses.replace(BOARDS["kv260"], uram=3, bram36=100)
    # floor(0.8 * 3) = 2 URAM take two banks of `big`; its other two banks and `odd` take 2 * 2 + 3 BRAM18
    assert R.place([big, small, regs, odd], board) == (4, 2)
    assert R.place([big, odd], dataclasses.replace(board, uram=0)) == (6, 0)


def test_partitions_and_dsp_follow_the_code():
    """The engine's accumulator and operand memories are split into pe_lanes banks (the pragma
    next to their declaration), and the MAC lanes of both engine configs are counted."""
    for board in BOARDS.values():
        arrays = {(a.owner, a.member): a for a in R.onchip_arrays(board)}
        for cfg in ("conv_config", "fc_config"):
            assert arrays[(f"scatter_engine_memory<{cfg}>", "w")].banks == board.pe_lanes
            assert arrays[(f"scatter_engine_memory<{cfg}>", "plane")].banks == board.pe_lanes
        for precision in ("float32", "fixed16"):
            mac = sum(n * each for name, n, each in R.dsp_instances(board, precision) if name.startswith("MAC"))
            pairs = 1 if precision == "float32" else 3
            assert mac == 2 * pairs * board.pe_lanes * board.dsp_per_mac(precision)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_board_fits_with_20_percent_margin(name, estimates):
    e = next(e for e in estimates if e.board == name)
    b = BOARDS[name]
    assert e.bram36 <= 0.8 * b.bram36, f"{name}: {e.bram36} BRAM36 of {b.bram36}"
    assert e.uram <= 0.8 * b.uram, f"{name}: {e.uram} URAM of {b.uram}"
    assert e.dsp == (e.dsp_float32 if b.precision == "float32" else e.dsp_fixed16) <= 0.8 * b.dsp
    assert e.fits()


def test_pynq_z2_limits_match_the_design_document():
    b = BOARDS["pynq-z2"]
    assert (b.dsp, b.bram36) == (220, 140)
    assert (BOARDS["kv260"].dsp, BOARDS["kv260"].uram) == (1248, 64)


def test_readme_table_is_the_current_estimate(estimates):
    text = README.read_text()
    m = re.search(r"<!-- resources-table -->\n(.*?)<!-- /resources-table -->", text, re.DOTALL)
    assert m, "overlay/README.md lacks the resources-table markers"
    assert m.group(1) == R.markdown_table(estimates), \
        "overlay/README.md is stale: paste the output of `python -m zskip.overlay.resources`"


def test_readme_lenet_requirements_follow_the_model():
    from zskip.models.networks import Conv, Linear, MaxPool, get_model
    model = get_model("lenet5")
    need = {"ch": 0, "dim": 0, "ksize": 0, "features": 0}
    for layer, (shape_in, shape_out) in zip(model.layers, model.shapes()):
        if isinstance(layer, (Conv, MaxPool)):
            need["ch"] = max(need["ch"], shape_in[0], shape_out[0])
            need["dim"] = max(need["dim"], *shape_in[1:], *shape_out[1:])
            need["ksize"] = max(need["ksize"], layer.kernel if isinstance(layer, Conv) else layer.size)
        elif isinstance(layer, Linear):
            need["features"] = max(need["features"], shape_in[0], shape_out[0])
    sentence = "LeNet-5 needs max ch {ch}, dim {dim}, ksize {ksize}, features {features}".format(**need)
    assert sentence in " ".join(README.read_text().split())
