"""What runs on a device: the :class:`~zskip.host.runtime.accelerator.Accelerator` op
interface, training steps recorded as device programs (``step_recorder``,
``program_backend``), device-resident weights and ping-pong streaming. May import
``zskip.host.devices``, ``zskip.host.ip``, ``zskip.models``, ``zskip.overlay``."""
