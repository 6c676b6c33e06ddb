"""zskip.overlay: the pynq.Overlay subclass, its IP driver binding and the board data."""
import subprocess
import sys
from pathlib import Path

import pytest

from zskip.host.devices.device import DeviceError
from zskip.overlay import boards


def test_import_on_a_machine_without_a_board():
    """`import zskip.overlay` and the ZskipOverlay class load on x86 (pynq may only warn)."""
    code = "import zskip.overlay as o; print(o.ZskipOverlay.__mro__[1].__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pynq.overlay"


def test_ip_driver_registered_with_pynq_under_the_vlnv():
    import pynq.overlay
    from zskip.overlay.zskip_overlay import ZskipAcceleratorIP
    vlnv = boards.ip_identity().vlnv
    assert pynq.overlay._ip_drivers[vlnv] is ZskipAcceleratorIP
    # PYNQ also binds the version-less name, so a re-exported 1.1 still gets the driver
    assert pynq.overlay._ip_drivers[vlnv.rpartition(":")[0]] is ZskipAcceleratorIP


def test_default_bitfile_sits_next_to_the_module_and_missing_files_are_named(tmp_path):
    from zskip.overlay.zskip_overlay import DEFAULT_BITFILE, ZskipOverlay
    assert DEFAULT_BITFILE.parent == Path(boards.__file__).resolve().parent
    assert DEFAULT_BITFILE.name == "zskip.bit"
    with pytest.raises(FileNotFoundError, match=r"bitfile not found: .*nothing\.bit .*make -C overlay"):
        ZskipOverlay(str(tmp_path / "nothing.bit"))
    (tmp_path / "zskip.bit").write_bytes(b"\0")
    with pytest.raises(FileNotFoundError, match=r"zskip\.hwh not found: the \.hwh must lie beside the \.bit"):
        ZskipOverlay(str(tmp_path / "zskip.bit"))


def test_boards_have_the_required_parts():
    parts = {name: b.part for name, b in boards.load_boards().items()}
    assert parts == {"pynq-z2": "xc7z020clg400-1", "ultra96-v2": "xczu3eg-sbva484-1-i",
                     "zcu104": "xczu7ev-ffvc1156-2-e", "kv260": "xck26-sfvc784-2LV-c"}
    assert {b.ps for b in boards.load_boards().values()} == {"zynq7", "zynqmp"}


def test_unknown_board_and_bad_values_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"board must be one of \['kv260', 'pynq-z2', 'ultra96-v2', 'zcu104'\], got 'zedboard'"):
        boards.board("zedboard")
    text = boards.BOARDS_INI.read_text().replace("ps = zynq7", "ps = versal", 1)
    bad = tmp_path / "boards.ini"
    bad.write_text(text)
    with pytest.raises(ValueError, match=r"\[pynq-z2\] ps must be one of \('zynq7', 'zynqmp'\), got 'versal'"):
        boards.load_boards(bad)
    bad.write_text(boards.BOARDS_INI.read_text().replace("pe_lanes = 16", "pe_lanes = many", 1))
    with pytest.raises(ValueError, match=r"pe_lanes must be an integer, got 'many'"):
        boards.load_boards(bad)


def test_hls_defines_name_every_size_macro_of_config_h():
    """Each ZSKIP_* size macro with a default in hls/common/config.h is set per board."""
    import re
    config_h = (Path(boards.__file__).resolve().parent.parent / "hls" / "common" / "config.h").read_text()
    macros = set(re.findall(r"#ifndef (ZSKIP_\w+)\n#define \1 \d+", config_h))
    for b in boards.load_boards().values():
        assert set(b.hls_defines) == macros, b.name


def test_remote_device_unreachable_is_a_clear_error():
    """Accelerator.remote (the `remote:HOST` backend) -> open_remote_device -> PYNQ RemoteDevice."""
    from zskip.host.runtime.accelerator import Accelerator
    from zskip.host.devices.pynq_device import open_remote_device
    with pytest.raises(DeviceError, match=r"cannot reach the PYNQ remote server on 127\.0\.0\.1"):
        Accelerator.remote("127.0.0.1", port=1)
    with pytest.raises(ValueError, match="host must be"):
        open_remote_device("")


def test_board_time_estimate_from_clock_and_bandwidth():
    z2 = boards.board("pynq-z2")
    # 100 MHz: 1e6 cycles = 10 ms; 2.1 GB/s: 21 MB = 10 ms
    assert z2.seconds(1_000_000) == pytest.approx(0.010)
    assert z2.seconds(1_000_000, 21_000_000) == pytest.approx(0.020)
    with pytest.raises(ValueError, match="must be >= 0"):
        z2.seconds(-1)
