"""Models as data: a model is an input shape plus a list of layer specs.

Layer specs are small frozen dataclasses (:class:`Conv`, :class:`MaxPool`,
:class:`Flatten`, :class:`Linear`, :class:`BatchNorm`, :class:`GlobalAvgPool`,
:class:`Residual`), built with :func:`conv`, :func:`maxpool`, :func:`flatten`,
:func:`linear`, :func:`batchnorm`, :func:`global_avgpool` and
:func:`residual`. A residual block is itself a layer: a body (a layer list)
and a skip edge (the identity, or a shortcut layer list), added at the end.
Nothing here computes: the training step (``zskip.models.step``) walks the
list and calls a backend's ops.

Layers are numbered in pre-order (:attr:`Model.flat_layers`): a residual
block gets its number, then its body's layers, then its shortcut's; for a
model without blocks the number is the index in the layer list. Parameters
are a flat dict of float32 arrays keyed ``"layer{i}.w"`` / ``"layer{i}.b"``
(``.gamma`` / ``.beta`` for batch normalisation), so checkpoints and backends
can name them without knowing the model. The same dict carries each batch
normalisation's running statistics (``.running_mean`` / ``.running_var``,
the model's *buffers*: state that inference uses and SGD does not train), as
PyTorch's state dict does; :meth:`Model.param_shapes` lists only what SGD
trains (and has momentum buffers), :meth:`Model.buffer_shapes` the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = ["Conv", "MaxPool", "Flatten", "Linear", "BatchNorm", "GlobalAvgPool", "Residual", "Node", "Model",
           "conv", "maxpool", "flatten", "linear", "batchnorm", "global_avgpool", "residual",
           "MODELS", "get_model", "param_key", "resnet", "model_to_dict", "model_from_dict"]


@dataclass(frozen=True)
class Conv:
    """2-D convolution, weights (out, C, kernel, kernel), bias (out,), optional fused ReLU."""
    out: int
    kernel: int
    stride: int = 1
    pad: int = 0
    relu: bool = True
    kind = "conv"


@dataclass(frozen=True)
class MaxPool:
    """Max pooling over size x size windows."""
    size: int = 2
    stride: int = 2
    kind = "maxpool"


@dataclass(frozen=True)
class Flatten:
    """(N, C, H, W) -> (N, C*H*W), C-order."""
    kind = "flatten"


@dataclass(frozen=True)
class Linear:
    """Fully connected, weights (out, in), bias (out,), optional fused ReLU.

    ``density`` < 1: a pre-defined sparse junction (``zskip.models.structured``)
    whose pattern comes from ``seed`` (and the layer's index) for ``lanes`` PE
    lanes; its weights are stored compressed, (out, fan_in).
    """
    out: int
    relu: bool = True
    density: float = 1.0
    seed: int = 0
    lanes: int = 0          # 0: structured.DEFAULT_LANES
    kind = "linear"


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalisation per channel (training: batch statistics; inference: running ones).

    Parameters gamma, beta (C,); buffers running_mean, running_var (C,),
    updated with ``momentum`` at every training step (PyTorch's rule);
    ``eps`` inside the square root; optional fused ReLU.
    """
    relu: bool = True
    momentum: float = 0.1
    eps: float = 1e-5
    kind = "batchnorm"


@dataclass(frozen=True)
class GlobalAvgPool:
    """(N, C, H, W) -> (N, C): the mean of each plane."""
    kind = "avgpool"


@dataclass(frozen=True)
class Residual:
    """A residual block: y = body(x) + shortcut(x), then an optional ReLU.

    ``body`` and ``shortcut`` are layer tuples; an empty shortcut is the
    identity. Both must map the block's input to the same shape.
    """
    body: tuple
    shortcut: tuple = ()
    relu: bool = True
    kind = "residual"


Layer = Union[Conv, MaxPool, Flatten, Linear, BatchNorm, GlobalAvgPool, Residual]


@dataclass(frozen=True)
class Node:
    """A layer with its pre-order number; a residual block's body and shortcut as numbered nodes."""
    index: int
    layer: Layer
    body: Tuple["Node", ...] = ()
    shortcut: Tuple["Node", ...] = ()


def _number(layers, start: int) -> Tuple[Tuple[Node, ...], int]:
    """(nodes, next free number) of a layer list numbered in pre-order from ``start``."""
    nodes = []
    for layer in layers:
        index = start
        start += 1
        if isinstance(layer, Residual):
            body, start = _number(layer.body, start)
            shortcut, start = _number(layer.shortcut, start)
            nodes.append(Node(index, layer, body, shortcut))
        else:
            nodes.append(Node(index, layer))
    return tuple(nodes), start


def _flatten_nodes(nodes) -> List[Node]:
    out = []
    for node in nodes:
        out.append(node)
        out.extend(_flatten_nodes(node.body))
        out.extend(_flatten_nodes(node.shortcut))
    return out


def _positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def conv(out: int, kernel: int, stride: int = 1, pad: int = 0, relu: bool = True) -> Conv:
    """A :class:`Conv` spec; validates every argument."""
    return Conv(_positive("out", out), _positive("kernel", kernel), _positive("stride", stride),
                _positive("pad", pad, 0), bool(relu))


def maxpool(size: int = 2, stride: int | None = None) -> MaxPool:
    """A :class:`MaxPool` spec; stride defaults to size (non-overlapping windows)."""
    size = _positive("size", size)
    return MaxPool(size, _positive("stride", size if stride is None else stride))


def flatten() -> Flatten:
    """A :class:`Flatten` spec."""
    return Flatten()


def linear(out: int, relu: bool = True, density: float = 1.0, seed: int = 0, lanes: int = 0) -> Linear:
    """A :class:`Linear` spec; validates every argument (density in (0, 1], 1 = dense)."""
    from .structured import _check_density
    return Linear(_positive("out", out), bool(relu), _check_density(density), _positive("seed", seed, 0),
                  _positive("lanes", lanes, 0))


def batchnorm(relu: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> BatchNorm:
    """A :class:`BatchNorm` spec; momentum in [0, 1], eps > 0."""
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum: must be a number in [0, 1], got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < np.inf:
        raise ValueError(f"eps: must be a finite number > 0, got {eps!r}")
    return BatchNorm(bool(relu), float(momentum), float(eps))


def global_avgpool() -> GlobalAvgPool:
    """A :class:`GlobalAvgPool` spec."""
    return GlobalAvgPool()


def residual(body, shortcut=(), relu: bool = True) -> Residual:
    """A :class:`Residual` block spec; ``body`` must hold at least one layer."""
    body, shortcut = tuple(body), tuple(shortcut)
    if not body:
        raise ValueError("body: a residual block needs at least one layer in its body")
    return Residual(body, shortcut, bool(relu))


#: layer kind -> the stem of its readable name (Model.layer_names)
LAYER_NAME_PREFIX = {"conv": "conv", "maxpool": "pool", "flatten": "flatten", "linear": "fc", "batchnorm": "bn",
                     "avgpool": "avgpool", "residual": "block"}


def param_key(index: int, name: str) -> str:
    """Key of parameter ``name`` ("w", "b", "gamma", "beta", "running_mean", "running_var") of layer ``index``."""
    return f"layer{index}.{name}"


def _describe(layer: Layer) -> str:
    if isinstance(layer, Conv):
        return f"conv {layer.kernel}x{layer.kernel} {layer.out} stride {layer.stride} pad {layer.pad}"
    if isinstance(layer, MaxPool):
        return f"maxpool {layer.size} stride {layer.stride}"
    if isinstance(layer, Linear):
        return f"linear {layer.out}" + (f" density {layer.density:g}" if layer.density < 1 else "")
    if isinstance(layer, BatchNorm):
        return "batchnorm"
    if isinstance(layer, GlobalAvgPool):
        return "global avgpool"
    if isinstance(layer, Residual):
        return f"residual block ({'projection' if layer.shortcut else 'identity'} shortcut)"
    return "flatten"


@dataclass(frozen=True)
class Model:
    """A network: ``input_shape`` (C, H, W) and a tuple of layer specs.

    Construction runs shape inference, so an inconsistent model fails at
    once with an error naming the layer.
    """
    name: str
    input_shape: Tuple[int, int, int]
    layers: Tuple[Layer, ...]

    def __post_init__(self):
        # tuples keep the model immutable and hashable even when lists are passed in
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape: expected (C, H, W), got {self.input_shape!r}")
        for d in self.input_shape:
            _positive("input_shape", d)
        if not self.layers:
            raise ValueError(f"layers: model {self.name!r} has no layers")
        nodes, _ = _number(self.layers, 0)
        object.__setattr__(self, "_nodes", nodes)
        object.__setattr__(self, "_shapes", self._infer_shapes())

    @property
    def nodes(self) -> Tuple[Node, ...]:
        """The top-level layers as numbered :class:`Node` trees (what the training step walks)."""
        return self._nodes

    @property
    def flat_layers(self) -> Tuple[Layer, ...]:
        """Every layer in pre-order; position = layer number (= index in ``layers`` without blocks)."""
        return tuple(node.layer for node in _flatten_nodes(self._nodes))

    def shapes(self) -> List[Tuple[Tuple[int, ...], Tuple[int, ...]]]:
        """Per layer number (see :attr:`flat_layers`), (input shape, output shape) without the batch dimension."""
        return list(self._shapes)

    def _infer_shapes(self):
        out: Dict[int, tuple] = {}
        shape = self._walk_shapes(self._nodes, tuple(int(d) for d in self.input_shape), out, "layers")
        if len(shape) != 1:
            raise ValueError(f"layers: model {self.name!r} must end with a linear layer (logits), ends with shape {shape}")
        return [out[i] for i in range(len(out))]

    def _walk_shapes(self, nodes, shape, out, where_list):
        for pos, node in enumerate(nodes):
            layer = node.layer
            where = f"{where_list}[{pos}] ({_describe(layer)}) of model {self.name!r}"
            if isinstance(layer, (Conv, MaxPool)):
                if len(shape) != 3:
                    raise ValueError(f"{where}: needs a (C, H, W) input, got {shape} (after a flatten)")
                c, h, w = shape
                k = layer.kernel if isinstance(layer, Conv) else layer.size
                pad = layer.pad if isinstance(layer, Conv) else 0
                if k > h + 2 * pad or k > w + 2 * pad:
                    raise ValueError(f"{where}: window {k}x{k} is larger than its padded input "
                                     f"{h + 2 * pad}x{w + 2 * pad}")
                oh, ow = (h + 2 * pad - k) // layer.stride + 1, (w + 2 * pad - k) // layer.stride + 1
                new = (layer.out if isinstance(layer, Conv) else c, oh, ow)
            elif isinstance(layer, Flatten):
                new = (int(np.prod(shape)),)
            elif isinstance(layer, Linear):
                if len(shape) != 1:
                    raise ValueError(f"{where}: needs a flat input, got {shape}: add flatten() before it")
                new = (layer.out,)
            elif isinstance(layer, BatchNorm):
                new = shape
            elif isinstance(layer, GlobalAvgPool):
                if len(shape) != 3:
                    raise ValueError(f"{where}: needs a (C, H, W) input, got {shape} (after a flatten)")
                new = (shape[0],)
            elif isinstance(layer, Residual):
                if len(shape) != 3:
                    raise ValueError(f"{where}: needs a (C, H, W) input, got {shape} (after a flatten)")
                body = self._walk_shapes(node.body, shape, out, f"{where}: body")
                skip = self._walk_shapes(node.shortcut, shape, out, f"{where}: shortcut")
                if body != skip:
                    raise ValueError(f"{where}: its body ends with shape {body} but its "
                                     f"{'shortcut' if node.shortcut else 'identity shortcut'} with {skip}; "
                                     f"they are added, so they must agree")
                new = body
            else:
                raise TypeError(f"{where}: unknown layer type {type(layer).__name__}")
            out[node.index] = (shape, new)
            shape = new
        return shape

    @property
    def num_classes(self) -> int:
        """Width of the logits (the last layer's output)."""
        return self._shapes[self._nodes[-1].index][1][0]

    def param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Shapes of every parameter SGD trains (each has a momentum buffer), keyed as :func:`param_key`."""
        shapes = {}
        for i, (layer, (src, _)) in enumerate(zip(self.flat_layers, self._shapes)):
            if isinstance(layer, Conv):
                shapes[param_key(i, "w")] = (layer.out, src[0], layer.kernel, layer.kernel)
                shapes[param_key(i, "b")] = (layer.out,)
            elif isinstance(layer, Linear):
                pattern = self.pattern(i)
                shapes[param_key(i, "w")] = (layer.out, src[0] if pattern is None else pattern.fan_in)
                shapes[param_key(i, "b")] = (layer.out,)
            elif isinstance(layer, BatchNorm):
                shapes[param_key(i, "gamma")] = (src[0],)
                shapes[param_key(i, "beta")] = (src[0],)
        return shapes

    def buffer_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Shapes of the running statistics of every batch normalisation (in the params dict, not trained)."""
        shapes = {}
        for i, (layer, (src, _)) in enumerate(zip(self.flat_layers, self._shapes)):
            if isinstance(layer, BatchNorm):
                shapes[param_key(i, "running_mean")] = (src[0],)
                shapes[param_key(i, "running_var")] = (src[0],)
        return shapes

    def state_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Every entry of a params dict: :meth:`param_shapes` then :meth:`buffer_shapes`."""
        return {**self.param_shapes(), **self.buffer_shapes()}

    def pattern(self, index: int):
        """The ``structured.ConnectionPattern`` of layer ``index``, or None for a dense layer.

        Seeded by (the layer's seed, index), so two sparse layers of one model differ.
        """
        layer = self.flat_layers[index]
        if not isinstance(layer, Linear) or layer.density >= 1.0:
            return None
        from .structured import DEFAULT_LANES, connection_pattern
        n_in = self._shapes[index][0][0]
        return connection_pattern(n_in, layer.out, layer.density, seed=(layer.seed, index),
                                  lanes=layer.lanes or DEFAULT_LANES)

    def with_density(self, density: float, seed: int = 0, lanes: int = 0) -> "Model":
        """This model with every top-level linear layer except the last sparse at ``density`` (1: unchanged)."""
        import dataclasses
        linears = [i for i, l in enumerate(self.layers) if isinstance(l, Linear)]
        checked = linear(1, density=density, seed=seed, lanes=lanes)
        if checked.density >= 1.0:
            return self
        layers = list(self.layers)
        for i in linears[:-1]:
            layers[i] = dataclasses.replace(layers[i], density=checked.density, seed=checked.seed,
                                            lanes=checked.lanes)
        return Model(self.name, self.input_shape, tuple(layers))

    def init_params(self, seed: int = 0) -> Dict[str, np.ndarray]:
        """He (Kaiming) normal weights, zero biases, float32; same seed -> same arrays.

        Layers followed by a ReLU get std sqrt(2 / fan_in) (a sparse junction's
        own fan-in: its compressed weights are (out, fan_in)); the others (the
        logits layer, a convolution feeding a batch normalisation) get
        sqrt(1 / fan_in). Batch normalisation starts as the identity: gamma 1,
        beta 0, running mean 0, running variance 1 (the buffers are included).
        """
        rng = np.random.default_rng(_positive("seed", seed, 0))
        shapes = self.state_shapes()
        params = {}
        for i, layer in enumerate(self.flat_layers):
            if isinstance(layer, (Conv, Linear)):
                w_shape = shapes[param_key(i, "w")]
                gain = 2.0 if layer.relu else 1.0
                std = np.sqrt(gain / int(np.prod(w_shape[1:])))
                params[param_key(i, "w")] = (rng.standard_normal(w_shape) * std).astype(np.float32)
                params[param_key(i, "b")] = np.zeros(shapes[param_key(i, "b")], np.float32)
            elif isinstance(layer, BatchNorm):
                c = shapes[param_key(i, "gamma")]
                params[param_key(i, "gamma")] = np.ones(c, np.float32)
                params[param_key(i, "beta")] = np.zeros(c, np.float32)
        for key, shape in self.buffer_shapes().items():
            params[key] = (np.ones if key.endswith("running_var") else np.zeros)(shape, np.float32)
        return params

    def zero_velocities(self) -> Dict[str, np.ndarray]:
        """SGD momentum buffers: zeros shaped like the trained parameters."""
        return {k: np.zeros(s, np.float32) for k, s in self.param_shapes().items()}

    def layer_names(self) -> Tuple[str, ...]:
        """Readable layer names for reports, plots and errors: conv1, pool1, flatten1, fc1, ...

        Numbered per kind in layer order (layer numbers, :attr:`flat_layers`:
        a residual block, then its body, then its shortcut), so they depend
        only on the layer list (a checkpoint's model gives the same names);
        parameters keep their index keys (:func:`param_key`).
        """
        counts: Dict[str, int] = {}
        names = []
        for layer in self.flat_layers:
            prefix = LAYER_NAME_PREFIX.get(layer.kind, layer.kind)
            counts[prefix] = counts.get(prefix, 0) + 1
            names.append(f"{prefix}{counts[prefix]}")
        return tuple(names)

    def describe(self) -> str:
        """One line per layer (indented inside residual blocks): number, name, spec and output shape."""
        lines = [f"{self.name}: input {'x'.join(map(str, self.input_shape))}"]
        names = self.layer_names()

        def walk(nodes, indent, label=""):
            for node in nodes:
                out = self._shapes[node.index][1]
                relu = " relu" if getattr(node.layer, "relu", False) else ""
                lines.append(f"{indent}{node.index} {names[node.index]}: {label}{_describe(node.layer)}{relu} -> "
                             f"{'x'.join(map(str, out))}")
                walk(node.body, indent + "    ", "")
                walk(node.shortcut, indent + "    ", "shortcut: ")

        walk(self._nodes, "  ")
        return "\n".join(lines)


def _lenet5() -> Model:
    return Model("lenet5", (1, 28, 28), (
        conv(6, 5), maxpool(2), conv(16, 5), maxpool(2), flatten(),
        linear(120), linear(84), linear(10, relu=False)))


def _vgg_tiny() -> Model:
    return Model("vgg_tiny", (3, 32, 32), (
        conv(32, 3, pad=1), conv(32, 3, pad=1), maxpool(2),
        conv(64, 3, pad=1), conv(64, 3, pad=1), maxpool(2),
        conv(128, 3, pad=1), maxpool(2), flatten(),
        linear(256), linear(10, relu=False)))


def _vgg_strided() -> Model:
    # Downsamples with stride-2 convolutions instead of pooling, so that the
    # strided forms of all three convolution passes are exercised in training.
    return Model("vgg_strided", (3, 32, 32), (
        conv(32, 3, pad=1), conv(32, 3, stride=2, pad=1),
        conv(64, 3, pad=1), conv(64, 3, stride=2, pad=1),
        conv(128, 3, pad=1), conv(128, 3, stride=2, pad=1), flatten(),
        linear(256), linear(10, relu=False)))


def resnet(depth: int, input_shape=(3, 32, 32), num_classes: int = 10, name: Optional[str] = None,
           bn_momentum: float = 0.1) -> Model:
    """The CIFAR ResNet of He et al. (2016, sec. 4.2) with ``depth`` = 6n + 2 layers.

    A 3x3 convolution of 16 channels, three stages of n residual blocks with
    16, 32 and 64 channels (the first block of stages 2 and 3 halves height
    and width with stride 2), global average pooling and a linear layer.
    Every convolution is followed by batch normalisation (the ReLU fused
    into it; in a block the second one's ReLU comes after the add), so the
    convolutions keep a bias only because the engine's convolution has one
    (the normalisation cancels it, and its gradient is zero up to rounding).

    Shortcuts: the identity where shapes agree; where a block changes the
    width, a projection, 1x1 convolution of stride 2 + batch normalisation
    (He et al.'s option B; they used zero-padded identity shortcuts, option
    A, for CIFAR). Projection runs on the existing convolution engine
    (strided 1x1 convolutions are one of its configurations), while option A
    would need a new subsample-and-pad kernel; it costs 2,560 weights
    (16x32 + 32x64), under 1 % of ResNet-20's and 3 % of ResNet-8's.

    ``input_shape`` (C, H, W): 3x32x32 (CIFAR-10) or 1x28x28 (MNIST: the
    stages then run at 28, 14 and 7 pixels), or any image of at least 4x4.
    ``bn_momentum``: of every batch normalisation's running statistics
    (PyTorch's 0.1 by default; short runs at a high learning rate infer
    better with a larger one, see README).
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth: must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {depth!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ValueError(f"input_shape: a ResNet needs a (C, H, W) image of at least 4x4, got {input_shape!r}")
    n = (depth - 2) // 6
    bn = lambda relu=True: batchnorm(relu, momentum=bn_momentum)
    layers: List[Layer] = [conv(16, 3, pad=1, relu=False), bn()]
    channels = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            body = (conv(width, 3, stride, 1, relu=False), bn(),
                    conv(width, 3, 1, 1, relu=False), bn(relu=False))
            shortcut = () if stride == 1 and width == channels else \
                (conv(width, 1, stride, 0, relu=False), bn(relu=False))
            layers.append(residual(body, shortcut))
            channels = width
    layers += [global_avgpool(), linear(_positive("num_classes", num_classes, 2), relu=False)]
    return Model(name or f"resnet{depth}", input_shape, tuple(layers))


#: Known model names -> builders taking the data's (C, H, W) (see :func:`get_model`).
MODELS = {"lenet5": lambda shape: _lenet5(), "vgg_tiny": lambda shape: _vgg_tiny(),
          "vgg_strided": lambda shape: _vgg_strided(),
          "resnet8": lambda shape: resnet(8, shape or (3, 32, 32)),
          "resnet20": lambda shape: resnet(20, shape or (3, 32, 32))}


def get_model(name: str, input_shape: Optional[Tuple[int, int, int]] = None) -> Model:
    """The model called ``name``; a ValueError lists the known names otherwise.

    ``input_shape`` (C, H, W) of the data: the ResNets adapt to it (default
    3x32x32); the other models have a fixed input shape and ignore it (the
    training loop refuses data that does not fit them).
    """
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](None if input_shape is None else tuple(int(d) for d in input_shape))


#: layer kind -> spec builder (validates its arguments), for models read back from data
_BUILDERS = {"conv": conv, "maxpool": maxpool, "flatten": flatten, "linear": linear, "batchnorm": batchnorm,
             "avgpool": global_avgpool, "residual": residual}


def _layer_to_dict(layer: Layer) -> dict:
    """{"kind": ..., field: value}; a residual block's body and shortcut as lists of such dicts."""
    out = {"kind": layer.kind}
    for f in fields(layer):
        value = getattr(layer, f.name)
        out[f.name] = [_layer_to_dict(l) for l in value] if f.name in ("body", "shortcut") else value
    return out


def _layer_from_dict(layer, where: str) -> Layer:
    args = dict(layer)
    kind = args.pop("kind", None)
    if kind not in _BUILDERS:
        raise ValueError(f"architecture: {where} has kind {kind!r}; known kinds: {', '.join(_BUILDERS)}")
    if kind == "residual":
        for part in ("body", "shortcut"):
            args[part] = tuple(_layer_from_dict(l, f"{where}.{part}[{j}]") for j, l in enumerate(args.get(part, ())))
    try:
        return _BUILDERS[kind](**args)
    except TypeError as e:
        raise ValueError(f"architecture: {where} ({kind}): {e}") from e


def model_to_dict(model: Model) -> dict:
    """JSON-ready description of ``model`` (name, input shape, layer specs): what a checkpoint stores
    of an architecture that is not in :data:`MODELS` (an imported one)."""
    return {"name": model.name, "input_shape": list(model.input_shape),
            "layers": [_layer_to_dict(layer) for layer in model.layers]}


def model_from_dict(data: dict) -> Model:
    """The :class:`Model` that :func:`model_to_dict` described; a ValueError names what is malformed."""
    try:
        name, input_shape, layers = data["name"], data["input_shape"], data["layers"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"architecture: expected a dict with name, input_shape and layers, got {data!r}") from e
    specs = [_layer_from_dict(layer, f"layers[{i}]") for i, layer in enumerate(layers)]
    return Model(str(name), tuple(input_shape), tuple(specs))
