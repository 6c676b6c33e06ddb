"""Ping-pong streaming: a batch is never overwritten while the IP uses it, and batches overlap runs."""
import threading
import time

import numpy as np
import pytest

from zskip.host.runtime.accelerator import Accelerator
from zskip.host.backends import make_backend
from zskip.host.devices.emu import EmuBuffer
from zskip.host.runtime.program_backend import ProgramBackend
from zskip.host.runtime.streaming import TIMING_STAGES, Batch, DeviceRunner
from zskip.models import step
from zskip.models.networks import get_model
from zskip.models.ops import ReferenceOps

LR, MOMENTUM, WD = 0.02, 0.9, 0.0


def _batches(model, count, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((n, *model.input_shape), dtype=np.float32), rng.integers(0, 10, n)) for _ in range(count)]


def test_batch_i_plus_1_is_flushed_while_batch_i_runs_and_never_into_the_running_set(monkeypatch):
    model = get_model("lenet5")
    data = _batches(model, 6)
    backend = ProgramBackend(Accelerator.emulated(), "emu")
    events, lock = [], threading.Lock()

    def log(*event):
        with lock:
            events.append((time.perf_counter(), *event))

    original_flush = EmuBuffer.sync_to_device
    monkeypatch.setattr(EmuBuffer, "sync_to_device", lambda self: (log("flush", id(self)), original_flush(self))[1])
    device_run = backend.accelerator.device.run

    runner_start = backend.runner.start

    def start(buffers, n_desc):
        log("start", id(buffers["act"]), id(buffers["bits"]))     # the host raised AP_START
        runner_start(buffers, n_desc)
    monkeypatch.setattr(backend.runner, "start", start)

    def slow_run(buffers, n_desc, timeout_s=30.0):
        time.sleep(0.05)            # long enough that the host's packing of the next batch overlaps
        cycles = device_run(buffers, n_desc, timeout_s)
        log("end", id(buffers["act"]), id(buffers["bits"]))
        return cycles
    monkeypatch.setattr(backend.accelerator.device, "run", slow_run)

    def feed():
        for i, (x, y) in enumerate(data):
            log("taken", i)
            yield Batch(x, y)

    params, velocities = model.init_params(0), model.zero_velocities()
    losses = []
    try:
        for i, out in enumerate(backend.stream(model, params, velocities, feed(), LR, MOMENTUM, WD)):
            log("result", i)
            losses.append(out.result.loss)
            assert set(out.timings) == set(TIMING_STAGES) and all(v >= 0 for v in out.timings.values())
    finally:
        backend.close()

    events.sort(key=lambda e: e[0])
    runs, open_runs = [], {}
    for t, kind, *ids in events:
        if kind == "start":
            open_runs[ids[0]] = (t, set(ids))
        elif kind == "end":
            start, ids_ = open_runs.pop(ids[0])
            runs.append((start, t, ids_))
    assert len(runs) == len(data)
    sets = {frozenset(r[2]) for r in runs}
    assert len(sets) == 2                                   # two buffer sets, used alternately
    assert all(runs[i][2] != runs[i + 1][2] for i in range(len(runs) - 1))
    overlapped = 0
    for start, end, ids in runs:
        flushes = [e[2] for e in events if e[1] == "flush" and start < e[0] < end]
        assert not set(flushes) & ids, "a buffer of the running set was flushed during its run"
        overlapped += any(f in other for f in flushes for other in sets if other != ids)
    assert overlapped == len(data) - 1                       # every run but the last hid the next batch's flush
    # the loop could feed batch i+1 before it received the result of batch i
    order = [(e[1], e[2]) for e in events if e[1] in ("taken", "result")]
    for i in range(len(data) - 1):
        assert order.index(("taken", i + 1)) < order.index(("result", i))
    # ... and the batches were trained in order: the reference gives the same losses step by step
    p, v = model.init_params(0), model.zero_velocities()
    for (x, y), loss in zip(data, losses):
        ref = step.train_step(ReferenceOps(), model, p, v, x, y, LR, MOMENTUM, WD, account=False)
        assert loss == pytest.approx(ref.loss, rel=1e-4)
        p, v = ref.params, ref.velocities


def test_stream_of_the_ops_backend_is_the_sequential_train_step():
    model = get_model("lenet5")
    data = _batches(model, 3, seed=1)
    backend = make_backend("reference", account=False)
    params, velocities = model.init_params(1), model.zero_velocities()
    outs = list(backend.stream(model, params, velocities, [Batch(x, y) for x, y in data], LR, MOMENTUM, WD))
    for (x, y), out in zip(data, outs):
        ref = step.train_step(ReferenceOps(), model, params, velocities, x, y, LR, MOMENTUM, WD, account=False)
        assert out.result.loss == ref.loss and out.check is None
        params, velocities = ref.params, ref.velocities
    assert all(np.array_equal(outs[-1].result.params[k], params[k]) for k in params)


def test_program_mode_runs_through_the_pynq_driver_start_wait_split():
    """The same program backend over the PYNQ driver (emulated board): start/wait, same result as emu."""
    from zskip.host.devices.pynq_device import open_emulated_board_device
    model = get_model("lenet5")
    data = _batches(model, 2, seed=2)
    on_board = ProgramBackend(Accelerator(open_emulated_board_device()), "pynq")
    on_emu = ProgramBackend(Accelerator.emulated(), "emu")
    try:
        assert on_board.runner._pool is None              # the driver's own start/wait, no thread
        results = []
        for b in (on_board, on_emu):
            params, velocities = model.init_params(2), model.zero_velocities()
            outs = list(b.stream(model, params, velocities, [Batch(x, y) for x, y in data], LR, MOMENTUM, WD))
            results.append(([o.result.loss for o in outs], {k: np.array(v) for k, v in outs[-1].result.params.items()}))
        assert results[0][0] == results[1][0]
        assert all(np.array_equal(results[0][1][k], results[1][1][k]) for k in results[0][1])
    finally:
        on_board.close()
        on_emu.close()


def test_runner_refuses_a_second_start_and_a_wait_without_start():
    from zskip.host.devices.device import DeviceError
    acc = Accelerator.emulated()
    runner = DeviceRunner(acc.device)
    try:
        with pytest.raises(DeviceError, match="^wait: no program was started"):
            runner.wait()
    finally:
        runner.close()
