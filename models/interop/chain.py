"""A chain of framework layers -> a zskip :class:`~zskip.models.networks.Model` and its params.

The PyTorch and ONNX readers each walk their graph and emit one :class:`Step`
per layer, in order, with the layer's weights as float32 arrays and the name
of the node it came from; :func:`assemble` turns the steps into zskip layer
specs. ReLU is not a layer in zskip but a flag of the convolution or linear
layer before it; a ReLU that follows a max-pool or a flatten is moved back
over them (both commute with ReLU: max and reordering preserve the sign
test), so ``relu(maxpool(conv(x)))`` imports as ``maxpool(conv(x, relu))``.

Exported graphs name their nodes after the layers' readable names
(``Model.layer_names()``: conv1, pool1, flatten1, fc1...).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..networks import Flatten, MaxPool, Model, conv, flatten, linear, maxpool, param_key

__all__ = ["Step", "assemble", "require", "check_params", "dense_params", "ImportRefused", "MissingExtra"]


class MissingExtra(ImportError):
    """A package of the optional extra ``zskip[interop]`` is not installed; the message says how to install it."""


class ImportRefused(ValueError):
    """A graph zskip cannot represent: names the node, its type and what is not supported."""


def require(module: str, feature: str):
    """``importlib.import_module(module)``, or an ImportError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{feature} needs the '{module.split('.')[0]}' package, which is not installed: "
                          f"pip install 'zskip[interop]'") from e


@dataclass
class Step:
    """One layer read from a framework graph.

    kind: "conv" (weight (K, C, R, R), bias (K,), stride, pad), "linear"
    (weight (J, I), bias (J,)), "maxpool" (size, stride), "flatten" or "relu".
    node: the name of the framework node it came from, for error messages.
    """
    kind: str
    node: str
    weight: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    attrs: Dict[str, int] = field(default_factory=dict)


def _float32(node: str, what: str, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype.kind != "f":
        raise ImportRefused(f"node {node!r}: {what} has dtype {value.dtype}; zskip imports floating-point weights")
    if not np.all(np.isfinite(value)):
        raise ImportRefused(f"node {node!r}: {what} contains non-finite values")
    return np.ascontiguousarray(value, dtype=np.float32)


def assemble(name: str, input_shape: Tuple[int, int, int], steps: List[Step]) -> Tuple[Model, Dict[str, np.ndarray]]:
    """(Model, params) of a chain of steps; ImportRefused names the node where it cannot be represented."""
    layers: list = []
    weights: Dict[int, Tuple[np.ndarray, np.ndarray, str]] = {}
    for step in steps:
        if step.kind == "relu":
            # walk back over layers that commute with ReLU to the layer that computes the values
            i = len(layers) - 1
            while i >= 0 and isinstance(layers[i], (MaxPool, Flatten)):
                i -= 1
            if i < 0:
                raise ImportRefused(f"node {step.node!r} (ReLU): a ReLU on the network input is not supported; "
                                    f"zskip fuses each ReLU into the convolution or linear layer before it")
            if not layers[i].relu:
                layers[i] = replace(layers[i], relu=True)
            continue
        if step.kind == "conv":
            k, c, r, s = step.weight.shape
            if r != s:
                raise ImportRefused(f"node {step.node!r} (convolution): kernel {r}x{s} is not square; zskip's "
                                    f"convolutions are R x R")
            layers.append(conv(k, r, stride=step.attrs["stride"], pad=step.attrs["pad"], relu=False))
        elif step.kind == "linear":
            layers.append(linear(step.weight.shape[0], relu=False))
        elif step.kind == "maxpool":
            layers.append(maxpool(step.attrs["size"], step.attrs["stride"]))
        elif step.kind == "flatten":
            layers.append(flatten())
        else:
            raise ImportRefused(f"node {step.node!r}: unknown step kind {step.kind!r}")
        if step.kind in ("conv", "linear"):
            bias = step.bias if step.bias is not None else np.zeros(step.weight.shape[0], np.float32)
            weights[len(layers) - 1] = (_float32(step.node, "weight", step.weight),
                                        _float32(step.node, "bias", bias), step.node)
    if not layers:
        raise ImportRefused("the graph has no layers zskip supports (convolution, max-pool, flatten, linear)")
    try:
        model = Model(name, tuple(int(d) for d in input_shape), tuple(layers))
    except ValueError as e:
        raise ImportRefused(f"the imported layers do not form a zskip model: {e}") from e
    params = {}
    expected = model.param_shapes()
    for i, (w, b, node) in weights.items():
        for key, value in ((param_key(i, "w"), w), (param_key(i, "b"), b)):
            if value.shape != expected[key]:
                raise ImportRefused(f"node {node!r}: {'weight' if key.endswith('w') else 'bias'} has shape "
                                    f"{value.shape} but its input needs {expected[key]} (shape mismatch)")
            params[key] = value
    return model, params


#: the layer kinds every export path writes (batch normalisation and residual blocks: not yet)
EXPORTABLE_KINDS = ("conv", "maxpool", "flatten", "linear")


def check_params(model: Model, params) -> Dict[str, np.ndarray]:
    """``params`` as float32 arrays, or a ValueError naming the entry that does not fit ``model``."""
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a zskip.models.networks.Model, got {type(model).__name__}")
    for name, layer in zip(model.layer_names(), model.flat_layers):
        if layer.kind not in EXPORTABLE_KINDS:
            raise ValueError(f"model {model.name!r}: {name} ({layer.kind}) cannot be exported yet; the torch, "
                             f"ONNX and hls4ml exports take {', '.join(EXPORTABLE_KINDS)} layers")
    expected = model.param_shapes()
    if not isinstance(params, dict) or set(params) != set(expected):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: model {model.name!r} needs entries {sorted(expected)}, got {got}")
    owner = {param_key(i, p): name for i, name in enumerate(model.layer_names()) for p in ("w", "b")}
    out = {}
    for key, shape in expected.items():
        value = np.asarray(params[key])
        if value.shape != shape:
            raise ValueError(f"params: {key} ({owner[key]}) has shape {value.shape}, "
                             f"model {model.name!r} needs {shape}")
        out[key] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def dense_params(model: Model, params: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``params`` with every sparse junction's (out, fan_in) values expanded to dense (out, in) weights.

    Frameworks have no pre-defined sparse layer, so a sparse junction leaves as
    a dense layer with zeros off its edges: the same function, and a dense
    layer when it is imported back.
    """
    out = dict(params)
    for i in range(len(model.layers)):
        pattern = model.pattern(i)
        if pattern is not None:
            out[param_key(i, "w")] = pattern.expand(params[param_key(i, "w")]).astype(np.float32)
    return out
