"""Wall-clock speed of the emulator next to the numpy reference and PyTorch, in one run.

A "step" is one SGD training step (forward, loss, backward, update) of a
model on one batch; a "layer step" is the three passes of one convolution
(forward, backward-weight, backward-data with the input's ReLU mask). Each
is timed as the median of ``repeat`` runs after one warm-up run. PyTorch is
the optional ``bench`` extra: without it the torch entries are None and a
note says why; with a CUDA device PyTorch on it is timed too.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional

import numpy as np

from ...models import reference as R
from ...models import step as _step
from ...models.networks import Conv, Flatten, Linear, MaxPool, Model, param_key
from ...models.ops import ReferenceOps

__all__ = ["torch_mirrors", "median_seconds", "step_speed", "layer_speed", "vgg16_layer_data", "VGG16_LAYER"]

#: The VGG-16 layer timed: conv2_2 (128 -> 128 channels, 3x3, pad 1, 112x112 map), on a
#: 32x32 tile because the compiled maxima (hls/common/config.h) hold 32x32 maps at most.
VGG16_LAYER = {"name": "vgg16 conv2_2, 32x32 tile", "c": 128, "k": 128, "kernel": 3, "pad": 1, "tile": 32}
#: fraction of zeros of its input activation (VGG-16's middle layers after ReLU are about half zeros)
VGG16_INPUT_SPARSITY = 0.5


def torch_mirrors(model: Model) -> bool:
    """Whether :func:`_torch_model` can build ``model`` (conv, max-pool, flatten and linear layers only)."""
    return all(isinstance(layer, (Conv, Linear, MaxPool, Flatten)) for layer in model.flat_layers)


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs, after one untimed warm-up run."""
    if repeat < 1:
        raise ValueError(f"repeat: must be >= 1, got {repeat}")
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_devices(torch):
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


def _torch_model(torch, model: Model, params: Dict[str, np.ndarray], device: str):
    """The same network in torch.nn with the same weights."""
    nn = torch.nn
    layers = []
    for i, (layer, (src, _)) in enumerate(zip(model.layers, model.shapes())):
        if isinstance(layer, Conv):
            mod = nn.Conv2d(src[0], layer.out, layer.kernel, stride=layer.stride, padding=layer.pad)
        elif isinstance(layer, Linear):
            mod = nn.Linear(src[0], layer.out)
        elif isinstance(layer, MaxPool):
            layers.append(nn.MaxPool2d(layer.size, layer.stride))
            continue
        elif isinstance(layer, Flatten):
            layers.append(nn.Flatten())
            continue
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(params[param_key(i, "w")]))
            mod.bias.copy_(torch.from_numpy(params[param_key(i, "b")]))
        layers.append(mod)
        if layer.relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device)


def _torch_step_fn(torch, model, params, x, y, device, lr, momentum):
    net = _torch_model(torch, model, params, device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return step


def _time_torch(torch, device: str, make: Callable[[], Callable[[], None]], repeat: int,
                seconds: Dict[str, Optional[float]], notes: list) -> None:
    """Time ``make()``'s function on ``device``; on CPU with torch's default threads and with one.

    The emulator runs on one thread, and on a shared machine torch's threads
    can lose more to contention than they gain, so ``torch_cpu`` is the faster
    of the two (the stricter baseline); both are kept.
    """
    if device != "cpu":
        seconds[f"torch_{device}"] = median_seconds(make(), repeat)
        return
    default = torch.get_num_threads()
    seconds[f"torch_cpu_{default}_threads"] = median_seconds(make(), repeat)
    torch.set_num_threads(1)
    try:
        seconds["torch_cpu_1_thread"] = median_seconds(make(), repeat)
    finally:
        torch.set_num_threads(default)
    seconds["torch_cpu"] = min(seconds[f"torch_cpu_{default}_threads"], seconds["torch_cpu_1_thread"])
    notes.append(f"torch {torch.__version__}: torch_cpu is the faster of {default} threads and 1 thread")
    if not torch.cuda.is_available():
        notes.append("no CUDA device: torch_cuda not measured")


def _time_implementations(ops_fn, torch_fn, accelerators: Dict[str, object], repeat: int):
    """Median seconds of the same work on every accelerator, the numpy reference and PyTorch.

    ops_fn(ops) -> a callable doing the work with an Ops implementation;
    torch_fn(torch, device) -> a callable doing it in PyTorch (its set-up runs once).
    Returns (seconds {name: s or None}, notes).
    """
    seconds: Dict[str, Optional[float]] = {name: median_seconds(ops_fn(ops), repeat)
                                           for name, ops in accelerators.items()}
    seconds["reference"] = median_seconds(ops_fn(ReferenceOps()), repeat)
    seconds["torch_cpu"] = None
    notes = []
    torch = _torch()
    if torch is None:
        notes.append("PyTorch is not installed (pip install zskip[bench]): torch timings skipped")
    else:
        for device in _torch_devices(torch):
            _time_torch(torch, device, lambda device=device: torch_fn(torch, device), repeat, seconds, notes)
    return seconds, notes


def _ratios(seconds: Dict[str, Optional[float]]) -> Dict[str, Optional[float]]:
    cpu = seconds.get("torch_cpu")

    def over(name):
        return seconds[name] / cpu if cpu and seconds.get(name) else None
    return {"emu_float32_over_torch_cpu": over("emu_float32"), "emu_fixed_over_torch_cpu": over("emu_fixed"),
            "reference_over_torch_cpu": over("reference"),
            "emu_fixed_over_emu_float32": (seconds["emu_fixed"] / seconds["emu_float32"]
                                           if seconds.get("emu_fixed") and seconds.get("emu_float32") else None)}


def step_speed(model: Model, params, velocities, x, y, accelerators: Dict[str, object], repeat: int = 5,
               lr: float = 0.02, momentum: float = 0.9) -> dict:
    """Median seconds of one training step on x (N, C, H, W), y (N,) per implementation.

    accelerators: ``{"emu_float32": Accelerator, "emu_fixed": Accelerator, ...}``
    (any Ops); the numpy reference and PyTorch (CPU, and CUDA when present)
    are added. Returns ``{"batch", "seconds": {name: s or None}, "ratios", "notes"}``.
    """
    def ops_step(ops):
        return lambda: _step.train_step(ops, model, params, velocities, x, y, lr, momentum, 0.0, account=False)

    def torch_step(torch, device):
        return _torch_step_fn(torch, model, params, x, y, device, lr, momentum)

    seconds, notes = _time_implementations(ops_step, torch_step, accelerators, repeat)
    return {"batch": int(len(x)), "repeat": repeat, "seconds": seconds, "ratios": _ratios(seconds), "notes": notes}


def vgg16_layer_data(batch: int = 1, seed: int = 0) -> dict:
    """x (batch, 128, 32, 32) with VGG16_INPUT_SPARSITY zeros, He-normal w, and dy masked by y > 0."""
    spec = VGG16_LAYER
    rng = np.random.default_rng(seed)
    c, k, r, t = spec["c"], spec["k"], spec["kernel"], spec["tile"]
    x = np.abs(rng.standard_normal((batch, c, t, t))).astype(np.float32)
    x[rng.random(x.shape) < VGG16_INPUT_SPARSITY] = 0
    w = (rng.standard_normal((k, c, r, r)) * np.sqrt(2.0 / (c * r * r))).astype(np.float32)
    b = np.zeros(k, np.float32)
    y = R.conv2d_forward(x, w, b, 1, spec["pad"])
    dy = (rng.standard_normal(y.shape) * (y > 0)).astype(np.float32)
    return {"x": x, "w": w, "b": b, "dy": dy, "out_mask": x > 0,
            "input_sparsity": float(np.mean(x == 0)), "grad_sparsity": float(np.mean(dy == 0))}


def layer_speed(data: dict, accelerators: Dict[str, object], repeat: int = 3) -> dict:
    """Median seconds of one layer step (forward, backward-weight, backward-data) per implementation."""
    pad = VGG16_LAYER["pad"]
    x, w, b, dy, mask = data["x"], data["w"], data["b"], data["dy"], data["out_mask"]

    def ops_fn(ops):
        def run():
            ops.conv_forward(x, w, b, 1, pad, relu=True)
            ops.conv_backward_weight(x, dy, w.shape, 1, pad)
            ops.conv_backward_data(dy, w, x.shape, 1, pad, out_mask=mask)
        return run

    def torch_step(torch, device):
        xt = torch.from_numpy(x).to(device).requires_grad_(True)
        wt = torch.from_numpy(w).to(device).requires_grad_(True)
        bt = torch.from_numpy(b).to(device).requires_grad_(True)
        gt = torch.from_numpy(dy).to(device)

        def run():
            xt.grad = wt.grad = bt.grad = None
            out = torch.relu(torch.nn.functional.conv2d(xt, wt, bt, padding=pad))
            out.backward(gt)
            if device == "cuda":
                torch.cuda.synchronize()
        return run

    seconds, notes = _time_implementations(ops_fn, torch_step, accelerators, repeat)
    return {"layer": VGG16_LAYER["name"], "batch": int(len(x)), "repeat": repeat,
            "input_sparsity": data["input_sparsity"], "grad_sparsity": data["grad_sparsity"],
            "seconds": seconds, "ratios": _ratios(seconds), "notes": notes}
