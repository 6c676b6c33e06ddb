"""ONNX in and out with the ``onnx`` package alone (no runtime needed).

``to_onnx`` writes Conv / Relu / MaxPool / Flatten / Gemm nodes (opset
:data:`OPSET`, batch dimension ``N`` left symbolic). ``from_onnx`` reads a
graph whose data path is a chain of those ops (also Reshape to (N, features),
MatMul + Add, Identity), following the tensor from the graph input to the
graph output; side computations that only read a tensor's shape (``Shape`` ->
``Gather`` -> ``Concat`` -> Reshape's shape input, as PyTorch's exporter
writes ``x.view(x.size(0), -1)``) are allowed off the chain.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..networks import Conv, Flatten, Linear, MaxPool, Model, param_key
from .chain import ImportRefused, Step, assemble, check_params, dense_params, require

__all__ = ["from_onnx", "to_onnx", "OPSET"]

#: opset of exported graphs (Conv/MaxPool/Gemm/Flatten have been stable since 13)
OPSET = 13



def to_onnx(model: Model, params: Dict[str, np.ndarray], path=None):
    """The ONNX ``ModelProto`` of ``model`` with ``params``; written to ``path`` when given.

    Input ``input`` (N, C, H, W) float32, output ``logits`` (N, classes);
    nodes and initializers are named after the layers (conv1, fc1...); a
    sparse junction becomes a dense Gemm with zeros off its edges.
    """
    onnx = require("onnx", "to_onnx")
    from onnx import TensorProto, helper, numpy_helper
    params = dense_params(model, check_params(model, params))
    nodes, inits = [], []
    current = "input"
    for i, (layer, name, (src, _)) in enumerate(zip(model.layers, model.layer_names(), model.shapes())):
        out = f"{name}_out"
        if isinstance(layer, Conv):
            inits += [numpy_helper.from_array(params[param_key(i, "w")], f"{name}.weight"),
                      numpy_helper.from_array(params[param_key(i, "b")], f"{name}.bias")]
            nodes.append(helper.make_node("Conv", [current, f"{name}.weight", f"{name}.bias"], [out], name=name,
                                          kernel_shape=[layer.kernel] * 2, strides=[layer.stride] * 2,
                                          pads=[layer.pad] * 4))
        elif isinstance(layer, Linear):
            inits += [numpy_helper.from_array(params[param_key(i, "w")], f"{name}.weight"),
                      numpy_helper.from_array(params[param_key(i, "b")], f"{name}.bias")]
            nodes.append(helper.make_node("Gemm", [current, f"{name}.weight", f"{name}.bias"], [out], name=name,
                                          transB=1))
        elif isinstance(layer, MaxPool):
            nodes.append(helper.make_node("MaxPool", [current], [out], name=name,
                                          kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2))
        elif isinstance(layer, Flatten):
            nodes.append(helper.make_node("Flatten", [current], [out], name=name, axis=1))
        else:
            raise ValueError(f"model: layer {name} ({type(layer).__name__}) has no ONNX export")
        current = out
        if getattr(layer, "relu", False):
            nodes.append(helper.make_node("Relu", [current], [f"{name}_relu_out"], name=f"{name}_relu"))
            current = f"{name}_relu_out"
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes, model.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *model.input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", model.num_classes])], inits)
    proto = helper.make_model(graph, producer_name="zskip", opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = min(proto.ir_version, 8)   # readable by older runtimes too
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _dims(value_info) -> Optional[Tuple]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)


#: batch of the probe run that resolves computed reshape targets when the graph's batch is symbolic
_PROBE_BATCH = 3


def _probe_shapes(proto, input_name: str, in_shape) -> Dict[str, Tuple[int, ...]]:
    """Shape of every tensor when onnx's reference evaluator runs the graph on a zero batch."""
    from onnx.reference import ReferenceEvaluator
    x = np.zeros((in_shape[0] or _PROBE_BATCH,) + tuple(in_shape[1:]), np.float32)
    try:
        values = ReferenceEvaluator(proto).run(None, {input_name: x}, intermediate=True)
    except Exception as e:
        raise ImportRefused(f"cannot run the graph to resolve its reshape targets: {e}") from e
    return {k: tuple(np.shape(v)) for k, v in values.items()}


def from_onnx(source, name: Optional[str] = None) -> Tuple[Model, Dict[str, np.ndarray]]:
    """(Model, params) of an ONNX file or ``ModelProto``.

    The graph has one input (N, C, H, W) with static C, H, W, and its data
    path is a chain of Conv, Relu, MaxPool, Flatten / Reshape to (N, features),
    Gemm or MatMul + Add, Identity, with weights as initializers. Anything
    else raises ImportRefused (a ValueError) naming the node and its op type.
    name: the model's name (default: the graph's name).
    """
    onnx = require("onnx", "from_onnx")
    from onnx import numpy_helper
    if isinstance(source, onnx.ModelProto):
        proto = source
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX file not found: {path}")
        try:
            proto = onnx.load(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot read it as an ONNX model: {e}") from e
    try:
        onnx.checker.check_model(proto)
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as e:
        raise ValueError(f"ONNX model does not pass onnx.checker / shape inference: {e}") from e
    g = proto.graph
    consts: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and "value" in _attrs(n):
            consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise ImportRefused(f"the graph has {len(inputs)} data inputs; zskip imports single-input networks")
    in_shape = _dims(inputs[0])
    if in_shape is None or len(in_shape) != 4 or None in in_shape[1:]:
        raise ImportRefused(f"graph input {inputs[0].name!r} has shape {in_shape}; zskip needs (N, C, H, W) "
                            f"with static C, H, W")
    if len(g.output) != 1:
        raise ImportRefused(f"the graph has {len(g.output)} outputs; zskip imports single-output networks")
    consumers: Dict[str, List] = {}
    for n in g.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)

    def weight(node, index: int, what: str) -> np.ndarray:
        if len(node.input) <= index or node.input[index] not in consts:
            raise ImportRefused(f"node {node.name!r} ({node.op_type}): its {what} is not a constant initializer")
        return consts[node.input[index]]

    steps: List[Step] = []
    probe_shapes = None
    current, shape = inputs[0].name, in_shape
    while current != g.output[0].name:
        users = [n for n in consumers.get(current, []) if n.op_type != "Shape"]
        if len(users) != 1:
            kinds = ", ".join(f"{n.name or '?'} ({n.op_type})" for n in users) or "no node"
            raise ImportRefused(f"tensor {current!r} feeds {kinds}; zskip imports a chain where each tensor feeds "
                                f"exactly the next layer (no branches or residual connections)")
        n = users[0]
        nm, op, a = n.name or n.output[0], n.op_type, _attrs(n)
        if n.input[0] != current:
            raise ImportRefused(f"node {nm!r} ({op}) takes the chain's tensor {current!r} as input "
                                f"{list(n.input).index(current)}, not as its data input")
        out = n.output[0]
        if op == "Conv":
            w = weight(n, 1, "weight")
            pads = list(a.get("pads", [0, 0, 0, 0]))
            if a.get("group", 1) != 1 or set(a.get("dilations", [1, 1])) != {1} or len(set(pads)) != 1 or \
                    a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
                raise ImportRefused(f"node {nm!r} (Conv): group={a.get('group', 1)}, dilations={a.get('dilations')}, "
                                    f"pads={pads}, auto_pad={a.get('auto_pad')}; zskip supports group 1, dilation 1 "
                                    f"and equal explicit pads")
            strides = list(a.get("strides", [1, 1]))
            if len(set(strides)) != 1 or w.ndim != 4 or w.shape[2] != w.shape[3]:
                raise ImportRefused(f"node {nm!r} (Conv): strides {strides}, weight shape {w.shape}; zskip supports "
                                    f"square 2-D kernels with equal strides")
            b = weight(n, 2, "bias") if len(n.input) > 2 and n.input[2] else None
            steps.append(Step("conv", nm, w, b, {"stride": strides[0], "pad": pads[0]}))
            h, wd = shape[2], shape[3]
            r = w.shape[2]
            shape = (shape[0], w.shape[0], (h + 2 * pads[0] - r) // strides[0] + 1,
                     (wd + 2 * pads[0] - r) // strides[0] + 1)
        elif op == "Relu":
            steps.append(Step("relu", nm))
        elif op == "MaxPool":
            k = list(a["kernel_shape"])
            s = list(a.get("strides", [1, 1]))
            if len(set(k)) != 1 or len(set(s)) != 1 or set(a.get("pads", [0])) != {0} or a.get("ceil_mode", 0) or \
                    set(a.get("dilations", [1])) != {1} or len(n.output) > 1 or \
                    a.get("auto_pad", b"NOTSET") != b"NOTSET":
                raise ImportRefused(f"node {nm!r} (MaxPool): kernel {k}, strides {s}, pads {a.get('pads')}, "
                                    f"ceil_mode {a.get('ceil_mode', 0)}; zskip supports square windows, equal "
                                    f"strides, no padding, floor mode and no indices output")
            steps.append(Step("maxpool", nm, attrs={"size": k[0], "stride": s[0]}))
            shape = (shape[0], shape[1], (shape[2] - k[0]) // s[0] + 1, (shape[3] - k[0]) // s[0] + 1)
        elif op in ("Flatten", "Reshape"):
            flat = (shape[0], int(np.prod(shape[1:])))
            if op == "Flatten":
                new = flat if a.get("axis", 1) == 1 else None
            elif n.input[1] in consts:
                target = [int(v) for v in consts[n.input[1]]]
                batch = shape[0] or 2                     # a symbolic batch: any size must flatten the same
                probe = np.empty((batch,) + tuple(shape[1:]), np.uint8)
                try:
                    got = probe.reshape([probe.shape[j] if v == 0 else v for j, v in enumerate(target)]).shape
                except ValueError:
                    got = None
                new = flat if got == (batch, flat[1]) else None
            else:
                # the target shape is computed in the graph (Shape -> Gather -> Concat): run it on a probe batch
                if probe_shapes is None:
                    probe_shapes = _probe_shapes(proto, inputs[0].name, in_shape)
                batch = in_shape[0] or _PROBE_BATCH
                new = flat if probe_shapes.get(out) == (batch, flat[1]) else None
            if new is None:
                raise ImportRefused(f"node {nm!r} ({op}): not a flatten of each sample, (N, ...) -> (N, features), "
                                    f"or its target shape is not known statically")
            if len(shape) != 2:
                steps.append(Step("flatten", nm))
            shape = flat
        elif op == "Gemm":
            if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
                raise ImportRefused(f"node {nm!r} (Gemm): alpha={a.get('alpha', 1.0)}, beta={a.get('beta', 1.0)}, "
                                    f"transA={a.get('transA', 0)}; zskip supports y = x W^T + b")
            w = weight(n, 1, "weight")
            w = w if a.get("transB", 0) else w.T
            b = weight(n, 2, "bias") if len(n.input) > 2 and n.input[2] else None
            steps.append(Step("linear", nm, w, b))
            shape = (shape[0], w.shape[0])
        elif op == "MatMul":
            w = weight(n, 1, "weight").T
            b = None
            adds = [m for m in consumers.get(out, []) if m.op_type == "Add"]
            if len(consumers.get(out, [])) == 1 and adds and (set(adds[0].input) - {out}) <= set(consts):
                bias_name = [t for t in adds[0].input if t != out][0]
                b, out = consts[bias_name], adds[0].output[0]
            steps.append(Step("linear", nm, w, None if b is None else np.broadcast_to(b, (w.shape[0],))))
            shape = (shape[0], w.shape[0])
        elif op == "Identity":
            pass
        else:
            hint = {"Dropout": " (zskip trains without dropout: export in eval mode or remove it)",
                    "Softmax": " (zskip's loss applies softmax: end the graph with the last Gemm)",
                    "LogSoftmax": " (zskip's loss applies softmax: end the graph with the last Gemm)",
                    "BatchNormalization": " (not supported yet)", "Add": " (residual additions are not supported)",
                    }.get(op, "")
            raise ImportRefused(f"node {nm!r} has op type {op}, which zskip does not support{hint}; supported: "
                                f"Conv, Relu, MaxPool, Flatten, Reshape to (N, features), Gemm, MatMul + Add, Identity")
        current = out
    return assemble(name or g.name or "onnx_model", tuple(int(d) for d in in_shape[1:]), steps)
