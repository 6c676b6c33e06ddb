"""The C-simulation testbenches (hls/<kernel>/<kernel>_tb.cpp) build with plain g++,
pass on the reference data, and fail (exit 1) on a corrupted expected value."""
import importlib.util
import subprocess

import numpy as np
import pytest

from zskip.host.devices import emu
from zskip.host.ip.program import HLS_DIR

KERNELS = ("conv_fwd", "conv_bwd_data", "conv_bwd_weight", "fc", "maxpool", "sgd_update", "softmax_xent",
           "zskip_top", "residual", "avgpool", "batchnorm")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_tb_data", HLS_DIR / "gen_tb_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen():
    return _generator()


@pytest.fixture(scope="module")
def top_object(tmp_path_factory):
    """zskip_top.cpp compiled once; each testbench links against it."""
    obj = tmp_path_factory.mktemp("tb") / "zskip_top.o"
    subprocess.run(["g++", "-O1", "-std=c++14", f"-I{emu.ap_types_dir()}", "-c",
                    str(HLS_DIR / "zskip_top" / "zskip_top.cpp"), "-o", str(obj)], check=True)
    return obj


def _build_and_run(kernel, top_object, tmp_path, data_header=None):
    exe = tmp_path / f"{kernel}_tb"
    cmd = ["g++", "-O1", "-std=c++14", f"-I{emu.ap_types_dir()}", str(HLS_DIR / kernel / f"{kernel}_tb.cpp"),
           str(top_object), "-o", str(exe)]
    if data_header is not None:
        cmd.insert(1, f'-DZSKIP_TB_DATA="{data_header}"')
    subprocess.run(cmd, check=True, capture_output=True)
    return subprocess.run([str(exe)], capture_output=True, text=True)


def test_headers_are_generated_from_the_current_reference(gen):
    assert gen.main(["--check"]) == 0, "run: python hls/gen_tb_data.py"


@pytest.mark.parametrize("kernel", KERNELS)
def test_testbench_passes(kernel, top_object, tmp_path):
    run = _build_and_run(kernel, top_object, tmp_path)
    assert run.returncode == 0, run.stdout
    assert "PASS (0 mismatches" in run.stdout


@pytest.mark.parametrize("kernel, kind", [("conv_fwd", "f32"), ("conv_bwd_weight", "f32"), ("maxpool", "bits"),
                                          ("zskip_top", "f32"), ("residual", "bits"),
                                          ("avgpool", "f32")])
def test_testbench_fails_on_a_corrupted_expected_value(gen, kernel, kind, top_object, tmp_path):
    case = gen.CASES[kernel]()
    checks = case.f32_checks if kind == "f32" else case.bits_checks
    name, value = checks[0]
    value = value.copy()
    value[value.size // 2] += 1 if kind == "bits" else 0.01 * (np.abs(value).max() + 1)
    checks[0] = (name, value)
    header = tmp_path / "corrupt_tb_data.h"
    header.write_text(gen.render(kernel, case))
    run = _build_and_run(kernel, top_object, tmp_path, header)
    assert run.returncode == 1, run.stdout
    assert "FAIL (1 mismatches" in run.stdout


def test_header_check_tolerates_rounding_only(gen):
    text = gen.render("sgd_update", gen.case_sgd_update())
    assert gen.same_header(text, text)
    m = gen._EXPECT_F32.search(text)
    first = m.group(2).split(",")[0].strip()
    value = float(first.rstrip("f"))
    nudged = text.replace(first, f"{value * (1 + 1e-8):.9e}f", 1)
    changed = text.replace(first, f"{value + 0.5:.9e}f", 1)
    assert gen.same_header(nudged, text)
    assert not gen.same_header(changed, text)
