"""Training checkpoints: one .npz file, written atomically, read without pickle.

Layout: ``param/<key>`` and ``velocity/<key>`` float arrays (keys as in
``zskip.models.networks.param_key``), ``format`` (int), and ``meta``: a JSON
string with ``model``, ``epoch`` (the epoch in progress), ``step`` (batches
of that epoch already done), ``config`` (the run's settings) and ``state``
(the loop's running totals, so a resumed run reports what an uninterrupted
one would).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict

import numpy as np

from .networks import Model

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "FORMAT_VERSION"]

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """The contents of a checkpoint file."""
    model: str
    params: Dict[str, np.ndarray]
    velocities: Dict[str, np.ndarray]
    epoch: int
    step: int
    config: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)


def save_checkpoint(path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path``: a temporary file in the same directory, then os.replace.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = os.fspath(path)
    meta = {"model": ckpt.model, "epoch": int(ckpt.epoch), "step": int(ckpt.step),
            "config": ckpt.config, "state": ckpt.state}
    arrays = {"format": np.array(FORMAT_VERSION), "meta": np.array(json.dumps(meta))}
    arrays.update({f"param/{k}": np.asarray(v) for k, v in ckpt.params.items()})
    arrays.update({f"velocity/{k}": np.asarray(v) for k, v in ckpt.velocities.items()})
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, model: Model | None = None) -> Checkpoint:
    """Read a checkpoint (``allow_pickle=False``); with ``model``, check it belongs to it.

    Raises ValueError naming ``checkpoint`` when the file is not a zskip
    checkpoint, has another format version, or was written for another model
    (name, parameter names or shapes differ).
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            files = {name: f[name] for name in f.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint: cannot read {path}: {e}") from e
    if "format" not in files or "meta" not in files:
        raise ValueError(f"checkpoint: {path} is not a zskip checkpoint (no format/meta entries)")
    if int(files["format"]) != FORMAT_VERSION:
        raise ValueError(f"checkpoint: {path} has format {int(files['format'])}, this zskip reads {FORMAT_VERSION}")
    meta = json.loads(str(files["meta"]))
    params = {k[6:]: v for k, v in files.items() if k.startswith("param/")}
    velocities = {k[9:]: v for k, v in files.items() if k.startswith("velocity/")}
    ckpt = Checkpoint(meta["model"], params, velocities, meta["epoch"], meta["step"],
                      meta.get("config", {}), meta.get("state", {}))
    if model is not None:
        _check_matches(path, ckpt, model)
    return ckpt


def _check_matches(path: str, ckpt: Checkpoint, model: Model) -> None:
    if ckpt.model != model.name:
        raise ValueError(f"checkpoint: {path} was written for model {ckpt.model!r}, not {model.name!r}")
    expected = model.param_shapes()
    for what, arrays in (("param", ckpt.params), ("velocity", ckpt.velocities)):
        if set(arrays) != set(expected):
            raise ValueError(f"checkpoint: {path} has {what} entries {sorted(arrays)}, "
                             f"model {model.name!r} needs {sorted(expected)}")
        for key, shape in expected.items():
            if arrays[key].shape != shape:
                raise ValueError(f"checkpoint: {path} {what} {key} has shape {arrays[key].shape}, "
                                 f"model {model.name!r} needs {shape}")
