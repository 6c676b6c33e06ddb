"""hls4ml projects of trained zskip models, for inference after training.

The model goes out through :func:`~.torch_io.to_torch` and in through hls4ml's
own PyTorch converter, so the project is exactly what hls4ml would make of
the same network written in PyTorch. The numeric types come from the
training precision spec's classes (``zskip.host.ip.precision.parse_precision``:
``act``, ``wgt``, ``acc``; ``grad`` and ``opt`` exist only in training):
weights and biases take ``wgt``, layer results ``act`` and accumulators
``acc``; a float32 spec gives hls4ml's ``float``.

The part is an argument: callers that start from a board name look it up in
``overlay/boards.ini`` (``zskip export --board``); models/ knows no boards.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Union

import numpy as np

from ..networks import Model
from .chain import require
from .torch_io import to_torch

__all__ = ["to_hls4ml", "predict_hls4ml", "hls4ml_precision", "HLS4ML_BACKENDS", "IO_TYPES"]

HLS4ML_BACKENDS = ("Vitis", "Vivado")
IO_TYPES = ("io_stream", "io_parallel")
_FLOATS = ("float", "float32")


def _one_type(what: str, text: str) -> str:
    t = str(text).replace(" ", "")
    if t in _FLOATS:
        return "float"
    if t.startswith("ap_fixed<") and t.endswith(">"):
        return t
    raise ValueError(f"precision: {what} must be 'float32' or 'ap_fixed<W,I>' / 'ap_fixed<W,I,Q,O>', got {text!r}")


def hls4ml_precision(precision: Union[str, Dict[str, str]]) -> Dict[str, str]:
    """hls4ml precision per role (``weight``, ``bias``, ``result``, ``accum``) for a precision.

    precision: one type for everything (``"float32"``/``"float"`` or an
    ``ap_fixed<W,I>``), or the training spec's classes as a dict (what
    ``zskip.host.ip.precision.parse_precision`` returns) with at least ``act``,
    ``wgt`` and ``acc``.
    """
    if isinstance(precision, str):
        t = _one_type("precision", precision)
        return {"weight": t, "bias": t, "result": t, "accum": t}
    if isinstance(precision, dict):
        missing = [c for c in ("act", "wgt", "acc") if c not in precision]
        if missing:
            raise ValueError(f"precision: a dict of tensor classes needs act, wgt and acc; missing {missing}")
        wgt = _one_type("wgt", precision["wgt"])
        return {"weight": wgt, "bias": wgt, "result": _one_type("act", precision["act"]),
                "accum": _one_type("acc", precision["acc"])}
    raise TypeError(f"precision: expected a type string or a dict of tensor classes, got {type(precision).__name__}")


def to_hls4ml(model: Model, params: Dict[str, np.ndarray], output_dir, precision: Union[str, Dict[str, str]] = "float",
              backend: str = "Vitis", io_type: str = "io_stream", part: Optional[str] = None,
              clock_period: Optional[float] = None, project_name: Optional[str] = None, write: bool = True):
    """An hls4ml ``ModelGraph`` of ``model`` with its trained ``params``, written to ``output_dir``.

    precision: see :func:`hls4ml_precision` (default float). backend: Vitis or
    Vivado. io_type: io_stream (default; the input is fed channels-last, which
    :func:`predict_hls4ml` does) or io_parallel (needs ap_fixed types: hls4ml's
    parallel pooling reads fixed-point fields). part: the FPGA part (None:
    hls4ml's default). clock_period: ns (None: hls4ml's default). Call
    ``.compile()`` on the result for C simulation, ``.build()`` with Vitis HLS.
    """
    require("torch", "to_hls4ml (through hls4ml's PyTorch converter)")
    import hls4ml  # a dependency of zskip itself (its ap_types headers)
    from hls4ml.converters import convert_from_pytorch_model
    from hls4ml.utils.config import config_from_pytorch_model
    if backend not in HLS4ML_BACKENDS:
        raise ValueError(f"backend: must be one of {', '.join(HLS4ML_BACKENDS)}, got {backend!r}")
    if io_type not in IO_TYPES:
        raise ValueError(f"io_type: must be one of {', '.join(IO_TYPES)}, got {io_type!r}")
    types = hls4ml_precision(precision)
    if io_type == "io_parallel" and "float" in types.values():
        raise ValueError(f"precision: hls4ml {hls4ml.__version__}'s io_parallel max-pooling compiles only with "
                         f"ap_fixed types; use io_type='io_stream' for float, or an ap_fixed precision")
    module = to_torch(model, params)
    # io_stream cannot transpose its input inside the design: the caller feeds channels-last
    conversion = "internal" if io_type == "io_stream" else "full"
    config = config_from_pytorch_model(module, tuple(model.input_shape), granularity="name", backend=backend,
                                       default_precision=types["result"], channels_last_conversion=conversion)
    for layer in config["LayerName"].values():
        layer_types = layer.get("Precision")
        if isinstance(layer_types, dict):
            for role in list(layer_types):
                if role in types:
                    layer_types[role] = types[role]
    kwargs = {"part": part} if part else {}
    if clock_period is not None:
        kwargs["clock_period"] = clock_period
    hls_model = convert_from_pytorch_model(module, output_dir=os.fspath(output_dir),
                                           project_name=project_name or f"zskip_{model.name}", backend=backend,
                                           hls_config=config, io_type=io_type, **kwargs)
    if write:
        hls_model.write()
    return hls_model


def predict_hls4ml(hls_model, x: np.ndarray) -> np.ndarray:
    """Logits (N, classes) of a compiled :func:`to_hls4ml` model for x (N, C, H, W), as zskip's ``predict``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"x: expected a rank-4 (N, C, H, W) batch, got shape {x.shape}")
    if hls_model.config.get_config_value("IOType") == "io_stream":
        x = x.transpose(0, 2, 3, 1)     # io_stream designs read pixels channels-last
    y = np.asarray(hls_model.predict(np.ascontiguousarray(x)))
    return y.reshape(len(x), -1)
