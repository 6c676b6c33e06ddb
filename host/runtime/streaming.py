"""Mini-batch streaming: the batch stream every backend offers the training loop.

The loop hands a backend an iterator of :class:`Batch` and receives one
:class:`StreamedStep` per batch, in order (``backend.stream(...)``).
:func:`sequential_stream` is the plain form (one ``train_step`` after the
other) for op-by-op backends. The program backend overlaps: while the
accelerator runs batch i from one buffer set, the host packs and flushes
batch i+1 into the other (ping-pong), so it asks the iterator for batch i+1
before it hands back the result of batch i. Whenever a result is handed
back the device is idle, so the loop may read the weights (checkpoint,
comparison) before the next step starts.

:class:`DeviceRunner` is the start/wait split of a program run: the
device's own ``start``/``wait`` when it has them (the PYNQ driver), else
``run`` in a worker thread (the emulated device; ctypes releases the GIL, so
the host packs meanwhile). Like FINN's driver it times every stage of a
step: ``pack``, ``flush`` (copy to device), ``run``, ``invalidate`` (copy
back) and ``unpack``, in seconds.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Mapping, Optional


from ...models import step as _step
from ...models.step import Batch  # noqa: F401  (re-exported: the items a stream takes)
from ...models.check import CapturingOps, CheckReport, check_step, tolerance_for
from ..devices.device import DeviceError
from ..ip.program import S_WORDS, decode_stats, error_message

__all__ = ["Batch", "StreamedStep", "DeviceRunner", "sequential_stream", "TIMING_STAGES"]

#: the timed stages of a step, in order
TIMING_STAGES = ("pack", "flush", "run", "invalidate", "unpack")


@dataclass
class StreamedStep:
    """The result of one streamed batch: the StepResult, the comparison (when asked) and stage timings."""
    result: _step.StepResult
    check: Optional[CheckReport] = None
    timings: Dict[str, float] = field(default_factory=dict)


class DeviceRunner:
    """Start a program already in device memory, wait for it, decode its stats records."""

    def __init__(self, device, timeout_s: float = 60.0):
        self.device = device
        self.timeout_s = timeout_s
        self._split = callable(getattr(device, "start", None)) and callable(getattr(device, "wait", None))
        self._pool = None if self._split else ThreadPoolExecutor(max_workers=1, thread_name_prefix="zskip-run")
        self._pending = None

    def start(self, buffers: Mapping[str, object], n_desc: int) -> None:
        """Clear and flush the stats, start the IP on ``buffers`` (program and inputs already flushed)."""
        if self._pending is not None:
            raise DeviceError("start: the previous program has not been waited for")
        buffers["stats"][:] = 0
        buffers["stats"].sync_to_device()
        if self._split:
            self.device.start(buffers, n_desc)
            self._pending = (buffers, n_desc, None)
        else:
            self._pending = (buffers, n_desc, self._pool.submit(self.device.run, buffers, n_desc, self.timeout_s))

    def wait(self) -> List[dict]:
        """Wait for the started program; one decoded stats record per descriptor.

        Raises DeviceError naming the descriptor the IP refused.
        """
        if self._pending is None:
            raise DeviceError("wait: no program was started")
        buffers, n_desc, future = self._pending
        self._pending = None
        if future is None:
            self.device.wait(self.timeout_s)
        else:
            future.result()
        stats = buffers["stats"]
        stats.sync_from_device()
        records = [decode_stats(stats[i * S_WORDS:(i + 1) * S_WORDS]) for i in range(n_desc)]
        for i, rec in enumerate(records):
            if rec["error"] != "NONE":
                raise DeviceError(f"{getattr(self.device, 'name', 'device')}: descriptor {i} (opcode "
                                  f"{rec['opcode']}) refused by the IP: {error_message(rec['error'])}")
        return records

    @property
    def busy(self) -> bool:
        return self._pending is not None

    def close(self) -> None:
        if self._pending is not None:
            try:
                self.wait()
            except Exception:
                pass
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def sequential_stream(ops, model, params, velocities, batches: Iterable[Batch], base_lr: float, momentum: float,
                      weight_decay: float, account: bool = True, precision: str = "float32",
                      prune_rate: float = 0.0, loss_scale=None, nesterov: bool = False) -> Iterator[StreamedStep]:
    """One ``step.train_step`` on ``ops`` per batch, in order; compares with the reference when asked.

    ``base_lr``: the learning rate of a batch without its own ``lr``; ``loss_scale``: batch size -> the
    step's ``grad_scale`` (None: 1); ``nesterov``: Nesterov momentum in the updates.
    """
    for batch in batches:
        t0 = time.perf_counter()
        scale = loss_scale(len(batch.y)) if loss_scale is not None else 1.0
        lr = batch.step_lr(base_lr)
        report = None
        if batch.check:
            capture = CapturingOps(ops)
            result = _step.train_step(capture, model, params, velocities, batch.x, batch.y, lr, momentum,
                                      weight_decay, account=account, prune_rate=prune_rate,
                                      prune_seeds=batch.prune_seeds, grad_scale=scale, nesterov=nesterov)
            report = check_step(model, params, velocities, batch.x, batch.y, lr, momentum, weight_decay,
                                capture.outputs, tolerance_for(precision), prune_rate=prune_rate,
                                prune_seeds=batch.prune_seeds, grad_scale=scale, nesterov=nesterov)
        else:
            result = _step.train_step(ops, model, params, velocities, batch.x, batch.y, lr, momentum,
                                      weight_decay, account=account, prune_rate=prune_rate,
                                      prune_seeds=batch.prune_seeds, grad_scale=scale, nesterov=nesterov)
        params, velocities = result.params, result.velocities
        yield StreamedStep(result, report, {"run": time.perf_counter() - t0})
