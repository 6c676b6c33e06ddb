"""The training loop shared by every backend.

A backend is anything with ``stream(model, params, velocities, batches, lr,
momentum, weight_decay)`` (one ``StreamedStep`` per ``Batch``, see
``zskip.host.runtime.streaming``) and ``predict(model, params, x) -> logits`` (see
``zskip.host.backends``); the loop never asks which one it holds. It hands the
backend the whole epoch's batch stream, so a backend may pack batch i+1 while
batch i runs; a backend's params may be mirrors of device memory, read only
when the loop needs them (checkpoints, the end of the run).

A dataset with an ``augment`` callable (CIFAR-10's random crops and flips)
has every training batch augmented with random numbers drawn from (seed,
step), so resuming stays exact with augmentation too.

``check_every`` = N asks the backend to compare every N-th step (counted over
the whole run, the first included) with the numpy reference
(``zskip.models.check``); a failing comparison raises ``CheckFailed``.

Mini-batch order comes from (seed, epoch) alone, and checkpoints carry the
parameters, the momentum buffers and the running totals of the epoch in
progress, so a resumed run produces bit-identical weights and the same report
as an uninterrupted one, also when it stopped in the middle of an epoch.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
from tqdm import tqdm

from .checkpoint import Checkpoint, load_checkpoint, remove_stale_partials, save_checkpoint
from .datasets import Dataset
from .lr_schedule import check_schedule, lr_at
from .networks import Model, model_to_dict
from .step import Batch, NonFinite, prune_seeds

__all__ = ["train", "evaluate", "epoch_permutation", "training_batch", "TrainResult", "Diverged"]


class Diverged(ValueError):
    """Training produced inf or NaN; the message names the step, the layer, the op and the tensor."""

# Settings that decide the trajectory: a resumed run must use the same ones.
_TRAJECTORY_KEYS = ("model", "data", "batch_size", "lr", "momentum", "weight_decay", "seed", "n_train", "prune_rate",
                    "sparse_junctions", "lr_schedule", "warmup_steps", "nesterov")

# tells the augmentation's random stream apart from the others seeded with the run's seed
_AUGMENT_STREAM = 0xA06


@dataclass
class TrainResult:
    """``report``: JSON-ready dict (config, per-epoch figures); final params and velocities."""
    report: dict
    params: Dict[str, np.ndarray]
    velocities: Dict[str, np.ndarray]


def training_batch(dataset: Dataset, idx: np.ndarray, seed: int, global_step: int) -> np.ndarray:
    """x (len(idx), C, H, W) of training step ``global_step``: the samples ``idx``, augmented when the
    dataset augments, with draws from (seed, step) alone, so a resumed run augments its batches identically."""
    x = dataset.x_train[idx]
    if dataset.augment is not None:
        x = dataset.augment(x, np.random.default_rng([seed, global_step, _AUGMENT_STREAM]))
    return x


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Order of the n training samples in ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def evaluate(backend, model: Model, params, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Accuracy (fraction correct) of ``params`` on x (N, C, H, W), y (N,), in batches."""
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = backend.predict(model, params, x[start:start + batch_size])
        correct += int(np.count_nonzero(np.argmax(logits, axis=1) == y[start:start + batch_size]))
    return correct / len(x) if len(x) else 0.0


def _new_totals() -> dict:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "steps": 0, "seconds": 0.0, "layers": {}}


def _accumulate(totals: dict, result, y: np.ndarray) -> None:
    n = len(y)
    totals["loss_sum"] += result.loss * n
    totals["correct"] += int(np.count_nonzero(np.argmax(result.logits, axis=1) == y))
    totals["seen"] += n
    totals["steps"] += 1
    for info in result.layers:
        acc = totals["layers"].setdefault(str(info["index"]), {
            "name": info["name"], "kind": info["kind"], "input_zero_sum": 0.0, "grad_zero_sum": 0.0, "steps": 0,
            "macs": {}, "kernel": {}, "density": info.get("density", 1.0), "edges": info.get("edges")})
        acc["input_zero_sum"] += info["input_sparsity"]
        acc["grad_zero_sum"] += info["grad_sparsity"]
        if "pruned_grad_sparsity" in info:
            acc["pruned_grad_zero_sum"] = acc.get("pruned_grad_zero_sum", 0.0) + info["pruned_grad_sparsity"]
            acc["tau_sum"] = acc.get("tau_sum", 0.0) + float(info["prune"].get("tau", 0.0))
            into = acc["kernel"].setdefault("prune", {})
            for name, value in info["prune"].items():
                if name != "tau":
                    into[name] = into.get(name, 0) + int(value)
        acc["steps"] += 1
        for group in ("macs", "kernel"):
            for pass_name, counters in (info.get(group) or {}).items():
                into = acc[group].setdefault(pass_name, {})
                for name, value in counters.items():
                    into[name] = into.get(name, 0) + int(value)


def _accumulate_check(check: dict, report) -> None:
    if report is None:
        return
    check["batches_checked"] += 1
    check["max_abs_error"] = max(check["max_abs_error"], report.max_abs_error)
    if report.max_rel_error >= check["max_rel_error"]:
        check["max_rel_error"] = report.max_rel_error
        check["worst"] = report.worst.as_dict() if report.worst is not None else None


def _layer_report(index: str, acc: dict) -> dict:
    macs = {}
    for pass_name, c in acc["macs"].items():
        nonzero = c["macs_nonzero"]
        macs[pass_name] = dict(c, ideal_speedup=(c["macs_dense"] / nonzero) if nonzero else None)
    out = {"index": int(index), "name": acc["name"], "kind": acc["kind"], "density": acc.get("density", 1.0),
           "edges": acc.get("edges"),
           "input_sparsity": acc["input_zero_sum"] / acc["steps"],
           "grad_sparsity": acc["grad_zero_sum"] / acc["steps"],
           "macs": macs, "kernel": acc["kernel"],
           "saturations": sum(int(c.get("saturations", 0)) for c in acc["kernel"].values())}
    if "pruned_grad_zero_sum" in acc:
        out["pruned_grad_sparsity"] = acc["pruned_grad_zero_sum"] / acc["steps"]
        out["prune_tau"] = acc["tau_sum"] / acc["steps"]
    return out


def _warn_saturations(epoch_report: dict, max_saturations: int) -> None:
    """Warn, naming the layer, where an epoch's fixed-point saturations exceed ``max_saturations``."""
    for layer in epoch_report["layers"]:
        if layer["saturations"] > max_saturations:
            warnings.warn(f"{layer['name']}: {layer['saturations']} saturated fixed-point "
                          f"conversions in epoch {epoch_report['epoch']} (more than {max_saturations}); widen its "
                          f"integer bits (--precision)", RuntimeWarning, stacklevel=3)


def _check_compatible(model: Model, dataset: Dataset) -> None:
    for split, x in (("training", dataset.x_train), ("test", dataset.x_test)):
        if len(x) == 0:
            raise ValueError(f"data: dataset {dataset.name!r} has {len(dataset.x_train)} training and "
                             f"{len(dataset.x_test)} test samples; the {split} split needs at least one")
    if dataset.input_shape != tuple(model.input_shape):
        raise ValueError(f"data: dataset {dataset.name!r} has samples {'x'.join(map(str, dataset.input_shape))} "
                         f"but model {model.name!r} expects {'x'.join(map(str, model.input_shape))}")
    if dataset.num_classes > model.num_classes:
        raise ValueError(f"data: dataset {dataset.name!r} has {dataset.num_classes} classes but model "
                         f"{model.name!r} has {model.num_classes} outputs")


def _initial_params(model: Model, seed: int, init_params) -> Dict[str, np.ndarray]:
    if init_params is None:
        return model.init_params(seed)
    # the trained parameters are required; the buffers (BN running statistics) may come along or
    # start as init_params makes them
    expected, buffers = model.param_shapes(), model.buffer_shapes()
    if not set(expected) <= set(init_params) <= set(expected) | set(buffers):
        raise ValueError(f"init_params: has entries {sorted(init_params)}, model {model.name!r} needs {sorted(expected)}"
                         + (f" (and may have {sorted(buffers)})" if buffers else ""))
    defaults = model.init_params(seed) if set(buffers) - set(init_params) else {}
    out = {}
    for key, shape in {**expected, **buffers}.items():
        if key not in init_params:
            out[key] = defaults[key]
            continue
        value = np.asarray(init_params[key])
        if value.shape != shape:
            raise ValueError(f"init_params: {key} has shape {value.shape}, model {model.name!r} needs {shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"init_params: {key} contains non-finite values")
        out[key] = value.astype(np.float32)   # a copy: training never writes into the caller's arrays
    return out


def _check_resume(path, saved: dict, config: dict) -> None:
    """Refuse a checkpoint of another trajectory; warn (and record in the config) where only the backend differs."""
    for key in _TRAJECTORY_KEYS + ("precision",):
        if key in saved and key in config and saved[key] != config[key]:
            raise ValueError(f"checkpoint: {path} was written with {key}={saved[key]!r}, this run has "
                             f"{key}={config[key]!r}; resuming needs the same value")
    changed = {key: saved[key] for key in ("backend", "backend_opts")
               if key in saved and key in config and saved[key] != config[key]}
    if changed:
        config["resumed_from"] = changed
        warnings.warn(f"checkpoint: {path} was written with {changed}, this run has "
                      f"{ {k: config[k] for k in changed} }; the result will not be bit-identical to an "
                      f"uninterrupted run (recorded as config.resumed_from in the report)", RuntimeWarning,
                      stacklevel=3)


_NUMBER = (int, float)
#: the loop's running state as written by save(): key -> allowed types
_STATE_SCHEMA = {
    "totals": {"loss_sum": _NUMBER, "correct": int, "seen": int, "steps": int, "seconds": _NUMBER, "layers": dict},
    "check": {"batches_checked": int, "max_rel_error": _NUMBER, "max_abs_error": _NUMBER,
              "worst": (dict, type(None))},
}


def _check_state(path, ckpt, steps_per_epoch: int) -> None:
    """Refuse a checkpoint whose position or running totals this loop could not continue from."""
    def bad(what):
        return ValueError(f"checkpoint: cannot read {path}: {what}")
    if ckpt.step >= steps_per_epoch:
        raise bad(f"meta step {ckpt.step} must be below {steps_per_epoch} (the batches of an epoch)")
    history = ckpt.state.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise bad("state.history must be a list of epoch records")
    for part, schema in _STATE_SCHEMA.items():
        value = ckpt.state.get(part)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise bad(f"state.{part} must be a JSON object, got {type(value).__name__}")
        for key, types in schema.items():
            if key not in value or isinstance(value[key], bool) or not isinstance(value[key], types):
                raise bad(f"state.{part}.{key} is missing or has the wrong type ({value.get(key)!r})")
    totals = ckpt.state.get("totals")
    if totals is not None and (totals["steps"] != ckpt.step or totals["seen"] < 0 or totals["correct"] < 0):
        raise bad(f"state.totals counts {totals['steps']} steps but meta step is {ckpt.step}")


def _stop_on_nonfinite(stream, position, steps_per_epoch: int, lr: float):
    """``stream``'s items; a :class:`NonFinite` from a step becomes :class:`Diverged` naming that step."""
    items = iter(stream)
    while True:
        try:
            out = next(items)
        except StopIteration:
            return
        except NonFinite as e:
            epoch, step = position()
            raise Diverged(f"training diverged at step {epoch * steps_per_epoch + step + 1} (epoch {epoch + 1}, "
                           f"batch {step + 1} of {steps_per_epoch}): {e}; nothing of this step was kept (the last "
                           f"checkpoint holds finite values); lower the learning rate (lr={lr:g})") from None
        yield out


def train(backend, model: Model, dataset: Dataset, *, epochs: int, batch_size: int = 64, lr: float = 0.02,
          momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0, checkpoint=None,
          checkpoint_every: int = 0, resume: bool = False, max_steps: Optional[int] = None,
          quiet: bool = False, extra_config: Optional[dict] = None, check_every: int = 0,
          max_saturations: int = 1000, init_params: Optional[Dict[str, np.ndarray]] = None,
          lr_schedule: str = "constant", warmup_steps: int = 0, nesterov: bool = False) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``backend`` for ``epochs`` epochs.

    checkpoint: path of the .npz checkpoint, written at the end of every epoch
    and, with ``checkpoint_every`` = k > 0, every k steps. resume: continue
    from ``checkpoint`` when the file exists (start afresh when it does not).
    max_steps: stop after this many steps in this call (a time-boxed run; the
    checkpoint is written where it stops). quiet: no progress bar (there is
    none either when stderr is not a terminal).

    Returns a :class:`TrainResult`; its ``report`` holds ``config`` and, per
    completed epoch, ``train_loss``, ``train_acc``, ``test_accuracy``,
    ``seconds`` and per-layer ``density`` / ``edges`` (pre-defined sparsity:
    fan_in / inputs and stored weights), ``input_sparsity`` / ``grad_sparsity`` (mean
    fraction of zeros), reference ``macs`` per pass (summed over the epoch,
    with ``ideal_speedup`` = dense / nonzero) and the kernels' counters;
    ``check`` (``batches_checked``, ``max_rel_error``, ``max_abs_error``,
    ``worst``: the tensor with the largest relative error) and ``timings``
    (mean seconds per step of each stage, this call's steps). Per layer also
    ``saturations`` (fixed-point conversions of its descriptors that met their
    type's range limit, summed over its passes; a RuntimeWarning names every
    layer above ``max_saturations`` in an epoch) and, when the backend prunes
    gradients (its ``prune_rate``), ``pruned_grad_sparsity`` and the mean
    ``prune_tau``. Each batch carries its pruning seeds, a function of
    (seed, global step, layer), so a resumed run prunes identically.

    init_params: the starting weights (e.g. imported by ``zskip.models.interop``)
    instead of ``model.init_params(seed)``; a resumed checkpoint takes precedence.

    lr_schedule, warmup_steps: the learning rate of each step
    (``zskip.models.lr_schedule``: "constant", "cosine" or "linear" down to 0
    over ``epochs`` epochs, after a linear warm-up of ``warmup_steps`` steps);
    each epoch's entry records its first step's ``lr``. A resumed run with a
    schedule other than "constant" must keep ``epochs`` (the schedule spans them).

    nesterov: Nesterov momentum in the SGD updates (``reference.sgd_update``;
    on the accelerator the SGD kernel's ``FLAG_NESTEROV``); a resumed run must
    keep it.
    """
    for name, value, minimum in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                                 ("checkpoint_every", checkpoint_every, 0), ("seed", seed, 0),
                                 ("check_every", check_every, 0), ("max_saturations", max_saturations, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    check_schedule(lr_schedule, warmup_steps)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise ValueError(f"nesterov: must be True or False, got {nesterov!r}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps: must be >= 1 or None, got {max_steps!r}")
    if (resume or checkpoint_every) and checkpoint is None:
        raise ValueError("checkpoint: resume and checkpoint_every need a checkpoint path")
    _check_compatible(model, dataset)
    n_train = len(dataset.x_train)
    config = {"model": model.name, "data": dataset.name, "backend": getattr(backend, "name", type(backend).__name__),
              "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr), "momentum": float(momentum),
              "weight_decay": float(weight_decay), "seed": int(seed), "n_train": n_train,
              "n_test": len(dataset.x_test), "prune_rate": float(getattr(backend, "prune_rate", 0.0)),
              "lr_schedule": lr_schedule, "warmup_steps": int(warmup_steps), "nesterov": bool(nesterov)}
    # pre-defined sparse layers: two patterns of one shape differ only in their seed, which the
    # checkpoint's shapes cannot tell apart
    config["sparse_junctions"] = {name: [layer.density, layer.seed, layer.lanes]
                                  for name, layer in zip(model.layer_names(), model.flat_layers)
                                  if getattr(layer, "density", 1.0) < 1.0}
    config.update(extra_config or {})

    params, velocities = _initial_params(model, seed, init_params), model.zero_velocities()
    epoch, step, history, totals = 0, 0, [], _new_totals()
    check = {"batches_checked": 0, "max_rel_error": 0.0, "max_abs_error": 0.0, "worst": None}
    timings: dict = {}
    steps_per_epoch = -(-n_train // batch_size)
    total_steps = epochs * steps_per_epoch
    if warmup_steps >= total_steps and warmup_steps:
        raise ValueError(f"warmup_steps: must be below the run's {total_steps} steps, got {warmup_steps}")
    if checkpoint is not None and os.path.isdir(os.path.dirname(os.path.abspath(checkpoint))):
        remove_stale_partials(os.path.dirname(os.path.abspath(checkpoint)))   # of a run that was killed
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        ckpt = load_checkpoint(checkpoint, model)
        _check_resume(checkpoint, ckpt.config, config)
        if lr_schedule != "constant" and ckpt.config.get("epochs", epochs) != epochs:
            raise ValueError(f"checkpoint: {checkpoint} was written by a run of {ckpt.config['epochs']} epochs; "
                             f"its {lr_schedule} learning-rate schedule spans them, so resuming needs "
                             f"epochs={ckpt.config['epochs']} (this run has {epochs})")
        _check_state(checkpoint, ckpt, steps_per_epoch)
        params, velocities, epoch, step = ckpt.params, ckpt.velocities, ckpt.epoch, ckpt.step
        history = ckpt.state.get("history", [])
        totals = ckpt.state.get("totals") or _new_totals()
        check = ckpt.state.get("check") or check

    def save(at_epoch: int, at_step: int) -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint, Checkpoint(model.name, params, velocities, at_epoch, at_step, config,
                                                   {"history": history, "totals": totals, "check": check},
                                                   model_to_dict(model)))

    def report(**extra) -> dict:
        steps = timings.pop("steps", 0)
        out = {"config": config, "epochs": history, "check": dict(check),
               "timings": {k: v / steps for k, v in timings.items()} if steps else {}, **extra}
        timings["steps"] = steps
        return out

    show = not quiet and sys.stderr.isatty()
    done_here = 0
    while epoch < epochs:
        if max_steps is not None and done_here >= max_steps:
            save(epoch, step)
            return TrainResult(report(stopped_at={"epoch": epoch, "step": step}), params, velocities)
        perm = epoch_permutation(seed, epoch, n_train)
        bar = tqdm(total=steps_per_epoch, initial=step, desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not show, leave=True)

        def batches(first_step: int, epoch: int = epoch, perm: np.ndarray = perm):
            for s in range(first_step, steps_per_epoch):
                idx = perm[s * batch_size:(s + 1) * batch_size]
                global_step = epoch * steps_per_epoch + s
                checked = bool(check_every) and global_step % check_every == 0
                x = training_batch(dataset, idx, seed, global_step)
                yield Batch(x, dataset.y_train[idx], check=checked,
                            prune_seeds=prune_seeds(seed, global_step, len(model.flat_layers)),
                            lr=lr_at(lr_schedule, lr, global_step, total_steps, warmup_steps))

        # nesterov passed only when used, so a backend written before it keeps working
        stream = backend.stream(model, params, velocities, batches(step), lr=lr, momentum=momentum,
                                weight_decay=weight_decay, **({"nesterov": True} if nesterov else {}))
        try:
            t0 = time.perf_counter()
            for out in _stop_on_nonfinite(stream, lambda: (epoch, step), steps_per_epoch, lr):
                result = out.result
                totals["seconds"] += time.perf_counter() - t0
                y = dataset.y_train[perm[step * batch_size:(step + 1) * batch_size]]
                params, velocities = result.params, result.velocities
                _accumulate(totals, result, y)
                _accumulate_check(check, out.check)
                for stage, seconds in out.timings.items():
                    timings[stage] = timings.get(stage, 0.0) + seconds
                timings["steps"] = timings.get("steps", 0) + 1
                step += 1
                done_here += 1
                if show:
                    zeros = np.mean([l["input_sparsity"] for l in result.layers]) if result.layers else 0.0
                    bar.set_postfix(loss=f"{totals['loss_sum'] / totals['seen']:.4f}",
                                    acc=f"{totals['correct'] / totals['seen']:.3f}", zeros=f"{zeros:.2f}")
                bar.update(1)
                if checkpoint_every and step % checkpoint_every == 0 and step < steps_per_epoch:
                    save(epoch, step)
                if max_steps is not None and done_here >= max_steps and step < steps_per_epoch:
                    bar.close()
                    save(epoch, step)
                    return TrainResult(report(stopped_at={"epoch": epoch, "step": step}), params, velocities)
                t0 = time.perf_counter()
        finally:
            stream.close()
        bar.close()
        test_accuracy = evaluate(backend, model, params, dataset.x_test, dataset.y_test)
        history.append({
            "epoch": epoch + 1,
            "train_loss": totals["loss_sum"] / totals["seen"],
            "train_acc": totals["correct"] / totals["seen"],
            "test_accuracy": test_accuracy,
            "seconds": totals["seconds"],
            "lr": lr_at(lr_schedule, lr, epoch * steps_per_epoch, total_steps, warmup_steps),
            "layers": [_layer_report(k, v) for k, v in sorted(totals["layers"].items(), key=lambda kv: int(kv[0]))],
        })
        _warn_saturations(history[-1], max_saturations)
        if not quiet:
            h = history[-1]
            print(f"epoch {h['epoch']}/{epochs}: train_loss {h['train_loss']:.4f} train_acc {h['train_acc']:.4f} "
                  f"test_accuracy {h['test_accuracy']:.4f} ({h['seconds']:.1f} s)", file=sys.stderr)
        epoch, step, totals = epoch + 1, 0, _new_totals()
        save(epoch, step)
    return TrainResult(report(), params, velocities)

