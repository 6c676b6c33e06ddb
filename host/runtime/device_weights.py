"""Weights, biases and momentum buffers held in device memory between training steps.

They live in the ``wgt`` arena (:class:`DeviceWeights`). A step returns
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
        self.shapes = model.param_shapes()
        self.layout = ArenaLayout()
        for key, shape in self.shapes.items():
            self.layout.alloc("wgt", self.param_slot(key), max(1, int(np.prod(shape))))
            self.layout.alloc("vel", self.velocity_slot(key), max(1, int(np.prod(shape))))
        #: arena name -> device buffer, shared by every program of the model
        self.buffers = {a: accelerator.device.allocate((self.layout.size(a),), np.float32) for a in WEIGHT_ARENAS}
        self.generation = 0
        self.mirror: Tuple[Optional[DeviceTensors], Optional[DeviceTensors]] = (None, None)
        self._host: Optional[Tuple[dict, dict]] = None     # read-back copy of the current generation
        self.closed = False

    @staticmethod
    def param_slot(key: str) -> str:
        return "param/" + key

    @staticmethod
    def velocity_slot(key: str) -> str:
        return "velocity/" + key

    def placeholders(self) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """Placeholder (params, velocities) for recording, float32 of the model's shapes."""
        return ({k: np.zeros(int(np.prod(s)) + 1, np.float32)[:int(np.prod(s))].reshape(s)
                 for k, s in self.shapes.items()},
                {k: np.zeros(int(np.prod(s)) + 1, np.float32)[:int(np.prod(s))].reshape(s)
                 for k, s in self.shapes.items()})

    def is_current(self, params, velocities) -> bool:
        """Whether (params, velocities) are the mirrors of what the device holds now."""
        p, v = self.mirror
        return p is not None and params is p and (velocities is None or velocities is v)

    def upload(self, params: Mapping, velocities: Optional[Mapping]) -> None:
        """Write params (and velocities; None keeps the device's) into the arena and flush it."""
        for what, arrays in (("params", params), ("velocities", velocities)):
            if arrays is None:
                continue
            if set(arrays) != set(self.shapes):
                raise ValueError(f"{what}: expected keys {sorted(self.shapes)}, got {sorted(arrays)}")
            for key, shape in self.shapes.items():
                a = np.asarray(arrays[key])
                if a.shape != shape:
                    raise ValueError(f"{what}: {key} must have shape {shape}, got {a.shape}")
        host = self.buffers
        for key in self.shapes:
            self.layout.put(host, self.param_slot(key), np.asarray(params[key], dtype=np.float32))
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
            self._host = tuple({k: self.layout.get(bufs, slot(k), s) for k, s in self.shapes.items()}
                               for slot in (self.param_slot, self.velocity_slot))
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
    """Params or velocities held on the device, read back lazily (see the module docstring)."""

    def __init__(self, weights: DeviceWeights, which: str, generation: int):
        self._weights, self._which, self.generation = weights, which, generation

    def __getitem__(self, key: str) -> np.ndarray:
        params, velocities = self._weights.read(self.generation)
        return (params if self._which == "param" else velocities)[key]

    def __iter__(self):
        return iter(self._weights.shapes)

    def __len__(self) -> int:
        return len(self._weights.shapes)

    def __repr__(self) -> str:
        return f"DeviceTensors({self._which}, generation {self.generation}, keys {list(self)})"
