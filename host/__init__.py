"""The host runtime: drivers, device programs, backends, benchmark and CLI.

Sub-packages by role, lowest first; a module imports only from its own layer
and the layers below it (``tests/test_layout.py`` walks the imports and fails on
an upward import or a cycle):

- ``ip``: the accelerator IP as the host sees it (program and stats format,
  register map, precision spec), parsed from the HLS sources; knows no device.
- ``devices``: the :class:`~zskip.host.devices.device.Device` drivers (emu:
  the HLS C-sim library; pynq: a board or PYNQ RemoteDevice; the emulated
  board that runs the real pynq driver on the C-sim kernels).
- ``runtime``: what runs on a device: the :class:`Accelerator` op interface,
  step programs recorded from ``zskip.models.step``, device-resident weights,
  ping-pong streaming of mini-batches.
- ``backends`` (module): the one factory that chooses a backend by name.
- ``bench``: the benchmark (sparse vs dense counters, the analytic cycle model,
  emulator speed, plots); uses backends.
- ``cli`` (module): ``zskip`` on the command line, on top of everything.

Below ``host`` stand ``zskip.models`` (numpy reference, models, training loop)
and ``zskip.overlay`` (board data, HLS toolchain, the pynq Overlay class);
neither imports ``host``.
"""


def __getattr__(name):
    # the public entry point without importing the runtime for every `import zskip.host`
    if name == "Accelerator":
        from .runtime.accelerator import Accelerator
        return Accelerator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Accelerator"]
