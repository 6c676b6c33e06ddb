"""Performance figures measured side by side in one run (``zskip bench``).

1. Train the model to a stated point (default: one epoch on ``emu``) so the
   sparsity is that of real training.
2. Run the same batches through the emulated accelerator in sparse and dense
   mode (``Accelerator.emulated(skip_zeros=True/False)``, same weights) and
   report per layer and pass the reference MAC accounting and the kernels'
   own cycle counters (:func:`compare_modes`).
3. Estimate each board's time per mini-batch from those counters at the
   board's PE lanes and clock and from the DDR bytes the ops move
   (:func:`board_estimates`).
4. Time one training step on the emulator (float32, fixed point), the numpy
   reference and PyTorch (:mod:`zskip.host.bench.speed`).

Every figure is computed from counters or timings of this run; the
project's performance goals (:data:`GOALS`) are compared with them in :func:`goals`.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ...models import step as _step
from ...models.networks import BatchNorm, Conv, Linear, Model
from .perf_model import PASSES

__all__ = ["RecordingOps", "op_bytes", "measure_steps", "compare_modes", "board_estimates", "goals",
           "GOALS", "COUNTERS", "SARMA", "PUBLISHED_GOPS", "sarma_comparison", "pass_table_lines",
           "layer_table_lines"]

#: the kernels' counters a bench report keeps per pass (accelerator.last_stats)
COUNTERS = ("cycles", "macs_executed", "macs_dense", "mac_iters", "mac_stalls", "enc_iters", "scan_iters")

#: the performance goals: name -> (target, "min" = at least / "max" = at most). The utilisation
#: goals hold against honest counters (ideal / measured cycles) and a strong baseline (the
#: dense mode's own array utilisation); speedup_bwd and the accuracy drop are goals of a run
#: with --prune-rate (Sarma et al.'s best back-prop figure, 5.4x, within 1 point of accuracy);
#: the emulator-speed goals compare the C simulation with PyTorch's CPU kernels.
GOALS = {"utilization_step": (0.85, "min"), "dense_array_utilization_step": (0.85, "min"),
         "speedup_bwd": (5.4, "min"), "prune_accuracy_drop": (0.01, "max"),
         "emu_float32_over_torch_cpu": (1.0, "max"), "emu_fixed_over_torch_cpu": (8.0, "max")}
#: goals measured only when pruning is on
PRUNE_GOALS = ("speedup_bwd", "prune_accuracy_drop")


def _tensor_bytes(a) -> int:
    """Device-memory bytes of one op operand: bool masks are packed 1 bit per element in 32-bit
    words, everything else is one 32-bit word per element (float32, int32, uint32 labels)."""
    a = np.asarray(a)
    if a.dtype == bool:
        return 4 * math.ceil(a.size / 32)
    return 4 * a.size


def op_bytes(args: Sequence, kwargs: dict, result) -> int:
    """DDR bytes one op moves: every array it reads plus every array it writes.

    The kernels read each operand tensor once (compaction happens on chip) and
    write each result once, in the dense layout of device memory, so the count
    is the same in sparse and dense mode; masks (1 bit per element) are
    included where an op reads or writes them.
    """
    total = 0
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, np.ndarray):
            total += _tensor_bytes(a)
    outputs = result if isinstance(result, tuple) else (result,)
    for out in outputs:
        if isinstance(out, np.ndarray):
            total += _tensor_bytes(out)
        elif isinstance(out, float):
            total += 4  # the loss word
    return total


class RecordingOps:
    """Forwards every Ops call to an accelerator and records ``{op, stats, bytes}`` per call."""

    def __init__(self, acc):
        self.acc = acc
        self.records: List[dict] = []

    @property
    def last_stats(self):
        return self.acc.last_stats

    def __getattr__(self, name):
        op = getattr(self.acc, name)
        if not callable(op):
            return op

        def call(*args, **kwargs):
            out = op(*args, **kwargs)
            stats = {k: int(self.acc.last_stats.get(k, 0)) for k in COUNTERS}
            self.records.append({"op": name, "stats": stats, "bytes": op_bytes(args, kwargs, out)})
            return out
        return call


def measure_steps(acc, model: Model, params, velocities, batches, lr=0.02, momentum=0.9,
                  weight_decay=0.0, prune_rate: float = 0.0, seed: int = 0) -> dict:
    """Run one training step per (x (N, C, H, W), y (N,)) batch from the same params.

    Every batch starts from ``params`` (the figures describe the trained
    point, not a trajectory). Returns ``{"layers": [StepResult.layers per
    batch], "records": [RecordingOps records per batch], "pe_lanes"}``.
    """
    ops = RecordingOps(acc)
    layers, records = [], []
    for i, (x, y) in enumerate(batches):
        ops.records = []
        prune = {} if not prune_rate else {"prune_rate": prune_rate,
                                           "prune_seeds": _step.prune_seeds(seed, i, len(model.flat_layers))}
        result = _step.train_step(ops, model, params, velocities, x, y, lr, momentum, weight_decay, account=True,
                                  **prune)
        layers.append(result.layers)
        records.append(ops.records)
    return {"layers": layers, "records": records, "pe_lanes": int(acc.limits.pe_lanes)}


def _ratio(a: float, b: float) -> Optional[float]:
    return float(a) / float(b) if b else None


def compare_modes(model: Model, sparse: dict, dense: dict) -> dict:
    """Per layer and pass, and totals, from :func:`measure_steps` in sparse and dense mode.

    Rows: ``layer`` (index), ``name`` (conv1, fc1, ...), ``kind``, ``pass``, ``macs_dense``, ``macs_nonzero``
    (reference accounting), ``macs_executed`` (sparse kernel counter),
    ``cycles_dense``, ``cycles_sparse`` (kernel counters), ``speedup`` =
    cycles_dense / cycles_sparse, ``ideal_speedup`` = macs_dense /
    macs_nonzero, ``utilization`` = (macs_nonzero / pe_lanes) / cycles_sparse.
    Summed over the batches.
    """
    if sparse["pe_lanes"] != dense["pe_lanes"]:
        raise ValueError(f"sparse and dense runs have {sparse['pe_lanes']} and {dense['pe_lanes']} PE lanes")
    lanes = sparse["pe_lanes"]
    rows: Dict[tuple, dict] = {}
    for batch_s, batch_d in zip(sparse["layers"], dense["layers"]):
        for info_s, info_d in zip(batch_s, batch_d):
            for pass_name in PASSES:
                if pass_name not in info_s["kernel"]:
                    continue
                key = (info_s["index"], pass_name)
                row = rows.setdefault(key, {"layer": info_s["index"], "name": info_s["name"], "kind": info_s["kind"], "pass": pass_name,
                                            "macs_dense": 0, "macs_nonzero": 0, "macs_executed": 0,
                                            "macs_skipped_input": 0, "macs_skipped_output": 0,
                                            "cycles_dense": 0, "cycles_sparse": 0, "mac_stalls_sparse": 0,
                                            "input_sparsity": [], "grad_sparsity": []})
                for k in ("macs_dense", "macs_nonzero", "macs_skipped_input", "macs_skipped_output"):
                    row[k] += info_s["macs"][pass_name][k]
                row["macs_executed"] += info_s["kernel"][pass_name]["macs_executed"]
                row["cycles_sparse"] += info_s["kernel"][pass_name]["cycles"]
                row["mac_stalls_sparse"] += info_s["kernel"][pass_name].get("mac_stalls", 0)
                row["cycles_dense"] += info_d["kernel"][pass_name]["cycles"]
                row["input_sparsity"].append(info_s["input_sparsity"])
                row["grad_sparsity"].append(info_s["grad_sparsity"])
    table = []
    for key in sorted(rows, key=lambda k: (k[0], PASSES.index(k[1]))):
        row = rows[key]
        row["input_sparsity"] = float(np.mean(row["input_sparsity"]))
        row["grad_sparsity"] = float(np.mean(row["grad_sparsity"]))
        row["speedup"] = _ratio(row["cycles_dense"], row["cycles_sparse"])
        row["ideal_speedup"] = _ratio(row["macs_dense"], row["macs_nonzero"])
        row.update(_skip_shares(row))
        row["utilization"] = _ratio(row["macs_nonzero"] / lanes, row["cycles_sparse"])
        table.append(row)

    def total(passes: Iterable[str]) -> dict:
        sel = [r for r in table if r["pass"] in passes]
        s = {k: sum(r[k] for r in sel) for k in ("macs_dense", "macs_nonzero", "macs_skipped_input",
                                                 "macs_skipped_output", "cycles_dense", "cycles_sparse")}
        return {"speedup": _ratio(s["cycles_dense"], s["cycles_sparse"]),
                "ideal_speedup": _ratio(s["macs_dense"], s["macs_nonzero"]),
                "utilization": _ratio(s["macs_nonzero"] / lanes, s["cycles_sparse"]), **s, **_skip_shares(s)}

    fwd, bwd, step = total(["fwd"]), total(["bwd_data", "bwd_weight"]), total(PASSES)
    # per pass, and back-prop / fwd + bwd, over every conv and FC layer (the README's table)
    by_pass = {name: total([name]) for name in PASSES}
    by_pass["bwd"], by_pass["step"] = bwd, step
    all_s = sum(r["stats"]["cycles"] for batch in sparse["records"] for r in batch)
    all_d = sum(r["stats"]["cycles"] for batch in dense["records"] for r in batch)
    totals = {"speedup_fwd": fwd["speedup"], "speedup_bwd": bwd["speedup"], "speedup_step": step["speedup"],
              "ideal_speedup_fwd": fwd["ideal_speedup"], "ideal_speedup_bwd": bwd["ideal_speedup"],
              "ideal_speedup_step": step["ideal_speedup"], "utilization_fwd": fwd["utilization"],
              "utilization_bwd": bwd["utilization"], "utilization_step": step["utilization"],
              # the dense mode's own array utilisation: how busy its lanes are (a strong baseline)
              "dense_array_utilization_step": _ratio(step["macs_dense"], step["cycles_dense"] * lanes),
              "cycles_dense_step": step["cycles_dense"], "cycles_sparse_step": step["cycles_sparse"],
              "macs_dense_step": step["macs_dense"], "macs_nonzero_step": step["macs_nonzero"],
              # every kernel of the step: + pooling, loss and SGD, which have nothing to skip
              "cycles_dense_all_kernels": all_d, "cycles_sparse_all_kernels": all_s,
              "speedup_all_kernels": _ratio(all_d, all_s)}
    return {"pe_lanes": lanes, "batches": len(sparse["layers"]), "layers": table, "totals": totals,
            "passes": by_pass, "cycles_by_op": {"sparse": _cycles_by_op(sparse["records"]),
                                                "dense": _cycles_by_op(dense["records"])}}


def _skip_shares(counts: dict) -> dict:
    """Shares of the dense MACs that input-type and output-type skipping remove, and the ideal speedup of
    each kind alone (``reference.conv_macs``: a MAC whose output is masked counts as output-type skipped
    even when an operand is zero too)."""
    dense = counts["macs_dense"]
    s_in, s_out = counts["macs_skipped_input"], counts["macs_skipped_output"]
    return {"skipped_input_share": _ratio(s_in, dense), "skipped_output_share": _ratio(s_out, dense),
            "ideal_speedup_input_only": _ratio(dense, dense - s_in),
            "ideal_speedup_output_only": _ratio(dense, dense - s_out)}


def _cycles_by_op(records: List[List[dict]]) -> Dict[str, int]:
    """Kernel cycles per op name, summed over the batches (every kernel of the step, from its counters)."""
    out: Dict[str, int] = {}
    for batch in records:
        for r in batch:
            out[r["op"]] = out.get(r["op"], 0) + r["stats"]["cycles"]
    return out


#: Sarma et al. (2021): speedups of activation-based gradient output sparsity over a dense
#: (sparsity-agnostic) accelerator on five ImageNet CNNs with batch normalisation
SARMA = {"bwd": (1.69, 5.43), "step": (1.68, 3.30)}
#: published FPGA training systems on ResNet-20 / CIFAR-10, as issue 15 quotes them (their boards,
#: arithmetic and accounting differ from this design's; listed beside, not compared one to one)
PUBLISHED_GOPS = ({"system": "BOOST", "gops": 131.0, "precision": "as published"},
                  {"system": "ETA", "gops": 659.0, "precision": "8 bit"})


def sarma_comparison(comparison: dict) -> List[dict]:
    """Our back-prop and fwd + bwd speedups (ideal from the reference accounting, measured from the kernel
    counters, MAC passes and every kernel of the step) beside Sarma et al.'s ranges."""
    p, t = comparison["passes"], comparison["totals"]
    return [{"figure": "back-prop (bwd-data + bwd-weight)", "ideal": p["bwd"]["ideal_speedup"],
             "measured": p["bwd"]["speedup"], "measured_all_kernels": None, "sarma": SARMA["bwd"]},
            {"figure": "fwd + bwd", "ideal": p["step"]["ideal_speedup"], "measured": p["step"]["speedup"],
             "measured_all_kernels": t["speedup_all_kernels"], "sarma": SARMA["step"]}]


def _model_fits(model: Model, board) -> List[str]:
    """Layers of ``model`` that exceed ``board``'s compiled maxima (empty when it fits)."""
    problems = []
    for name, layer, (src, out) in zip(model.layer_names(), model.flat_layers, model.shapes()):
        if isinstance(layer, Conv):
            if max(src[0], layer.out) > board.max_ch or max(src[1:]) > board.max_dim or layer.kernel > board.max_ksize:
                problems.append(f"{name}: {src[0]}->{layer.out} ch, {src[1]}x{src[2]}, k{layer.kernel} "
                                f"(max_ch {board.max_ch}, max_dim {board.max_dim}, max_ksize {board.max_ksize})")
        elif isinstance(layer, Linear):
            if max(src[0], layer.out) > board.max_features:
                problems.append(f"{name}: {src[0]}->{layer.out} (max_features {board.max_features})")
    return problems


def _batch_seconds(records: List[dict], board) -> dict:
    """Per op, whichever bounds: kernel cycles at the board clock or bytes at peak DDR bandwidth."""
    hz, bps = board.clock_mhz * 1e6, board.ddr_gbps * 1e9
    compute = sum(r["stats"]["cycles"] for r in records) / hz
    transfer = sum(r["bytes"] for r in records) / bps
    bound = sum(max(r["stats"]["cycles"] / hz, r["bytes"] / bps) for r in records)
    ddr_bound_ops = sum(1 for r in records if r["bytes"] / bps > r["stats"]["cycles"] / hz)
    return {"seconds": bound, "compute_s": compute, "ddr_s": transfer,
            "bytes": int(sum(r["bytes"] for r in records)), "cycles": int(sum(r["stats"]["cycles"] for r in records)),
            "ddr_bound_ops": ddr_bound_ops, "ops": len(records)}


def board_estimates(model: Model, boards, runs: Dict[int, Dict[str, dict]], batch_size: int) -> List[dict]:
    """Time per mini-batch and images/s on every board, dense and sparse.

    runs: ``{pe_lanes: {"sparse": measure_steps(...), "dense": ...}}`` holding
    each board's PE lanes. Per op the estimate takes whichever bounds, the
    kernel's cycles at the board clock or its DDR bytes at the board's peak
    bandwidth, and sums over the ops of a step (averaged over the batches).
    Images per joule are given only for a board whose data cites its power;
    boards.ini cites none, so they are None with a note.
    """
    out = []
    for b in boards:
        if b.pe_lanes not in runs:
            raise ValueError(f"board {b.name}: no measurement at its {b.pe_lanes} PE lanes (have {sorted(runs)})")
        entry = {"board": b.name, "clock_mhz": b.clock_mhz, "pe_lanes": b.pe_lanes, "ddr_gbps": b.ddr_gbps,
                 "exceeds_compiled_maxima": _model_fits(model, b)}
        entry["board_precision"] = b.precision
        for mode in ("dense", "sparse"):
            run = runs[b.pe_lanes][mode]
            per_batch = [_batch_seconds(rec, b) for rec in run["records"]]
            avg = {k: float(np.mean([p[k] for p in per_batch])) for k in per_batch[0]}
            avg["images_per_s"] = batch_size / avg["seconds"]
            avg["images_per_joule"] = None
            # 2 ops per MAC of the conv / FC passes: the dense step's (what a dense accelerator would do:
            # effective GOPS) and the ones the kernels executed
            macs = [sum(info["macs"][p]["macs_dense"] for info in layers for p in info["macs"]) for layers in run["layers"]]
            done = [sum(info["kernel"][p]["macs_executed"] for info in layers for p in info["kernel"] if p in info["macs"])
                    for layers in run["layers"]]
            avg["gops_effective"] = 2.0 * float(np.mean(macs)) / avg["seconds"] / 1e9
            avg["gops_executed"] = 2.0 * float(np.mean(done)) / avg["seconds"] / 1e9
            entry[mode] = avg
        entry["speedup"] = entry["dense"]["seconds"] / entry["sparse"]["seconds"]
        entry["power_note"] = "boards.ini cites no power source, so no images per joule"
        out.append(entry)
    return out


def goals(totals: dict, speed: Optional[dict]) -> Dict[str, dict]:
    """The performance goals against this run: ``{name: {target, measured, met, shortfall}}``.

    shortfall: how far the measured value is from the target in the target's
    direction (0 when met, None when not measured, e.g. without torch).
    """
    measured = {"utilization_step": totals.get("utilization_step"),
                "dense_array_utilization_step": totals.get("dense_array_utilization_step"),
                "speedup_bwd": totals.get("speedup_bwd") if totals.get("prune_rate") else None,
                "prune_accuracy_drop": totals.get("prune_accuracy_drop") if totals.get("prune_rate") else None,
                "emu_float32_over_torch_cpu": None, "emu_fixed_over_torch_cpu": None}
    if speed and speed.get("ratios"):
        measured["emu_float32_over_torch_cpu"] = speed["ratios"].get("emu_float32_over_torch_cpu")
        measured["emu_fixed_over_torch_cpu"] = speed["ratios"].get("emu_fixed_over_torch_cpu")
    result = {}
    for name, (target, sense) in GOALS.items():
        value = measured[name]
        if value is None:
            result[name] = {"target": target, "sense": sense, "measured": None, "met": None, "shortfall": None}
            continue
        met = value >= target if sense == "min" else value <= target
        short = 0.0 if met else (target - value if sense == "min" else value - target)
        result[name] = {"target": target, "sense": sense, "measured": value, "met": bool(met), "shortfall": short}
    return result


def _pass_shape(model: Model, index: int, batch: int, has_mask: bool, pruned: bool = False):
    from .perf_model import ConvPass
    layer, (src, _) = model.flat_layers[index], model.shapes()[index]
    if isinstance(layer, Conv):
        # the host's "auto" rule: backward-data runs the gather form where dy is a batch normalisation's dx
        # (the layer's next one is a BatchNorm and no pruning rewrites dy) and there is an output mask
        following = model.flat_layers[index + 1] if index + 1 < len(model.flat_layers) else None
        gather = has_mask and not pruned and isinstance(following, BatchNorm)
        return ConvPass(batch, src[0], src[1], src[2], layer.out, layer.kernel, layer.kernel, layer.stride,
                        layer.pad, has_mask=has_mask, gather=gather)
    return ConvPass.linear(batch, src[0], layer.out, has_mask=has_mask)


def perf_model_workload(model: Model, comparison: dict, batch: int, dense: bool = False) -> List[dict]:
    """The per-pass inputs of :func:`zskip.host.bench.perf_model.predict_cycles` for one batch, from a comparison.

    Nonzero operand counts come from the measured sparsities (x for the
    forward pass, dy for the backward passes); ``dense`` gives every element.
    """
    n_batches = comparison["batches"]
    work = []
    first = min(r["layer"] for r in comparison["layers"])
    for row in comparison["layers"]:
        i = row["layer"]
        (src, out) = model.shapes()[i]
        shape = _pass_shape(model, i, batch, has_mask=i > first,
                            pruned=bool(comparison["totals"].get("prune_rate")))
        elems = batch * int(np.prod(src if row["pass"] == "fwd" else out))
        zeros = row["input_sparsity"] if row["pass"] == "fwd" else row["grad_sparsity"]
        work.append({"layer": i, "pass": row["pass"], "shape": shape,
                     "scanned_nonzero": elems if dense else elems * (1.0 - zeros),
                     "macs_nonzero": (row["macs_dense"] if dense else row["macs_nonzero"]) / n_batches,
                     "macs_dense": row["macs_dense"] / n_batches})
    return work


def run_bench(model_name: str = "lenet5", data: str = "mnist5k", epochs: int = 1, batch_size: int = 64,
              batches: int = 4, lr: float = 0.02, momentum: float = 0.9, seed: int = 0,
              limit_train: Optional[int] = None, boards: Optional[Sequence[str]] = None, speed: bool = True,
              repeat: int = 5, vgg_batch: int = 16, layer_batch: int = 1, log=None, precision: str = "float32",
              prune_rate: float = 0.0) -> dict:
    """The whole benchmark; returns the report written as bench.json (see the module docstring).

    precision: the datapath of training and of the measured kernels (a spec of
    :mod:`zskip.host.precision`); prune_rate: gradient pruning in training and
    in the measured steps (0 = off; with pruning, an unpruned run of the same
    training gives the accuracy the pruned one is compared with);
    epochs: training before measuring (0 measures the initial weights);
    batches: mini-batches measured in both modes; boards: names from
    boards.ini (default all); speed: also time the emulator against the
    reference and PyTorch (``repeat`` runs each).
    """
    import time as _time

    from ...models.datasets import load_dataset
    from ...models.networks import get_model
    from ...models.train import epoch_permutation, train
    from ...overlay.boards import load_boards
    from . import speed as speed_timing   # not `speed`: that name is the parameter saying whether to time
    from ..runtime.accelerator import Accelerator
    from ..backends import make_backend
    from .perf_model import choose_pe_lanes, predict_cycles
    from ..ip.program import Limits

    from ..ip.precision import parse_precision
    parse_precision(precision)
    if isinstance(prune_rate, bool) or not isinstance(prune_rate, (int, float)) or not 0.0 <= prune_rate < 1.0:
        raise ValueError(f"prune_rate: must be a number in [0, 1), got {prune_rate!r}")
    for name, value, lo in (("epochs", epochs, 0), ("batch_size", batch_size, 1), ("batches", batches, 1),
                            ("repeat", repeat, 1), ("vgg_batch", vgg_batch, 1), ("layer_batch", layer_batch, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"{name}: must be an integer >= {lo}, got {value!r}")
    say = log or (lambda msg: None)
    dataset = load_dataset(data, seed=seed)
    model = get_model(model_name, input_shape=dataset.input_shape)      # the ResNets adapt to the data
    if limit_train is not None:
        dataset = dataset.subset(limit_train, None)
    n_train = len(dataset.x_train)
    if batches * batch_size > n_train:
        raise ValueError(f"batches: {batches} batches of {batch_size} need {batches * batch_size} training "
                         f"samples, {data} has {n_train}")
    all_boards = load_boards()
    names = list(all_boards) if boards is None else list(boards)
    unknown = [b for b in names if b not in all_boards]
    if unknown:
        raise ValueError(f"boards: unknown {unknown}; known: {', '.join(all_boards)}")
    chosen = [all_boards[b] for b in names]

    params, velocities = model.init_params(seed), model.zero_velocities()
    training = {"epochs": epochs, "backend": "emu", "precision": precision, "prune_rate": prune_rate,
                "test_accuracy": None, "unpruned_test_accuracy": None, "seconds": 0.0}

    def _train(rate):
        backend = make_backend("emu", account=False, precision=precision, prune_rate=rate)
        try:
            return train(backend, model, dataset, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                         seed=seed, quiet=True)
        finally:
            backend.close()
    if epochs:
        say(f"training {model.name} on {data} for {epochs} epoch(s) on emu ({precision}, prune rate {prune_rate})")
        t0 = _time.perf_counter()
        result = _train(prune_rate)
        params, velocities = result.params, result.velocities
        training.update(seconds=_time.perf_counter() - t0, test_accuracy=result.report["epochs"][-1]["test_accuracy"])
        if prune_rate:
            say(f"training the unpruned comparison run")
            training["unpruned_test_accuracy"] = _train(0.0).report["epochs"][-1]["test_accuracy"]
    perm = epoch_permutation(seed, epochs, n_train)
    picked = [perm[i * batch_size:(i + 1) * batch_size] for i in range(batches)]
    measured = [(dataset.x_train[idx], dataset.y_train[idx]) for idx in picked]

    defaults = Limits.defaults()
    runs: Dict[int, Dict[str, dict]] = {}
    for lanes in sorted({defaults.pe_lanes} | {b.pe_lanes for b in chosen}):
        limits = replace(defaults, pe_lanes=lanes)
        runs[lanes] = {}
        for mode, skip in (("sparse", True), ("dense", False)):
            say(f"measuring {batches} batch(es), {mode} mode, {lanes} PE lanes")
            acc = Accelerator.emulated(precision=precision, skip_zeros=skip, limits=limits)
            runs[lanes][mode] = measure_steps(acc, model, params, velocities, measured, lr, momentum,
                                              prune_rate=prune_rate if skip else 0.0, seed=seed)
    comparison = compare_modes(model, runs[defaults.pe_lanes]["sparse"], runs[defaults.pe_lanes]["dense"])
    comparison["totals"]["prune_rate"] = prune_rate
    if prune_rate and training["unpruned_test_accuracy"] is not None:
        comparison["totals"]["prune_accuracy_drop"] = training["unpruned_test_accuracy"] - training["test_accuracy"]
    for mode, dense in (("sparse", False), ("dense", True)):
        for row, w in zip(comparison["layers"], perf_model_workload(model, comparison, batch_size, dense=dense)):
            row[f"model_cycles_{mode}"] = predict_cycles(w["pass"], w["shape"], w["scanned_nonzero"],
                                                         w["macs_nonzero"], w["macs_dense"],
                                                         comparison["pe_lanes"]) * comparison["batches"]
    workload = perf_model_workload(model, comparison, batch_size)
    sizing = [choose_pe_lanes(b, precision, workload=workload) for b in chosen for precision in ("float32", "fixed16")]

    report = {"config": {"model": model.name, "data": data, "batch_size": batch_size, "batches": batches,
                         "lr": lr, "momentum": momentum, "seed": seed, "n_train": n_train, "precision": precision,
                         "prune_rate": prune_rate},
              "training": training, "pe_lanes": comparison["pe_lanes"], "layers": comparison["layers"],
              "totals": comparison["totals"], "passes": comparison["passes"],
              "cycles_by_op": comparison["cycles_by_op"], "sarma": sarma_comparison(comparison),
              "published": list(PUBLISHED_GOPS),
              "boards": board_estimates(model, chosen, runs, batch_size), "pe_sizing": sizing,
              "notes": ["DDR bytes are derived from the tensors each op's descriptor names (the kernels read "
                        "each operand once in the dense device-memory layout and compact it on chip), so "
                        "sparse and dense mode move the same bytes; masks count 1 bit per element",
                        "board estimates use the counters measured at the board's PE lanes with the default "
                        "compiled maxima (config.h); 'exceeds_compiled_maxima' lists the layers a board's "
                        "own maxima (boards.ini) cannot hold without tiling"]}
    speed_report = None
    if speed and not speed_timing.torch_mirrors(model):
        report["notes"].append(f"speed timings skipped: the PyTorch mirror of the speed comparison has no batch "
                               f"normalisation or residual blocks ({model.name})")
        speed = False
    if speed:
        step_x, step_y = measured[0]
        accs = {"emu_float32": Accelerator.emulated("float32"), "emu_fixed": Accelerator.emulated("ap_fixed<16,6>")}
        say(f"timing one {model.name} step, batch {len(step_x)}")
        speed_report = {model.name: speed_timing.step_speed(model, params, velocities, step_x, step_y, accs, repeat,
                                                           lr, momentum)}
        vgg = get_model("vgg_tiny")
        syn = load_dataset("synthetic:3x32x32", seed=seed)
        say(f"timing one vgg_tiny step on synthetic data, batch {vgg_batch}")
        # vgg_tiny's first linear layer has 2048 inputs, above config.h's default max_features
        widest = max(max(src[0], l.out) for l, (src, _) in zip(vgg.layers, vgg.shapes()) if isinstance(l, Linear))
        vgg_limits = replace(defaults, max_features=max(defaults.max_features, widest))
        vgg_accs = {"emu_float32": Accelerator.emulated("float32", limits=vgg_limits),
                    "emu_fixed": Accelerator.emulated("ap_fixed<16,6>", limits=vgg_limits)}
        vgg_report = speed_timing.step_speed(vgg, vgg.init_params(seed), vgg.zero_velocities(),
                                            syn.x_train[:vgg_batch], syn.y_train[:vgg_batch], vgg_accs,
                                            max(1, repeat // 2), lr, momentum)
        vgg_report["notes"].append(f"vgg_tiny at its initial weights (untrained); emulator compiled with "
                                   f"max_features {vgg_limits.max_features}")
        speed_report["vgg_tiny"] = vgg_report
        say(f"timing {speed_timing.VGG16_LAYER['name']}, batch {layer_batch}")
        speed_report["vgg16_layer"] = speed_timing.layer_speed(speed_timing.vgg16_layer_data(layer_batch, seed), accs,
                                                              max(1, repeat // 2))
        report["speed"] = speed_report
    report["goals"] = goals(report["totals"], speed_report[model.name] if speed_report else None)
    return report


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:5.1f} %"


def _x(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:5.2f}x"


def pass_table_lines(report: dict) -> List[str]:
    """Per pass (all conv and FC layers together): shares of the dense MACs skipped by input-type and by
    output-type skipping, ideal and measured speedups; then the comparison with Sarma et al."""
    lines = ["pass        MACs dense   skipped input  skipped output  ideal  measured (kernel cycles)"]
    names = {"fwd": "fwd", "bwd_data": "bwd-data", "bwd_weight": "bwd-weight", "bwd": "back-prop", "step": "fwd+bwd"}
    for key, label in names.items():
        p = report["passes"][key]
        lines.append(f"{label:<10} {p['macs_dense']:12d}   {_pct(p['skipped_input_share']):>13}  "
                     f"{_pct(p['skipped_output_share']):>14}  {_x(p['ideal_speedup'])}  {_x(p['speedup'])}")
    for row in report["sarma"]:
        lo, hi = row["sarma"]
        extra = "" if row["measured_all_kernels"] is None else \
            f", every kernel of the step {_x(row['measured_all_kernels'])}"
        lines.append(f"{row['figure']}: ideal {_x(row['ideal'])}, measured {_x(row['measured'])}{extra}; "
                     f"Sarma et al. {lo:.2f}-{hi:.2f}x")
    return lines


def layer_table_lines(report: dict) -> List[str]:
    """Per layer and pass: dense MACs, skip shares by type, ideal and measured speedups."""
    lines = ["layer      pass        MACs dense   skipped input  skipped output  ideal  measured"]
    for r in report["layers"]:
        lines.append(f"{r['name']:<10} {r['pass']:<10} {r['macs_dense']:11d}   {_pct(r['skipped_input_share']):>13}  "
                     f"{_pct(r['skipped_output_share']):>14}  {_x(r['ideal_speedup'])}  {_x(r['speedup'])}")
    return lines


def summary_lines(report: dict) -> List[str]:
    """The report's headline figures as printable lines (what ``zskip bench`` prints)."""
    t = report["totals"]
    tr = report["training"]
    acc = "" if tr["test_accuracy"] is None else f", test accuracy {tr['test_accuracy']:.4f}"
    lines = [f"{report['config']['model']} on {report['config']['data']} after {tr['epochs']} epoch(s){acc}; "
             f"{report['config']['batches']} batch(es) of {report['config']['batch_size']}, {report['pe_lanes']} PE lanes",
             f"speedup fwd {t['speedup_fwd']:.2f}x  bwd {t['speedup_bwd']:.2f}x  step {t['speedup_step']:.2f}x  "
             f"(ideal step {t['ideal_speedup_step']:.2f}x), utilization step {t['utilization_step']:.3f}, "
             f"dense array utilization step {t['dense_array_utilization_step']:.3f}; "
             f"all kernels incl. pool/loss/SGD {t['speedup_all_kernels']:.2f}x"]
    lines += pass_table_lines(report)
    for b in report["boards"]:
        fits = "" if not b["exceeds_compiled_maxima"] else \
            f"; exceeds its boards.ini maxima in {len(b['exceeds_compiled_maxima'])} layer(s)"
        lines.append(f"{b['board']:>11} ({b['board_precision']}, {b['pe_lanes']} lanes, {b['clock_mhz']:g} MHz): "
                     f"dense {b['dense']['images_per_s']:8.0f} img/s {b['dense']['gops_effective']:6.1f} GOPS, "
                     f"sparse {b['sparse']['images_per_s']:8.0f} img/s {b['sparse']['gops_effective']:6.1f} "
                     f"effective GOPS ({b['speedup']:.2f}x){fits}")
    lines.append("published (ResNet-20 / CIFAR-10, as quoted in issue 15): " +
                 ", ".join(f"{p['system']} {p['gops']:g} GOPS ({p['precision']})" for p in report["published"]))
    sizing = ", ".join(f"{s['board']} {s['precision']} {s['pe_lanes']} (saturates at {s['saturation_lanes']})"
                       for s in report["pe_sizing"])
    lines.append(f"PE lanes fitting 80 % of the DSPs, perf model: {sizing}")
    for name, sp in (report.get("speed") or {}).items():
        secs = ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in sp["seconds"].items() if v is not None)
        r = sp["ratios"]
        ratio = ("" if r["emu_float32_over_torch_cpu"] is None else
                 f"; emu float32 / torch {r['emu_float32_over_torch_cpu']:.2f}, fixed / torch "
                 f"{r['emu_fixed_over_torch_cpu']:.2f}")
        lines.append(f"{name} (batch {sp['batch']}): {secs}{ratio}")
    for name, g in report["goals"].items():
        if g["measured"] is None:
            lines.append(f"goal {name}: not measured")
        else:
            word = "at least" if g["sense"] == "min" else "at most"
            lines.append(f"goal {name} {word} {g['target']}: {g['measured']:.3f} "
                         f"{'met' if g['met'] else 'MISSED by %.3f' % g['shortfall']}")
    return lines
