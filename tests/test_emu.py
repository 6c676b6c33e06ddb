"""The emulation backend: build, buffers with a separate device copy, version check, errors."""
import numpy as np
import pytest

from zskip.host.devices import emu
from zskip.host.runtime.accelerator import Accelerator
from zskip.host.devices.device import DeviceError
from zskip.host.ip.program import BEAT_WORDS, FIELDS, S_WORDS, ZSKIP_VERSION, ArenaLayout, decode_stats, encode


@pytest.fixture(scope="module")
def device():
    return emu.EmuDevice()


def test_library_reports_its_configuration(device):
    assert device.config["version"] == ZSKIP_VERSION == device.version()
    assert device.config["pe_lanes"] == device.limits.pe_lanes
    assert device.config["max_ch"] == device.limits.max_ch


def test_buffers_move_only_on_sync(device):
    buf = device.allocate((4,), np.float32)
    buf[:] = 3
    assert not buf.device_copy.any(), "host write reached the device without a flush"
    buf.sync_to_device()
    assert np.array_equal(buf.device_copy, [3, 3, 3, 3])
    buf.device_copy[1] = 7
    assert buf[1] == 3
    buf.sync_from_device()
    assert buf[1] == 7


def _fc_program(device):
    """y = x @ w.T + b for x (1, 2), w (1, 2) in one descriptor, on fresh buffers."""
    lay = ArenaLayout()
    off = dict(x=lay.alloc("act", "x", 2), y=lay.alloc("act", "y", 1), wgt=lay.alloc("wgt", "w", 2),
               bias=lay.alloc("wgt", "b", 1))
    desc = encode("FC_FWD", n=1, c=2, k=1, h=1, w=1, r=1, s=1, stride=1, **off)
    acc = Accelerator(device)
    bufs = acc.allocate_arenas(lay, 1)
    bufs["act"][off["x"]:off["x"] + 2] = [1.0, 2.0]
    bufs["wgt"][off["wgt"]:off["wgt"] + 2] = [3.0, 4.0]
    bufs["wgt"][off["bias"]] = 0.5
    return acc, bufs, desc, off


def test_a_missing_flush_gives_a_wrong_result(device):
    acc, bufs, desc, off = _fc_program(device)
    acc.run_program([desc], bufs, flush=("act",), invalidate=("act",))   # weights never flushed
    assert bufs["act"][off["y"]] == 0.0
    acc.run_program([desc], bufs)                                        # every arena flushed
    assert bufs["act"][off["y"]] == 1 * 3 + 2 * 4 + 0.5


def test_a_missing_invalidate_leaves_the_host_copy_stale(device):
    acc, bufs, desc, off = _fc_program(device)
    acc.run_program([desc], bufs, invalidate=())
    assert bufs["act"][off["y"]] == 0.0
    bufs["act"].sync_from_device()
    assert bufs["act"][off["y"]] == 11.5


def test_version_mismatch_is_refused(device):
    class OldBitstream:
        name = "old"

        def version(self):
            return ZSKIP_VERSION - 1
    with pytest.raises(DeviceError, match="version register is 0x.*this driver needs"):
        Accelerator(OldBitstream())


def test_out_of_buffer_descriptor_is_refused(device):
    acc, bufs, desc, off = _fc_program(device)
    desc = desc.copy()
    desc[FIELDS["y"]] = 1000
    with pytest.raises(DeviceError, match="reaches word 1001 of the act arena"):
        acc.run_program([desc], bufs)


def test_the_interpreter_validates_and_reports_errors(device):
    """A descriptor beyond the compiled maxima, written past the encoder, is refused by the C code."""
    acc, bufs, desc, off = _fc_program(device)
    bad = desc.copy()
    bad[FIELDS["c"]] = 5000  # > ZSKIP_MAX_FEATURES
    bad[FIELDS["x"]] = 0
    bufs_big = {k: v for k, v in bufs.items()}
    big = device.allocate((6000,), np.float32)
    bufs_big["act"] = big
    bufs_big["wgt"] = device.allocate((6000,), np.float32)
    with pytest.raises(DeviceError, match="ERR_CHANNELS"):
        acc.run_program([bad], bufs_big)
    rec = decode_stats(bufs_big["stats"][:S_WORDS])
    assert rec["error"] == "CHANNELS"


def test_an_unaligned_tensor_offset_is_refused_by_the_interpreter(device):
    """An x offset planted off a 128-bit beat: ERR_ALIGN with its meaning, and y is not written."""
    acc, bufs, desc, off = _fc_program(device)
    assert all(v % BEAT_WORDS == 0 for v in off.values()), off
    bad = desc.copy()
    bad[FIELDS["x"]] = off["x"] + 1
    with pytest.raises(DeviceError, match=r"ERR_ALIGN: a tensor offset field .* multiple of BEAT_WORDS = 4"):
        acc.run_program([bad], bufs)
    rec = decode_stats(bufs["stats"][:S_WORDS])
    assert rec["error"] == "ALIGN"
    bufs["act"].sync_from_device()
    assert not bufs["act"][off["y"]:off["y"] + 2].any()
    acc.run_program([desc], bufs)  # the aligned descriptor runs
    assert bufs["act"][off["y"]] == 11.5


def test_build_failure_names_the_command_and_the_compiler_message(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSKIP_CACHE_DIR", str(tmp_path))
    with pytest.raises(DeviceError, match=r"(?s)building the emulation library failed.*g\+\+.*error"):
        emu.build_library({"ZSKIP_ACT_T": "not_a_type"})
    with pytest.raises(DeviceError, match="compiler 'no-such-cxx' not found"):
        emu.build_library({}, cxx="no-such-cxx")


def test_library_name_carries_the_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSKIP_CACHE_DIR", str(tmp_path))
    a = emu.build_library({"ZSKIP_PE_LANES": 4})
    assert a.parent == tmp_path and a.is_file()
    assert emu.build_library({"ZSKIP_PE_LANES": 4}) == a
    assert emu._source_hash(emu.compile_flags({"ZSKIP_PE_LANES": 8})) not in a.name


def test_precision_strings():
    assert emu.precision_types("float32") == {}
    t = emu.precision_types("ap_fixed<16,6>")
    assert t["ZSKIP_ACT_T"] == "ap_fixed<16,6,AP_RND,AP_SAT>" and t["ZSKIP_ACC_T"] == "ap_fixed<32,12,AP_RND,AP_SAT>"
    with pytest.raises(ValueError, match=r"precision must be 'float32' or 'ap_fixed<W,I>'"):
        emu.precision_types("float16")
    with pytest.raises(ValueError, match="W <= 32"):
        emu.precision_types("ap_fixed<40,6>")


def test_accelerator_validates_inputs():
    acc = Accelerator.emulated()
    x = np.zeros((1, 3, 8, 8), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    b = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"x channels: must be in \[1, 128\]"):
        acc.conv_forward(np.zeros((1, 130, 8, 8), np.float32), np.zeros((4, 130, 3, 3), np.float32), b)
    with pytest.raises(ValueError, match=r"x height: must be in \[1, 32\]"):
        acc.conv_forward(np.zeros((1, 3, 40, 8), np.float32), w, b)
    with pytest.raises(ValueError, match=r"w kernel rows: must be in \[1, 7\]"):
        acc.conv_forward(np.zeros((1, 3, 20, 20), np.float32), np.zeros((4, 3, 9, 9), np.float32), b)
    with pytest.raises(ValueError, match="stride: must be 1 or 2"):
        acc.conv_forward(x, w, b, stride=3)
    with pytest.raises(ValueError, match=r"pad: must be an integer in \[0, 2\]"):
        acc.conv_forward(x, w, b, pad=3)
    bad = x.copy()
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"x: contains a non-finite value at index \(0, 1, 2, 3\)"):
        acc.conv_forward(bad, w, b)
    with pytest.raises(ValueError, match="x: expected a rank-4 array"):
        acc.conv_forward(x[0], w, b)
    with pytest.raises(TypeError, match="out_mask: expected a bool array"):
        acc.conv_backward_data(np.zeros((1, 4, 6, 6), np.float32), w, x.shape, out_mask=np.ones(x.shape))
    with pytest.raises(ValueError, match=r"x features: must be in \[1, 1024\]"):
        acc.linear_forward(np.zeros((1, 2000), np.float32), np.zeros((3, 2000), np.float32), np.zeros(3))
