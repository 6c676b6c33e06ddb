"""The benchmark: sparse vs dense runs of the same batches (``report``), the analytic cycle
model checked against the kernels' counters (``perf_model``), emulator speed against the
reference and PyTorch (``speed``) and plots (``plot``). May import ``zskip.host.backends``
and everything below it."""
