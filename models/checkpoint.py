"""Training checkpoints: one .npz file, written atomically, read without pickle.

Layout: ``param/<key>`` and ``velocity/<key>`` float arrays (keys as in
``zskip.models.networks.param_key``; ``param/`` also holds the running
statistics of batch normalisation, which inference uses), ``format`` (int), and ``meta``: a JSON
string with ``model``, ``epoch`` (the epoch in progress), ``step`` (batches
of that epoch already done), ``config`` (the run's settings), ``state``
(the loop's running totals, so a resumed run reports what an uninterrupted
one would) and ``architecture`` (``networks.model_to_dict``: the layer specs,
so a model imported from PyTorch or ONNX can be rebuilt without its source;
absent from older files).

A checkpoint holds finite values only: writing one with inf/NaN is refused,
and so is loading one (naming the file and the array). A damaged file
(truncated, corrupted, not an npz) or malformed meta is a ValueError
``checkpoint: cannot read PATH: ...``. Partial files of a writer that was
killed (``.ckpt-PID-*.npz`` of a process that no longer runs) are removed
by the next write in that directory.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from .networks import Model, get_model, model_from_dict

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "checkpoint_model", "FORMAT_VERSION"]

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
    #: ``networks.model_to_dict`` of the model, None in files written before it was stored
    architecture: Optional[dict] = None


def save_checkpoint(path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path``: a temporary file in the same directory, then os.replace.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = os.fspath(path)
    for what, arrays in (("param", ckpt.params), ("velocity", ckpt.velocities)):
        for key, value in arrays.items():
            problem = _nonfinite(value)
            if problem:
                raise ValueError(f"checkpoint: refusing to write {path}: {what} {key} {problem}")
    meta = {"model": ckpt.model, "epoch": int(ckpt.epoch), "step": int(ckpt.step),
            "config": ckpt.config, "state": ckpt.state}
    if ckpt.architecture is not None:
        meta["architecture"] = ckpt.architecture
    arrays = {"format": np.array(FORMAT_VERSION), "meta": np.array(json.dumps(meta))}
    arrays.update({f"param/{k}": np.asarray(v) for k, v in ckpt.params.items()})
    arrays.update({f"velocity/{k}": np.asarray(v) for k, v in ckpt.velocities.items()})
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_partials(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".ckpt-{os.getpid()}-", suffix=".npz", dir=directory)
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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (the writer of a temporary file named after it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(directory) -> list:
    """Remove ``.ckpt-PID-*.npz`` partial checkpoints whose writer process is gone; returns their paths.

    A partial without a process id (an older zskip) goes when it is over an hour old.
    """
    removed = []
    now = time.time()
    for tmp in glob.glob(os.path.join(glob.escape(os.fspath(directory)), ".ckpt-*.npz")):
        pid = os.path.basename(tmp).split("-")[1]
        try:
            # without a process id (an older zskip): stale after an hour
            stale = not pid_alive(int(pid)) if pid.isdigit() else now - os.path.getmtime(tmp) > 3600
            if stale:
                os.unlink(tmp)
                removed.append(tmp)
        except OSError:
            pass
    return removed


def _nonfinite(a) -> str:
    """'' when float array ``a`` is finite, else what is wrong (count and first index)."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return f"has dtype {a.dtype}, not a float type"
    bad = ~np.isfinite(a)
    if not bad.any():
        return ""
    first = tuple(int(i) for i in np.argwhere(bad)[0]) if a.ndim else ()
    return f"holds {int(bad.sum())} non-finite values (inf/NaN), the first at index {first}"


def _meta_int(path, meta: dict, key: str) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 31:
        raise ValueError(f"checkpoint: cannot read {path}: meta {key!r} must be an integer in [0, {2 ** 31 - 1}], "
                         f"got {value!r}")
    return value


def load_checkpoint(path, model: Model | None = None) -> Checkpoint:
    """Read a checkpoint (``allow_pickle=False``); with ``model``, check it belongs to it.

    Raises ValueError naming ``checkpoint`` when the file is not a zskip
    checkpoint, has another format version, or was written for another model
    (name, parameter names or shapes differ).
    """
    path = os.fspath(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an npz archive")
        with loaded as f:
            files = {name: f[name] for name in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        if isinstance(e, FileNotFoundError):
            raise ValueError(f"checkpoint: cannot read {path}: the file does not exist") from None
        raise ValueError(f"checkpoint: cannot read {path}: {type(e).__name__}: {e or 'empty or truncated file'} "
                         f"(damaged or not a checkpoint)") from None
    if "format" not in files or "meta" not in files:
        raise ValueError(f"checkpoint: {path} is not a zskip checkpoint (no format/meta entries)")
    if files["format"].shape != () or files["format"].dtype.kind not in "iu" or \
            int(files["format"]) != FORMAT_VERSION:
        raise ValueError(f"checkpoint: {path} has format {files['format']!r}, this zskip reads {FORMAT_VERSION}")
    try:
        meta = json.loads(str(files["meta"]))
    except ValueError as e:
        raise ValueError(f"checkpoint: cannot read {path}: meta is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
        raise ValueError(f"checkpoint: cannot read {path}: meta must be a JSON object with a model name")
    epoch, step = _meta_int(path, meta, "epoch"), _meta_int(path, meta, "step")
    for key in ("config", "state"):
        if not isinstance(meta.get(key, {}), dict):
            raise ValueError(f"checkpoint: cannot read {path}: meta {key!r} must be a JSON object, "
                             f"got {type(meta[key]).__name__}")
    params = {k[6:]: v for k, v in files.items() if k.startswith("param/")}
    velocities = {k[9:]: v for k, v in files.items() if k.startswith("velocity/")}
    for what, arrays in (("param", params), ("velocity", velocities)):
        for key, value in arrays.items():
            problem = _nonfinite(value)
            if problem:
                raise ValueError(f"checkpoint: {path}: {what} {key} {problem}; refusing to resume from it")
    architecture = meta.get("architecture")
    if architecture is not None and not isinstance(architecture, dict):
        raise ValueError(f"checkpoint: cannot read {path}: meta 'architecture' must be a JSON object, "
                         f"got {type(architecture).__name__}")
    ckpt = Checkpoint(meta["model"], params, velocities, epoch, step, meta.get("config", {}), meta.get("state", {}),
                      architecture)
    if model is not None:
        _check_matches(path, ckpt, model)
    return ckpt


def checkpoint_model(ckpt: Checkpoint) -> Model:
    """The model ``ckpt`` was written for: its stored architecture, else the known model of that name."""
    if ckpt.architecture is not None:
        return model_from_dict(ckpt.architecture)
    return get_model(ckpt.model)


def _check_matches(path: str, ckpt: Checkpoint, model: Model) -> None:
    if ckpt.model != model.name:
        raise ValueError(f"checkpoint: {path} was written for model {ckpt.model!r}, not {model.name!r}")
    # params carry batch normalisation's running statistics too; velocities only what SGD trains
    for what, arrays, expected in (("param", ckpt.params, model.state_shapes()),
                                   ("velocity", ckpt.velocities, model.param_shapes())):
        if set(arrays) != set(expected):
            raise ValueError(f"checkpoint: {path} has {what} entries {sorted(arrays)}, "
                             f"model {model.name!r} needs {sorted(expected)}")
        for key, shape in expected.items():
            if arrays[key].shape != shape:
                raise ValueError(f"checkpoint: {path} {what} {key} has shape {arrays[key].shape}, "
                                 f"model {model.name!r} needs {shape}")
