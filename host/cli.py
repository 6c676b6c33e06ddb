"""The ``zskip`` console script.

One function per subcommand: ``_add_<name>(subparsers)`` declares its
arguments and sets ``func`` to ``_run_<name>(args) -> exit status``. Adding a
subcommand means writing that pair and listing the adder in ``SUBCOMMANDS``.
Errors the user can fix (bad names, bad values, mismatched or damaged
checkpoints, unreadable data, unwritable output paths, device and build
failures, a diverging run) are printed as one line ``zskip: error: ...`` with
exit status 2. Output paths are checked before any work starts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

__all__ = ["main", "build_parser", "SUBCOMMANDS"]


def check_output_path(option: str, path: Optional[str]) -> None:
    """ValueError naming ``option`` unless ``path`` can be written as a file (checked before any work)."""
    if path is None:
        return
    if os.path.isdir(path):
        raise ValueError(f"{option}: {path} is a directory; give a file path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{option}: directory {directory} does not exist (create it first)")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: directory {directory} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{option}: {path} exists and is not writable")


def _parse_opt(text: str):
    """KEY=VALUE -> (key, value) with value as bool, int, float or str."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--backend-opt: expected KEY=VALUE, got {text!r}")
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    return key, raw


def _add_train(sub) -> None:
    from ..models.networks import MODELS
    from ..models.datasets import KNOWN_DATASETS
    from ..models.lr_schedule import SCHEDULES
    from .backends import BACKENDS
    p = sub.add_parser("train", help="train a model on a dataset with a backend",
                       description="Train a model with SGD (momentum, weight decay) and write a JSON report.")
    p.add_argument("--model", default=None, help=f"one of {', '.join(sorted(MODELS))} (default lenet5)")
    p.add_argument("--init-from", default=None, metavar="FILE.onnx|FILE.pt",
                   help="architecture and initial weights from an ONNX file or a whole saved PyTorch module "
                        "(instead of --model; needs zskip[interop])")
    p.add_argument("--trust-pickle", action="store_true",
                   help="let --init-from unpickle a .pt of your own module classes (runs code from the file)")
    p.add_argument("--data", default="mnist5k", help=f"one of {', '.join(KNOWN_DATASETS)} (default mnist5k)")
    p.add_argument("--backend", default="emu", help=f"one of {', '.join(BACKENDS)} (default emu: the HLS kernels in C simulation)")
    p.add_argument("--backend-opt", action="append", type=_parse_opt, default=[], metavar="KEY=VALUE",
                   help="option for the backend, e.g. precision=float32, skip_zeros=false, bitfile=zskip.bit, "
                        "mode=ops (accelerator backends: one device call per op instead of one program per step)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--nesterov", action="store_true",
                   help="Nesterov momentum (PyTorch's form: the step is g + momentum * v') instead of heavy ball")
    p.add_argument("--lr-schedule", default="constant", choices=sorted(SCHEDULES),
                   help="learning rate of each step: " + "; ".join(f"{k}: {v}" for k, v in SCHEDULES.items()) +
                        " (default constant)")
    p.add_argument("--warmup-steps", type=int, default=0, metavar="W",
                   help="ramp the learning rate up linearly over the first W steps (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, default=None, metavar="N", help="use the first N training samples")
    p.add_argument("--limit-test", type=int, default=None, metavar="N", help="use the first N test samples")
    p.add_argument("--report", default=None, metavar="PATH", help="write the JSON report here")
    p.add_argument("--checkpoint", default=None, metavar="PATH.npz", help="checkpoint file (written every epoch)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K", help="also checkpoint every K steps")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--check-every", type=int, default=0, metavar="N",
                   help="compare every N-th step with the numpy reference, op by op; stop on an error beyond "
                        "the precision's tolerance (0: never)")
    p.add_argument("--precision", default=None, metavar="SPEC",
                   help="accelerator arithmetic per tensor class: float32, fixed16, fixed12, fixed8, ap_fixed<W,I> "
                        "or e.g. act=ap_fixed<16,6>,wgt=ap_fixed<16,4>,grad=ap_fixed<16,2>,acc=ap_fixed<32,12>,"
                        "opt=float32 (emu backend; default float32); float32 may add mul=exact|bf16|mitchell|lut:FILE, the MAC "
                        "multiplier (reference and emu backends)")
    p.add_argument("--prune-rate", type=float, default=0.0, metavar="P",
                   help="stochastic pruning of each layer's activation gradient at target rate P in [0, 1) "
                        "(SparseTrain; default 0: off)")
    p.add_argument("--density", type=float, default=1.0, metavar="D",
                   help="pre-defined structured sparsity: every fully-connected junction except the last keeps a "
                        "fraction D in (0, 1] of its edges, fixed fan-in and fan-out, the patterns clash-free for the "
                        "backend's PE lanes (reference and emu backends; default 1)")
    p.add_argument("--density-seed", type=int, default=0, metavar="S", help="seed of the connection patterns")
    p.add_argument("--max-saturations", type=int, default=1000, metavar="N",
                   help="warn, naming the layer, when its fixed-point saturations in an epoch exceed N")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from ..models.datasets import load_dataset
    from ..models.networks import get_model
    from ..models.train import train
    from .backends import make_backend
    check_output_path("--report", args.report)
    check_output_path("--checkpoint", args.checkpoint)
    dataset = load_dataset(args.data, seed=args.seed)
    if args.limit_train is not None or args.limit_test is not None:
        dataset = dataset.subset(args.limit_train, args.limit_test)
    init_params = None
    if args.init_from is not None:
        if args.model is not None:
            raise ValueError(f"--model and --init-from: give one (the file {args.init_from} holds the architecture)")
        if args.density != 1.0:
            raise ValueError(f"--density: {args.init_from} brings dense weights; a sparse junction starts from its own "
                             f"initial weights (use --model)")
        from ..models.interop import load_model_file
        model, init_params = load_model_file(args.init_from, input_shape=dataset.input_shape,
                                             trust_pickle=args.trust_pickle)
    else:
        # the ResNets adapt to the data's shape
        model = get_model(args.model or "lenet5", input_shape=dataset.input_shape)
        # checks --density before a backend is made; the patterns follow the backend's PE lanes (below)
        model.with_density(args.density, args.density_seed)
    from .ip.precision import is_float32, multiplier
    opts = dict(args.backend_opt)
    if args.precision is not None:
        if "precision" in opts and opts["precision"] != args.precision:
            raise ValueError(f"--precision: given as {args.precision!r} and as --backend-opt precision="
                             f"{opts['precision']!r}; give it once")
        if not is_float32(args.precision):
            if args.backend == "reference":
                raise ValueError(f"--precision: the reference backend computes in numpy float32/float64 only; "
                                 f"{args.precision!r} needs an accelerator backend (--backend emu)")
            opts["precision"] = args.precision
        elif multiplier(args.precision) != "exact":
            opts["precision"] = args.precision
    if args.prune_rate:
        opts["prune_rate"] = args.prune_rate
    backend = make_backend(args.backend, **opts)
    if args.init_from is None:
        from .backends import pattern_lanes
        model = model.with_density(args.density, args.density_seed, lanes=pattern_lanes(backend))
    try:
        result = train(backend, model, dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       momentum=args.momentum, weight_decay=args.weight_decay, seed=args.seed,
                       lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps, nesterov=args.nesterov,
                       checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, resume=args.resume,
                       quiet=args.quiet, extra_config={"backend_opts": dict(args.backend_opt),
                                                       "precision": args.precision or "float32",
                                                       "density": args.density, "density_seed": args.density_seed,
                                                       "init_from": args.init_from},
                       check_every=args.check_every, max_saturations=args.max_saturations,
                       init_params=init_params)
    finally:
        backend.close()
    if args.report:
        tmp = args.report + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result.report, f, indent=1)
        os.replace(tmp, args.report)
    final = result.report["epochs"][-1] if result.report["epochs"] else None
    if final is not None and not args.quiet:
        print(f"test_accuracy {final['test_accuracy']:.4f} after {final['epoch']} epochs")
    return 0


def _add_bench(sub) -> None:
    from ..models.networks import MODELS
    p = sub.add_parser("bench", help="measure sparse vs dense speedups, board estimates and emulator speed",
                       description="Train to a stated point on emu, run the same batches in sparse and dense "
                                   "mode and write the speedup, utilisation, board and emulator-speed figures as JSON (and a PNG).")
    p.add_argument("--model", default="lenet5", help=f"one of {', '.join(sorted(MODELS))} (default lenet5)")
    p.add_argument("--data", default=None, help="dataset spec as for train (default mnist5k; synthetic:3x32x32 "
                                                 "for the ResNets, or cifar10:DIR)")
    p.add_argument("--epochs", type=int, default=1, help="epochs of training on emu before measuring (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (ResNets: 8)")
    p.add_argument("--batches", type=int, default=None,
                   help="mini-batches measured in both modes (default 4; ResNets: 2)")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, default=None, metavar="N",
                   help="use the first N training samples (ResNets: default 64, so one epoch is 8 steps)")
    p.add_argument("--layers", action="store_true", help="also print the per-layer table of skipped MACs")
    p.add_argument("--boards", nargs="+", default=None, metavar="BOARD", help="boards.ini sections (default all)")
    p.add_argument("--repeat", type=int, default=5, help="timed repeats per implementation (median; default 5)")
    p.add_argument("--vgg-batch", type=int, default=16, help="batch of the vgg_tiny speed step (default 16)")
    p.add_argument("--layer-batch", type=int, default=1, help="batch of the VGG-16 layer speed run (default 1)")
    p.add_argument("--precision", default="float32",
                   help="datapath of training and of the measured kernels: float32, fixed16, ap_fixed<W,I> or "
                        "class=type pairs (default float32)")
    p.add_argument("--prune-rate", type=float, default=0.0,
                   help="gradient pruning rate in [0, 1) in training and in the measured steps; an unpruned "
                        "training run gives the accuracy it is compared with (default 0: off)")
    p.add_argument("--no-speed", action="store_true", help="skip the emulator speed timings")
    p.add_argument("--report", default="bench.json", metavar="PATH", help="JSON report (default bench.json)")
    p.add_argument("--plot", default=None, metavar="PATH.png", help="also write the figure here")
    p.add_argument("--quiet", action="store_true", help="no progress lines or summary")
    p.set_defaults(func=_run_bench)


#: bench defaults of the ResNets (a step of ResNet-20 costs seconds on the emulator, LeNet-5's milliseconds):
#: data, batch size, measured batches, training samples
RESNET_BENCH_DEFAULTS = {"data": "synthetic:3x32x32", "batch_size": 8, "batches": 2, "limit_train": 64}
BENCH_DEFAULTS = {"data": "mnist5k", "batch_size": 64, "batches": 4, "limit_train": None}


def bench_defaults(args) -> None:
    """Fill the bench options left unset (None) with the model's defaults (ResNets: RESNET_BENCH_DEFAULTS)."""
    defaults = RESNET_BENCH_DEFAULTS if args.model.startswith("resnet") else BENCH_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _run_bench(args) -> int:
    from .bench.report import layer_table_lines, run_bench, summary_lines
    check_output_path("--report", args.report)
    check_output_path("--plot", args.plot)
    bench_defaults(args)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    report = run_bench(args.model, args.data, epochs=args.epochs, batch_size=args.batch_size, batches=args.batches,
                       lr=args.lr, momentum=args.momentum, seed=args.seed, limit_train=args.limit_train,
                       boards=args.boards, speed=not args.no_speed, repeat=args.repeat, vgg_batch=args.vgg_batch,
                       layer_batch=args.layer_batch, log=log, precision=args.precision,
                       prune_rate=args.prune_rate)
    tmp = args.report + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, args.report)
    if args.plot:
        from .bench.plot import plot_report
        plot_report(report, args.plot)
    if not args.quiet:
        print("\n".join(summary_lines(report)))
        if args.layers:
            print("\n".join(layer_table_lines(report)))
    return 0


def _add_hls_lint(sub) -> None:
    from ..overlay import hls_lint
    p = sub.add_parser("hls-lint", help="check the HLS sources against the hardware rules",
                       description="Check the synthesised HLS sources: pipelined loops labelled and in the "
                                   "schedule table, constant lane bounds, trip counts, lane-owned partitions, "
                                   "no static constructors, __SYNTHESIS__ guards. Prints file:line: rule: "
                                   "message; exit status 1 on any violation.")
    hls_lint.add_arguments(p)
    p.set_defaults(func=_run_hls_lint)


def _run_hls_lint(args) -> int:
    from ..overlay import hls_lint
    return hls_lint.run(args)


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list or clear the compiled emulation libraries",
                       description="The emu backend's compiled libraries ($ZSKIP_CACHE_DIR or ~/.cache/zskip): "
                                   "at most $ZSKIP_CACHE_MAX (default 64), least recently used out first.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="list the libraries, most recently used first (default)")
    what.add_argument("--clear", action="store_true", help="remove every library, build log and temporary")
    p.set_defaults(func=_run_cache)


def _run_cache(args) -> int:
    import time
    from .devices.emu import cache_dir, cache_entries, clear_cache
    directory = cache_dir()
    if args.clear:
        gone = clear_cache(directory) if directory.is_dir() else []
        print(f"removed {len(gone)} files from {directory}")
        return 0
    entries = cache_entries(directory) if directory.is_dir() else []
    for path, size, used in entries:
        print(f"{size / 2 ** 20:8.2f} MB  {time.strftime('%Y-%m-%d %H:%M', time.localtime(used))}  {path.name}")
    print(f"{len(entries)} libraries, {sum(e[1] for e in entries) / 2 ** 20:.2f} MB in {directory}")
    return 0


EXPORT_FORMATS = ("torch", "onnx", "hls4ml")
#: board whose part an hls4ml export targets when neither --board, --part nor the checkpoint names one
DEFAULT_EXPORT_BOARD = "pynq-z2"


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a trained checkpoint as PyTorch, ONNX or an hls4ml project",
                       description="Export the weights of a training checkpoint: a whole PyTorch module (.pt), an "
                                   "ONNX file, or an hls4ml project for inference (needs zskip[interop]).")
    p.add_argument("--checkpoint", required=True, metavar="PATH.npz", help="checkpoint written by zskip train")
    p.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="output format")
    p.add_argument("out", metavar="OUT", help="output file (torch, onnx) or project directory (hls4ml)")
    p.add_argument("--precision", default=None, metavar="SPEC",
                   help="hls4ml: numeric types, a training precision spec as for train --precision (default: the "
                        "checkpoint's training precision; float32 becomes hls4ml's float)")
    p.add_argument("--board", default=None, metavar="BOARD",
                   help=f"hls4ml: boards.ini section whose part and clock the project targets (default: the "
                        f"checkpoint's board, else {DEFAULT_EXPORT_BOARD})")
    p.add_argument("--part", default=None, help="hls4ml: FPGA part, overriding --board (hls4ml's default clock)")
    p.add_argument("--hls-backend", default="Vitis", choices=("Vitis", "Vivado"), help="hls4ml backend (default Vitis)")
    p.add_argument("--io-type", default="io_stream", choices=("io_stream", "io_parallel"),
                   help="hls4ml io_type (default io_stream; io_parallel needs an ap_fixed precision)")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from ..models.checkpoint import checkpoint_model, load_checkpoint
    from ..models import interop
    if args.to != "hls4ml":
        check_output_path("OUT", args.out)          # a file; an hls4ml project is a directory hls4ml creates
    ckpt = load_checkpoint(args.checkpoint)
    model = checkpoint_model(ckpt)
    ckpt = load_checkpoint(args.checkpoint, model)   # checks every parameter's name and shape
    if args.to != "hls4ml":
        given = [f"--{n.replace('_', '-')}" for n in ("precision", "board", "part") if getattr(args, n) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: {'applies' if len(given) == 1 else 'apply'} only to --to hls4ml")
    if args.to == "torch":
        interop.save_torch_file(model, ckpt.params, args.out)
        what = "PyTorch module (torch.load)"
    elif args.to == "onnx":
        interop.to_onnx(model, ckpt.params, args.out)
        what = "ONNX model"
    else:
        from ..overlay.boards import board
        from .ip.precision import parse_precision
        spec = args.precision or ckpt.config.get("precision") or "float32"
        part, clock_period = args.part, None
        if part is None:
            profile = board(args.board or (ckpt.config.get("backend_opts") or {}).get("board") or DEFAULT_EXPORT_BOARD)
            part, clock_period = profile.part, profile.clock_period_ns
        interop.to_hls4ml(model, ckpt.params, args.out, precision=parse_precision(spec), backend=args.hls_backend,
                          io_type=args.io_type, part=part, clock_period=clock_period)
        what = f"hls4ml {args.hls_backend} project ({args.io_type}, precision {spec}, part {part})"
    print(f"wrote {args.out}: {what} of {model.name}, epoch {ckpt.epoch} step {ckpt.step} of {args.checkpoint}")
    return 0


#: Adders of every subcommand, in --help order.
SUBCOMMANDS = [_add_train, _add_bench, _add_hls_lint, _add_cache, _add_export]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="zskip", description="zskip: zero-skipping CNN training on PYNQ boards")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``zskip`` console script; returns the exit status."""
    from ..models.check import CheckFailed
    from .devices.device import DeviceError
    from ..models.interop.chain import MissingExtra
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, MissingExtra, CheckFailed, DeviceError) as e:
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"zskip: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
