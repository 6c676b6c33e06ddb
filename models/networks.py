"""Models as data: a model is an input shape plus a list of layer specs.

Layer specs are small frozen dataclasses (:class:`Conv`, :class:`MaxPool`,
:class:`Flatten`, :class:`Linear`), built with :func:`conv`, :func:`maxpool`,
:func:`flatten` and :func:`linear`. Nothing here computes: the training step
(``zskip.models.step``) walks the list and calls a backend's ops.

Parameters are a flat dict of float32 arrays keyed ``"layer{i}.w"`` /
``"layer{i}.b"`` (i = index in the layer list), so checkpoints and backends
can name them without knowing the model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple, Union

import numpy as np

__all__ = ["Conv", "MaxPool", "Flatten", "Linear", "Model", "conv", "maxpool", "flatten", "linear",
           "MODELS", "get_model", "param_key", "model_to_dict", "model_from_dict"]


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


Layer = Union[Conv, MaxPool, Flatten, Linear]


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


#: layer kind -> the stem of its readable name (Model.layer_names)
LAYER_NAME_PREFIX = {"conv": "conv", "maxpool": "pool", "flatten": "flatten", "linear": "fc"}


def param_key(index: int, name: str) -> str:
    """Key of parameter ``name`` ("w" or "b") of layer ``index`` in a params dict."""
    return f"layer{index}.{name}"


def _describe(layer: Layer) -> str:
    if isinstance(layer, Conv):
        return f"conv {layer.kernel}x{layer.kernel} {layer.out} stride {layer.stride} pad {layer.pad}"
    if isinstance(layer, MaxPool):
        return f"maxpool {layer.size} stride {layer.stride}"
    if isinstance(layer, Linear):
        return f"linear {layer.out}" + (f" density {layer.density:g}" if layer.density < 1 else "")
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
        self.shapes()

    def shapes(self) -> List[Tuple[Tuple[int, ...], Tuple[int, ...]]]:
        """Per layer, (input shape, output shape) without the batch dimension."""
        shape: Tuple[int, ...] = tuple(int(d) for d in self.input_shape)
        out = []
        for i, layer in enumerate(self.layers):
            where = f"layers[{i}] ({_describe(layer)}) of model {self.name!r}"
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
            else:
                raise TypeError(f"{where}: unknown layer type {type(layer).__name__}")
            out.append((shape, new))
            shape = new
        if len(shape) != 1:
            raise ValueError(f"layers: model {self.name!r} must end with a linear layer (logits), ends with shape {shape}")
        return out

    @property
    def num_classes(self) -> int:
        """Width of the logits (the last layer's output)."""
        return self.shapes()[-1][1][0]

    def param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Shapes of every parameter, keyed as :func:`param_key`."""
        shapes = {}
        for i, (layer, (src, _)) in enumerate(zip(self.layers, self.shapes())):
            if isinstance(layer, Conv):
                shapes[param_key(i, "w")] = (layer.out, src[0], layer.kernel, layer.kernel)
            elif isinstance(layer, Linear):
                pattern = self.pattern(i)
                shapes[param_key(i, "w")] = (layer.out, src[0] if pattern is None else pattern.fan_in)
            else:
                continue
            shapes[param_key(i, "b")] = (layer.out,)
        return shapes

    def pattern(self, index: int):
        """The ``structured.ConnectionPattern`` of layer ``index``, or None for a dense layer.

        Seeded by (the layer's seed, index), so two sparse layers of one model differ.
        """
        layer = self.layers[index]
        if not isinstance(layer, Linear) or layer.density >= 1.0:
            return None
        from .structured import DEFAULT_LANES, connection_pattern
        n_in = self.shapes()[index][0][0]
        return connection_pattern(n_in, layer.out, layer.density, seed=(layer.seed, index),
                                  lanes=layer.lanes or DEFAULT_LANES)

    def with_density(self, density: float, seed: int = 0, lanes: int = 0) -> "Model":
        """This model with every fully-connected layer except the last sparse at ``density`` (1: unchanged)."""
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
        own fan-in: its compressed weights are (out, fan_in)); the logits layer
        gets sqrt(1 / fan_in) so the initial softmax is not saturated.
        """
        rng = np.random.default_rng(_positive("seed", seed, 0))
        shapes = self.param_shapes()
        params = {}
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, (Conv, Linear)):
                continue
            w_shape = shapes[param_key(i, "w")]
            gain = 2.0 if layer.relu else 1.0
            std = np.sqrt(gain / int(np.prod(w_shape[1:])))
            params[param_key(i, "w")] = (rng.standard_normal(w_shape) * std).astype(np.float32)
            params[param_key(i, "b")] = np.zeros(shapes[param_key(i, "b")], np.float32)
        return params

    def zero_velocities(self) -> Dict[str, np.ndarray]:
        """SGD momentum buffers: zeros shaped like the parameters."""
        return {k: np.zeros(s, np.float32) for k, s in self.param_shapes().items()}

    def layer_names(self) -> Tuple[str, ...]:
        """Readable layer names for reports, plots and errors: conv1, pool1, flatten1, fc1, ...

        Numbered per kind in layer order, so they depend only on the layer list
        (a checkpoint's model gives the same names); parameters keep their
        index keys (:func:`param_key`).
        """
        counts: Dict[str, int] = {}
        names = []
        for layer in self.layers:
            prefix = LAYER_NAME_PREFIX.get(layer.kind, layer.kind)
            counts[prefix] = counts.get(prefix, 0) + 1
            names.append(f"{prefix}{counts[prefix]}")
        return tuple(names)

    def describe(self) -> str:
        """One line per layer: index, name, spec and output shape."""
        lines = [f"{self.name}: input {'x'.join(map(str, self.input_shape))}"]
        for i, (name, layer, (_, out)) in enumerate(zip(self.layer_names(), self.layers, self.shapes())):
            relu = " relu" if getattr(layer, "relu", False) else ""
            lines.append(f"  {i} {name}: {_describe(layer)}{relu} -> {'x'.join(map(str, out))}")
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


#: Known model names -> builders.
MODELS = {"lenet5": _lenet5, "vgg_tiny": _vgg_tiny, "vgg_strided": _vgg_strided}


def get_model(name: str) -> Model:
    """The model called ``name``; a ValueError lists the known names otherwise."""
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name]()


#: layer kind -> spec builder (validates its arguments), for models read back from data
_BUILDERS = {"conv": conv, "maxpool": maxpool, "flatten": flatten, "linear": linear}


def model_to_dict(model: Model) -> dict:
    """JSON-ready description of ``model`` (name, input shape, layer specs): what a checkpoint stores
    of an architecture that is not in :data:`MODELS` (an imported one)."""
    return {"name": model.name, "input_shape": list(model.input_shape),
            "layers": [{"kind": layer.kind, **asdict(layer)} for layer in model.layers]}


def model_from_dict(data: dict) -> Model:
    """The :class:`Model` that :func:`model_to_dict` described; a ValueError names what is malformed."""
    try:
        name, input_shape, layers = data["name"], data["input_shape"], data["layers"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"architecture: expected a dict with name, input_shape and layers, got {data!r}") from e
    specs = []
    for i, layer in enumerate(layers):
        args = dict(layer)
        kind = args.pop("kind", None)
        if kind not in _BUILDERS:
            raise ValueError(f"architecture: layers[{i}] has kind {kind!r}; known kinds: {', '.join(_BUILDERS)}")
        try:
            specs.append(_BUILDERS[kind](**args))
        except TypeError as e:
            raise ValueError(f"architecture: layers[{i}] ({kind}): {e}") from e
    return Model(str(name), tuple(input_shape), tuple(specs))
