"""Models in and out: PyTorch and ONNX import/export, hls4ml projects for inference after training.

>>> model, params = from_torch(torch_module, input_shape=(1, 28, 28))   # torch.fx tracing
>>> module = to_torch(model, params)                                     # nn.Sequential, trained weights
>>> proto = to_onnx(model, params, "lenet5.onnx"); model, params = from_onnx("lenet5.onnx")
>>> hls_model = to_hls4ml(model, params, "hls_prj", precision="float", part="xc7z020clg400-1")

torch and onnx are the optional extra ``zskip[interop]``; importing this
package works without them, and each function that needs one says which
extra installs it. ``to_hls4ml`` goes through hls4ml's own PyTorch converter
(so it needs torch as well).
"""
from .chain import ImportRefused, MissingExtra
from .hls4ml_io import hls4ml_precision, predict_hls4ml, to_hls4ml
from .onnx_io import from_onnx, to_onnx
from .torch_io import from_torch, load_torch_file, save_torch_file, to_torch

__all__ = ["from_torch", "to_torch", "load_torch_file", "save_torch_file", "from_onnx", "to_onnx", "to_hls4ml",
           "predict_hls4ml", "hls4ml_precision", "ImportRefused", "MissingExtra", "load_model_file"]


def load_model_file(path, input_shape=None, name=None, trust_pickle: bool = False):
    """(Model, params) from ``path``: ``.onnx`` through :func:`from_onnx`, ``.pt`` / ``.pth`` (a whole
    ``nn.Module``) through :func:`load_torch_file` and :func:`from_torch` with ``input_shape`` (C, H, W).
    The model is called ``name``, by default the file's name without its suffix."""
    import os
    stem, suffix = os.path.splitext(os.path.basename(os.fspath(path)))
    suffix = suffix.lower()
    if suffix == ".onnx":
        return from_onnx(path, name=name or stem)
    if suffix in (".pt", ".pth"):
        if input_shape is None:
            raise ValueError(f"input_shape: needed to trace the PyTorch module in {path} (one sample's C, H, W)")
        return from_torch(load_torch_file(path, trust_pickle=trust_pickle), input_shape, name=name or stem)
    raise ValueError(f"model file: {path} must end in .onnx, .pt or .pth")
