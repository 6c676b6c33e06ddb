"""Two emulators in one process (threads) or in two processes give the results of sequential use.

Each EmuDevice loads its own copy of the compiled library, so the kernels'
static on-chip buffers are per device (issue 13, item 1).
"""
import subprocess
import sys
import threading

import numpy as np

from zskip.host.runtime.accelerator import Accelerator
from zskip.models import reference as R


def _cases(seed, n=12):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = np.maximum(rng.standard_normal((4, 8, 16, 16)), 0).astype(np.float32)
        w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
        b = rng.standard_normal(16).astype(np.float32)
        out.append((x, w, b))
    return out


def _run(acc, cases):
    return [acc.conv_forward(x, w, b, stride=1, pad=1, relu=False)[0] for x, w, b in cases]


def test_two_emulators_in_two_threads_give_the_sequential_results():
    accs = [Accelerator.emulated(), Accelerator.emulated()]
    cases = [_cases(1), _cases(2)]
    sequential = [_run(a, c) for a, c in zip(accs, cases)]
    results = [None, None]
    barrier = threading.Barrier(2)

    def work(i):
        barrier.wait()
        results[i] = _run(accs[i], cases[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        for got, want, (x, w, b) in zip(results[i], sequential[i], cases[i]):
            assert np.array_equal(got, want)
            np.testing.assert_allclose(got, R.conv2d_forward(x, w, b, 1, 1), rtol=1e-4, atol=1e-4)
    for a in accs:
        a.device.close()


def test_one_emulator_shared_by_two_threads_serialises_its_calls():
    acc = Accelerator.emulated()
    ref = Accelerator.emulated()
    cases = [_cases(3, 6), _cases(4, 6)]
    want = [_run(ref, c) for c in cases]
    # one Accelerator's scratch buffers are not thread-safe, two Accelerators on one device are
    accs = [Accelerator(acc.device), Accelerator(acc.device)]
    results = [None, None]

    def work(i):
        results[i] = _run(accs[i], cases[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        for got, w in zip(results[i], want[i]):
            assert np.array_equal(got, w)


_CHILD = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_emu_concurrency import _cases, _run
from zskip.host.runtime.accelerator import Accelerator
acc = Accelerator.emulated()
np.save(sys.argv[1], np.stack(_run(acc, _cases(int(sys.argv[2]), 6))))
"""


def test_two_emulators_in_two_processes_give_the_sequential_results(tmp_path):
    import os
    code = _CHILD.format(tests=os.path.dirname(__file__))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"{i}.npy"), str(5 + i)])
             for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    acc = Accelerator.emulated()
    for i in range(2):
        assert np.array_equal(np.load(tmp_path / f"{i}.npy"), np.stack(_run(acc, _cases(5 + i, 6))))


def test_two_emu_backends_training_in_two_threads_match_sequential_training():
    from zskip.host.backends import make_backend
    from zskip.models.datasets import load_dataset
    from zskip.models.networks import get_model
    from zskip.models.train import train
    model = get_model("lenet5")
    data = [load_dataset("synthetic:1x28x28", seed=s).subset(96, 16) for s in (1, 2)]

    def run(i):
        backend = make_backend("emu")
        try:
            return train(backend, model, data[i], epochs=1, batch_size=32, lr=0.05, seed=i, quiet=True)
        finally:
            backend.close()

    sequential = [run(0), run(1)]
    results = [None, None]
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run(i))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, sequential):
        assert got.report["epochs"][0]["train_loss"] == want.report["epochs"][0]["train_loss"]
        for key in want.params:
            assert np.array_equal(got.params[key], want.params[key]), key
