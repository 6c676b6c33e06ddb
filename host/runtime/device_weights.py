"""Weights, biases and momentum buffers held in device memory between training steps.

They live in the ``wgt`` arena (:class:`DeviceWeights`), with the batch
normalisations' running statistics (the model's buffers: running_mean then
running_var of a layer in one slot, as the BN kernels read them). A step returns
*mirrors* (:class:`DeviceTensors`), mappings that read the arena back only
when an item is asked for (checkpoint, comparison with the reference, end of
training), once per device state ("generation"). A mirror passed back in is
recognised and nothing is uploaded; any other dict is uploaded first. A
mirror of a superseded generation refuses to be read (its values are gone
from the device); :meth:`DeviceWeights.close` reads the last state back so
its mirrors stay valid after the device is released.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Dict, Optional, Tuple

import numpy as np

from ...models.networks import Model
from ..ip.program import ArenaLayout

__all__ = ["DeviceWeights", "DeviceTensors"]

#: the arenas a model's weights live in between steps (parameters, momentum buffers)
WEIGHT_ARENAS = ("wgt", "vel")



class DeviceWeights:
    """The ``wgt`` and ``vel`` arenas of one model: every parameter and its momentum buffer.

    Parameters live in ``wgt``, momentum buffers in ``vel`` (the IP reads them
    through separate ports, so sgd_update takes one element per cycle).

    ``generation`` counts the states of the arena; a mirror
    (:class:`DeviceTensors`) is valid while its generation is current.
    """

    def __init__(self, accelerator, model: Model):
        self.model = model
        #: trained parameters (each has a momentum buffer)
        self.shapes = model.param_shapes()
        #: every entry of a params dict: the trained parameters, then the running statistics
        self.state_shapes = model.state_shapes()
        self.layout = ArenaLayout()
        for key, shape in self.shapes.items():
            self.layout.alloc("wgt", self.param_slot(key), max(1, int(np.prod(shape))))
            self.layout.alloc("vel", self.velocity_slot(key), max(1, int(np.prod(shape))))
        for key in self.state_shapes:
            if key.endswith(".running_mean"):
                self._alloc_running(key, key[:-len("mean")] + "var", self.state_shapes[key][0])
        #: arena name -> device buffer, shared by every program of the model
        self.buffers = {a: accelerator.device.allocate((self.layout.size(a),), np.float32) for a in WEIGHT_ARENAS}
        self.generation = 0
        self.mirror: Tuple[Optional[DeviceTensors], Optional[DeviceTensors]] = (None, None)
        self._host: Optional[Tuple[dict, dict]] = None     # read-back copy of the current generation
        self.closed = False

    def _alloc_running(self, mean_key: str, var_key: str, channels: int) -> None:
        """One wgt slot of 2 * channels words: running_mean, then running_var directly after (descriptor.h
        D_RUNNING); each key is an entry of the layout of its own, so put/get address it by name."""
        offset = self.layout.alloc("wgt", "running/" + mean_key[:-len(".running_mean")], 2 * channels)
        self.layout.entries[self.param_slot(mean_key)] = ("wgt", offset, channels)
        self.layout.entries[self.param_slot(var_key)] = ("wgt", offset + channels, channels)

    @staticmethod
    def param_slot(key: str) -> str:
        return "param/" + key

    @staticmethod
    def velocity_slot(key: str) -> str:
        return "velocity/" + key

    def placeholders(self) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """Placeholder (params, velocities) for recording, float32 of the model's shapes.

        A layer's running_mean and running_var are the two rows of one (2, C) array, as in the arena.
        """
        fresh = lambda s: np.zeros(int(np.prod(s)) + 1, np.float32)[:int(np.prod(s))].reshape(s)
        params = {}
        for k, s in self.state_shapes.items():
            if k.endswith(".running_mean"):
                both = fresh((2, *s))
                params[k], params[k[:-len("mean")] + "var"] = both[0], both[1]
            elif not k.endswith(".running_var"):
                params[k] = fresh(s)
        return {k: params[k] for k in self.state_shapes}, {k: fresh(s) for k, s in self.shapes.items()}

    def is_current(self, params, velocities) -> bool:
        """Whether (params, velocities) are the mirrors of what the device holds now."""
        p, v = self.mirror
        return p is not None and params is p and (velocities is None or velocities is v)

    def upload(self, params: Mapping, velocities: Optional[Mapping]) -> None:
        """Write params (and velocities; None keeps the device's) into the arena and flush it."""
        for what, arrays, shapes in (("params", params, self.state_shapes), ("velocities", velocities, self.shapes)):
            if arrays is None:
                continue
            if set(arrays) != set(shapes):
                raise ValueError(f"{what}: expected keys {sorted(shapes)}, got {sorted(arrays)}")
            for key, shape in shapes.items():
                a = np.asarray(arrays[key])
                if a.shape != shape:
                    raise ValueError(f"{what}: {key} must have shape {shape}, got {a.shape}")
        host = self.buffers
        for key in self.state_shapes:
            self.layout.put(host, self.param_slot(key), np.asarray(params[key], dtype=np.float32))
        for key in self.shapes:
            if velocities is not None:
                self.layout.put(host, self.velocity_slot(key), np.asarray(velocities[key], np.float32))
        # velocities None keeps the device's momentum buffers: their arena is not flushed
        for arena in (WEIGHT_ARENAS if velocities is not None else ("wgt",)):
            host[arena].sync_to_device()
        self.advance()

    def advance(self) -> Tuple["DeviceTensors", "DeviceTensors"]:
        """A new device state (after an upload or a step): new mirrors, old ones become stale."""
        self.generation += 1
        self._host = None
        self.mirror = (DeviceTensors(self, "param", self.generation), DeviceTensors(self, "velocity", self.generation))
        return self.mirror

    def read(self, generation: int) -> Tuple[dict, dict]:
        """(params, velocities) of ``generation`` read back from the device (once per generation)."""
        if generation != self.generation:
            raise RuntimeError(f"device weights: generation {generation} was superseded by {self.generation} "
                               f"(a later step or upload changed them on the device); read a step's params "
                               f"before running the next one")
        if self._host is None:
            if self.closed:
                raise RuntimeError("device weights: the backend was closed before they were read back")
            for buf in self.buffers.values():
                buf.sync_from_device()
            bufs = self.buffers
            self._host = ({k: self.layout.get(bufs, self.param_slot(k), s) for k, s in self.state_shapes.items()},
                          {k: self.layout.get(bufs, self.velocity_slot(k), s) for k, s in self.shapes.items()})
        return self._host

    def close(self) -> None:
        """Read the current state back (its mirrors stay valid), then free the arena."""
        if not self.closed:
            if self.generation:
                self.read(self.generation)
            for buf in self.buffers.values():
                buf.freebuffer()
            self.closed = True


class DeviceTensors(Mapping):
    """Params (with the running statistics) or velocities held on the device, read back lazily (see the module
    docstring)."""

    def __init__(self, weights: DeviceWeights, which: str, generation: int):
        self._weights, self._which, self.generation = weights, which, generation

    def __getitem__(self, key: str) -> np.ndarray:
        params, velocities = self._weights.read(self.generation)
        return (params if self._which == "param" else velocities)[key]

    def _keys(self):
        w = self._weights
        return w.state_shapes if self._which == "param" else w.shapes

    def __iter__(self):
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return f"DeviceTensors({self._which}, generation {self.generation}, keys {list(self)})"
