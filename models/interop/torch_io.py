"""PyTorch in and out: ``from_torch`` traces a module with torch.fx, ``to_torch`` builds an nn.Sequential.

A module imports when its forward, as torch.fx traces it, is a chain: each
layer takes the previous layer's output as its only tensor input. Layers are
recognised by what the traced node calls (an ``nn.Conv2d`` module, ``F.relu``,
``x.view(x.size(0), -1)``...), never by attribute order, and every tensor
shape is checked by running the traced graph once (torch.fx ShapeProp).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..networks import Conv, Flatten, Linear, MaxPool, Model, param_key
from .chain import ImportRefused, Step, assemble, check_params, dense_params, require

__all__ = ["from_torch", "to_torch", "load_torch_file", "save_torch_file"]


def _pair(node: str, what: str, value) -> int:
    """An int from an int or an equal pair; ImportRefused otherwise (zskip layers are square)."""
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ImportRefused(f"node {node!r}: {what} {tuple(value)} differs per axis; zskip supports equal values")
        value = value[0]
    return int(value)


def _conv_step(node: str, m) -> Step:
    if m.groups != 1 or _pair(node, "dilation", m.dilation) != 1:
        raise ImportRefused(f"node {node!r} (Conv2d): groups={m.groups}, dilation={m.dilation}; zskip supports "
                            f"groups=1 and dilation=1")
    if m.padding_mode != "zeros":
        raise ImportRefused(f"node {node!r} (Conv2d): padding_mode={m.padding_mode!r}; zskip pads with zeros")
    k = _pair(node, "kernel_size", m.kernel_size)
    pad = m.padding
    if pad == "same":
        if _pair(node, "stride", m.stride) != 1 or k % 2 == 0:
            raise ImportRefused(f"node {node!r} (Conv2d): padding='same' is supported for odd kernels at stride 1")
        pad = (k - 1) // 2
    elif pad == "valid":
        pad = 0
    return Step("conv", node, m.weight.detach().cpu().numpy(),
                None if m.bias is None else m.bias.detach().cpu().numpy(),
                {"stride": _pair(node, "stride", m.stride), "pad": _pair(node, "padding", pad)})


def _pool_step(node: str, kernel, stride, padding, dilation, ceil_mode, return_indices=False) -> Step:
    size = _pair(node, "kernel_size", kernel)
    if stride is None or (isinstance(stride, (tuple, list)) and not stride):
        stride = size                       # PyTorch's default: non-overlapping windows
    stride = _pair(node, "stride", stride)
    if _pair(node, "padding", padding) != 0 or _pair(node, "dilation", dilation) != 1 or ceil_mode or return_indices:
        raise ImportRefused(f"node {node!r} (max-pool): padding={padding}, dilation={dilation}, ceil_mode={ceil_mode}, "
                            f"return_indices={return_indices}; zskip supports padding 0, dilation 1, floor mode")
    return Step("maxpool", node, attrs={"size": size, "stride": stride})


def _flatten_step(node: str, in_shape, out_shape) -> Step:
    """A reshape that zskip can run: (N, C, H, W) -> (N, C*H*W), or a no-op on (N, F)."""
    if len(out_shape) == 2 and out_shape[0] == in_shape[0] and out_shape[1] == int(np.prod(in_shape[1:])):
        return Step("flatten", node)
    raise ImportRefused(f"node {node!r}: reshape {tuple(in_shape)} -> {tuple(out_shape)}; zskip supports only "
                        f"flattening each sample, (N, ...) -> (N, features)")


def _bind(args, kwargs, names: Sequence[str], defaults: dict) -> dict:
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


def _steps(gm, torch) -> List[Step]:
    nn, F = torch.nn, torch.nn.functional
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ImportRefused(f"the module's forward takes {len(inputs)} inputs; zskip imports single-input networks")
    current = inputs[0]
    steps: List[Step] = []

    def shape(n) -> Tuple[int, ...]:
        return tuple(n.meta["tensor_meta"].shape)

    for n in nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            if n.args[0] is not current:
                raise ImportRefused(f"the module returns {n.args[0]!r}, not the end of its layer chain "
                                    f"({current.name}); zskip imports single-output chains")
            break
        tensor_inputs = [a for a in n.all_input_nodes if "tensor_meta" in a.meta]
        if "tensor_meta" not in n.meta:
            # a value that is not a tensor (x.size(0)): only its use as a shape argument matters
            continue
        if n.op == "get_attr":
            raise ImportRefused(f"node {n.name!r} reads the parameter {n.target!r} directly (a functional layer "
                                f"with weights); use nn.Conv2d / nn.Linear modules")
        if tensor_inputs != [current]:
            names = ", ".join(a.name for a in tensor_inputs) or "none"
            raise ImportRefused(f"node {n.name!r} ({_describe(n, modules)}) takes tensor inputs [{names}], not the "
                                f"previous layer's output {current.name!r} alone: branches and residual "
                                f"connections are not supported")
        what = _describe(n, modules)
        label = str(n.target) if n.op == "call_module" else n.name   # the module's path in the model
        if n.op == "call_module":
            m = modules[n.target]
            if isinstance(m, nn.Conv2d):
                steps.append(_conv_step(label, m))
            elif isinstance(m, nn.Linear):
                steps.append(Step("linear", label, m.weight.detach().cpu().numpy(),
                                  None if m.bias is None else m.bias.detach().cpu().numpy()))
            elif isinstance(m, nn.ReLU):
                steps.append(Step("relu", label))
            elif isinstance(m, nn.MaxPool2d):
                steps.append(_pool_step(label, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                                        m.return_indices))
            elif isinstance(m, nn.Flatten):
                steps.append(_flatten_step(label, shape(current), shape(n)))
            elif isinstance(m, nn.Identity):
                pass
            else:
                raise _unsupported(label, what)
        elif n.op == "call_function" and n.target in (F.relu, torch.relu):
            steps.append(Step("relu", label))
        elif n.op == "call_function" and n.target is F.max_pool2d:
            a = _bind(n.args, n.kwargs, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                         "return_indices"),
                      {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False})
            steps.append(_pool_step(label, a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                                    a["ceil_mode"], a["return_indices"]))
        elif (n.op == "call_function" and n.target in (torch.flatten, torch.reshape)) or \
                (n.op == "call_method" and n.target in ("flatten", "view", "reshape")):
            steps.append(_flatten_step(label, shape(current), shape(n)))
        elif n.op == "call_method" and n.target in ("relu", "relu_"):
            steps.append(Step("relu", label))
        elif n.op == "call_method" and n.target in ("contiguous",):
            pass
        else:
            raise _unsupported(label, what)
        current = n
    return steps


def _describe(n, modules) -> str:
    if n.op == "call_module":
        return type(modules[n.target]).__name__
    if n.op == "call_function":
        return getattr(n.target, "__qualname__", str(n.target))
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    return n.op


def _unsupported(node: str, what: str) -> ImportRefused:
    hint = ""
    if what in ("Dropout", "Dropout2d"):
        hint = " (zskip trains without dropout: remove it before importing)"
    elif what in ("Softmax", "LogSoftmax", "softmax", "log_softmax"):
        hint = " (zskip's loss applies softmax to the logits: end the network with its last Linear)"
    return ImportRefused(f"node {node!r} has type {what}, which zskip does not support{hint}; supported: Conv2d, "
                         f"ReLU, MaxPool2d, Flatten (or view/reshape to (N, features)), Linear, Identity")


def from_torch(module, input_shape: Sequence[int], name: Optional[str] = None) -> Tuple[Model, Dict[str, np.ndarray]]:
    """(Model, params) of a PyTorch module traced with torch.fx.

    module: an ``nn.Module`` whose forward is a chain of Conv2d, ReLU,
    MaxPool2d, Flatten / view / reshape to (N, features), Linear (also their
    functional forms). input_shape: one sample's (C, H, W). name: the model's
    name (default: the module's class name, lower case). Weights are copied as
    float32; a layer without bias gets a zero bias. Anything else raises
    ImportRefused (a ValueError) naming the node and its type.
    """
    torch = require("torch", "from_torch")
    from torch.fx.passes.shape_prop import ShapeProp
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(f"input_shape: expected one sample's (C, H, W) of positive ints, got {input_shape!r}")
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # torch.fx raises TraceError, TypeError, ... on data-dependent control flow
        raise ImportRefused(f"torch.fx cannot trace {type(module).__name__}: {e}") from e
    sample = tuple(int(d) for d in shape)
    try:
        with torch.no_grad():
            # a batch of 2, so that a reshape to a literal batch of 1 is not taken for a flatten
            ShapeProp(gm).propagate(torch.zeros((2,) + sample))
    except Exception as e:
        try:
            with torch.no_grad():
                ShapeProp(torch.fx.symbolic_trace(module)).propagate(torch.zeros((1,) + sample))
        except Exception:
            raise ImportRefused(f"input_shape: {type(module).__name__} does not run on a sample of shape {shape} "
                                f"(shape mismatch): {e}") from e
        raise ImportRefused(f"{type(module).__name__} runs on a batch of 1 but not of 2: its forward fixes the batch "
                            f"size (e.g. x.view(1, -1)); zskip supports only flattening each sample "
                            f"(x.view(x.size(0), -1) or nn.Flatten)") from e
    return assemble(name or type(module).__name__.lower(), shape, _steps(gm, torch))


def to_torch(model: Model, params: Dict[str, np.ndarray]):
    """An ``nn.Sequential`` (eval mode, float32) computing ``model`` with ``params``.

    Its modules are named like the layers (conv1, pool1, flatten1, fc1, each
    ReLU ``<layer>_relu``), so hls4ml and ONNX exports keep readable names.
    Input (N, C, H, W) -> logits (N, classes), as zskip's ``predict``. A
    sparse junction becomes a dense ``nn.Linear`` with zeros off its edges.
    """
    torch = require("torch", "to_torch")
    nn = torch.nn
    params = dense_params(model, check_params(model, params))
    modules = OrderedDict()
    for i, (layer, name, (src, _)) in enumerate(zip(model.layers, model.layer_names(), model.shapes())):
        if isinstance(layer, Conv):
            m = nn.Conv2d(src[0], layer.out, layer.kernel, stride=layer.stride, padding=layer.pad)
        elif isinstance(layer, Linear):
            m = nn.Linear(src[0], layer.out)
        elif isinstance(layer, MaxPool):
            m = nn.MaxPool2d(layer.size, layer.stride)
        elif isinstance(layer, Flatten):
            m = nn.Flatten()
        else:
            raise ValueError(f"model: layer {name} ({type(layer).__name__}) has no PyTorch export")
        if isinstance(layer, (Conv, Linear)):
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(params[param_key(i, "w")]))
                m.bias.copy_(torch.from_numpy(params[param_key(i, "b")]))
        modules[name] = m
        if getattr(layer, "relu", False):
            modules[f"{name}_relu"] = nn.ReLU()
    return nn.Sequential(modules).eval()


def save_torch_file(model: Model, params: Dict[str, np.ndarray], path) -> None:
    """``torch.save`` of :func:`to_torch`'s module: a file :func:`load_torch_file` reads without trusting pickle."""
    torch = require("torch", "save_torch_file")
    torch.save(to_torch(model, params), os.fspath(path))


def load_torch_file(path, trust_pickle: bool = False):
    """The ``nn.Module`` saved whole (``torch.save(module, path)``) in ``path``.

    By default only torch.nn's standard layers may be unpickled (torch's
    ``weights_only`` loader), which covers :func:`save_torch_file`'s files.
    A module of your own classes needs ``trust_pickle=True``: unpickling runs
    code from the file, so only for files you trust. A state_dict (weights
    without the architecture) is refused with a hint.
    """
    torch = require("torch", "load_torch_file")
    nn = torch.nn
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    allowed = [nn.Sequential, nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Identity, OrderedDict]
    try:
        if trust_pickle:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if not trust_pickle and "weights_only" in str(e):
            raise ValueError(f"{path}: holds classes beyond torch.nn's standard layers, and unpickling them runs "
                             f"code from the file; if you trust it, load it with trust_pickle=True "
                             f"(zskip train --trust-pickle)") from e
        raise ValueError(f"{path}: cannot read it as a PyTorch file: {e}") from e
    if isinstance(obj, dict):
        raise ValueError(f"{path}: holds a state_dict (weights without the architecture); save the whole module "
                         f"(torch.save(module, path)) or export it to ONNX")
    if not isinstance(obj, nn.Module):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj.eval()
