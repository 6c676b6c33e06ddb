"""predict over many batch sizes keeps a bounded number of programs and buffers (issue 13, item 4)."""
import gc

import numpy as np

from zskip.host.backends import make_backend
from zskip.host.runtime.program_backend import MAX_PROGRAMS
from zskip.models.networks import get_model


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _live_buffer_bytes(device) -> int:
    return sum(r().nbytes + r().device_copy.nbytes for r in device._buffers if r() is not None and not r().freed)


def test_predict_over_100_batch_sizes_stays_bounded():
    model = get_model("lenet5")
    params = model.init_params(0)
    backend = make_backend("emu")
    x = np.random.default_rng(0).random((100, 1, 28, 28), dtype=np.float32)
    backend.predict(model, params, x[:100])            # the largest program once: the bound's scale
    gc.collect()
    largest = _live_buffer_bytes(backend.accelerator.device)
    start = _rss_mb()
    for n in range(1, 101):
        logits = backend.predict(model, params, x[:n])
        assert logits.shape == (n, 10)
    gc.collect()
    grown = _rss_mb() - start
    assert len(backend._programs) <= MAX_PROGRAMS
    # what stays allocated: at most MAX_PROGRAMS programs, each no larger than the largest one
    assert _live_buffer_bytes(backend.accelerator.device) <= (MAX_PROGRAMS + 1) * largest
    # unbounded, the 100 programs hold about 50 x the largest one (sum of 1..100 / 100)
    assert grown < 12 * largest / 2 ** 20 + 30, (grown, largest / 2 ** 20)
    device = backend.accelerator.device
    backend.close()
    assert not backend._programs and _live_buffer_bytes(device) == 0
