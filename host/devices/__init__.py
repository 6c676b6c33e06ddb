"""Device drivers behind one :class:`~zskip.host.devices.device.Device` interface: ``emu``
(the HLS sources compiled by g++, buffers moved only by sync, as on a board), ``pynq_device``
(a PYNQ board, locally or through RemoteDevice) and ``emulated_board`` (the real pynq driver
against the C-sim kernels); ``axi_timer`` drives the board's cycle timer. May import ``zskip.host.ip``, ``zskip.models``, ``zskip.overlay``."""
