"""zskip bench: report structure and internal consistency on a tiny run (no timing asserts)."""
import json
import math

import numpy as np
import pytest

from zskip.host.bench import report as B
from zskip.host.bench import speed as S
from zskip.models import reference as R
from zskip.models.networks import get_model
from zskip.overlay.boards import load_boards


@pytest.fixture(scope="module")
def tiny_report():
    # untrained LeNet-5, two batches of 8, one board: seconds, not minutes
    return B.run_bench("lenet5", "mnist5k", epochs=0, batch_size=8, batches=2, boards=["pynq-z2"], speed=False)


def test_rows_follow_their_definitions(tiny_report):
    lanes = tiny_report["pe_lanes"]
    from zskip.host.ip.program import Limits
    assert lanes == Limits.defaults().pe_lanes  # the comparison runs at config.h's PE lanes
    assert {(r["layer"], r["pass"]) for r in tiny_report["layers"]} == {
        (0, "fwd"), (0, "bwd_weight"), (2, "fwd"), (2, "bwd_weight"), (2, "bwd_data"),
        *((i, p) for i in (5, 6, 7) for p in ("fwd", "bwd_weight", "bwd_data"))}
    for r in tiny_report["layers"]:
        assert r["speedup"] == pytest.approx(r["cycles_dense"] / r["cycles_sparse"])
        assert r["ideal_speedup"] == pytest.approx(r["macs_dense"] / r["macs_nonzero"])
        assert r["utilization"] == pytest.approx(r["macs_nonzero"] / lanes / r["cycles_sparse"])
        # the sparse kernels multiply exactly the operand pairs the reference counts as live
        assert r["macs_executed"] == r["macs_nonzero"]
        assert 0 < r["utilization"] <= 1


def test_macs_dense_match_layer_shapes(tiny_report):
    # independent count: every output tap of a valid convolution / every weight of a linear layer, per sample
    per_sample = {0: 6 * 1 * 25 * 24 * 24, 2: 16 * 6 * 25 * 8 * 8, 5: 256 * 120, 6: 120 * 84, 7: 84 * 10}
    samples = 8 * 2
    for r in tiny_report["layers"]:
        assert r["macs_dense"] == per_sample[r["layer"]] * samples


def test_totals_are_ratios_of_sums(tiny_report):
    rows, t = tiny_report["layers"], tiny_report["totals"]
    lanes = tiny_report["pe_lanes"]

    def ratio(passes, num, den):
        sel = [r for r in rows if r["pass"] in passes]
        return sum(r[num] for r in sel) / sum(r[den] for r in sel)
    assert t["speedup_fwd"] == pytest.approx(ratio(["fwd"], "cycles_dense", "cycles_sparse"))
    assert t["speedup_bwd"] == pytest.approx(ratio(["bwd_data", "bwd_weight"], "cycles_dense", "cycles_sparse"))
    all_passes = ["fwd", "bwd_data", "bwd_weight"]
    assert t["speedup_step"] == pytest.approx(ratio(all_passes, "cycles_dense", "cycles_sparse"))
    assert t["ideal_speedup_step"] == pytest.approx(ratio(all_passes, "macs_dense", "macs_nonzero"))
    assert t["utilization_step"] == pytest.approx(ratio(all_passes, "macs_nonzero", "cycles_sparse") / lanes)
    assert t["dense_array_utilization_step"] == pytest.approx(ratio(all_passes, "macs_dense", "cycles_dense") / lanes)
    assert 0 < t["dense_array_utilization_step"] <= 1
    # pooling, loss and SGD have cycles of their own on top of the conv/FC passes
    assert t["cycles_sparse_all_kernels"] > t["cycles_sparse_step"]


def test_goals_state_shortfalls(tiny_report):
    g = tiny_report["goals"]
    assert set(g) == set(B.GOALS)
    s = g["dense_array_utilization_step"]
    assert s["measured"] == tiny_report["totals"]["dense_array_utilization_step"]
    assert s["met"] == (s["measured"] >= 0.85)
    assert s["shortfall"] == pytest.approx(0.0 if s["met"] else 0.85 - s["measured"])
    assert g["emu_float32_over_torch_cpu"]["measured"] is None  # speed=False: not measured, not invented
    # no pruning in this run: the pruning goals are not measured
    assert g["speedup_bwd"]["measured"] is None and g["prune_accuracy_drop"]["measured"] is None


def test_bench_rejects_bad_precision_and_prune_rate():
    with pytest.raises(ValueError, match="prune_rate: must be a number in"):
        B.run_bench("lenet5", "mnist5k", epochs=0, batch_size=8, batches=1, speed=False, prune_rate=1.5)
    with pytest.raises(ValueError, match="precision"):
        B.run_bench("lenet5", "mnist5k", epochs=0, batch_size=8, batches=1, speed=False, precision="float64")


def test_pruned_fixed_point_run_reports_its_configuration():
    r = B.run_bench("lenet5", "mnist5k", epochs=0, batch_size=8, batches=1, boards=["pynq-z2"], speed=False,
                    precision="fixed16", prune_rate=0.9)
    assert (r["config"]["precision"], r["config"]["prune_rate"]) == ("fixed16", 0.9)
    # pruning removes dy zeros only in sparse mode: the backward passes run fewer MACs than the
    # unpruned reference accounting would have (macs_executed equals the pruned accounting)
    for row in r["layers"]:
        assert row["macs_executed"] == row["macs_nonzero"]
    assert r["goals"]["speedup_bwd"]["measured"] == r["totals"]["speedup_bwd"]


def test_goals_logic_on_given_values():
    g = B.goals({"speedup_bwd": 6.0, "utilization_step": 0.5, "prune_rate": 0.9, "prune_accuracy_drop": 0.02},
                {"ratios": {"emu_float32_over_torch_cpu": 1.5, "emu_fixed_over_torch_cpu": 3.0}})
    assert g["speedup_bwd"] == {"target": 5.4, "sense": "min", "measured": 6.0, "met": True, "shortfall": 0.0}
    assert g["prune_accuracy_drop"]["met"] is False
    assert g["prune_accuracy_drop"]["shortfall"] == pytest.approx(0.01)
    assert g["utilization_step"]["shortfall"] == pytest.approx(0.35)
    assert g["emu_float32_over_torch_cpu"]["met"] is False
    assert g["emu_float32_over_torch_cpu"]["shortfall"] == pytest.approx(0.5)
    assert g["emu_fixed_over_torch_cpu"]["met"] is True


def test_board_estimate_is_whichever_bounds(tiny_report):
    board = load_boards()["pynq-z2"]
    (est,) = tiny_report["boards"]
    assert est["board"] == "pynq-z2" and est["pe_lanes"] == board.pe_lanes
    for mode in ("dense", "sparse"):
        m = est[mode]
        assert m["compute_s"] == pytest.approx(m["cycles"] / (board.clock_mhz * 1e6))
        assert m["ddr_s"] == pytest.approx(m["bytes"] / (board.ddr_gbps * 1e9))
        # per op the larger of the two: at least each total, at most their sum
        assert max(m["compute_s"], m["ddr_s"]) <= m["seconds"] * (1 + 1e-12)
        assert m["seconds"] <= (m["compute_s"] + m["ddr_s"]) * (1 + 1e-12)
        assert m["images_per_s"] == pytest.approx(8 / m["seconds"])
        assert m["images_per_joule"] is None
    assert est["dense"]["bytes"] == est["sparse"]["bytes"]  # dense layout in DDR either way
    assert est["speedup"] == pytest.approx(est["dense"]["seconds"] / est["sparse"]["seconds"])
    # pynq-z2's own maxima (boards.ini) are sized to hold LeNet-5 (the Jupyter-on-PYNQ-Z2 use case)
    assert est["exceeds_compiled_maxima"] == []


def test_board_maxima_too_small_for_a_model_are_listed():
    from zskip.models.networks import Model, conv, flatten, linear
    from zskip.overlay.boards import load_boards
    wide = Model("wide", (1, 8, 8), (conv(40, 3), flatten(), linear(10, relu=False)))
    limits = load_boards()["pynq-z2"]
    assert limits.max_ch < 40
    exceeded = B._model_fits(wide, limits)
    assert any(p.startswith("conv1: 1->40") for p in exceeded)


def test_op_bytes_counts_operands_results_and_mask_bits():
    x = np.zeros((2, 3, 8, 8), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    b = np.zeros(4, np.float32)
    y = np.zeros((2, 4, 6, 6), np.float32)
    mask = np.zeros(y.shape, bool)
    expected = 4 * (x.size + w.size + b.size + y.size) + 4 * math.ceil(mask.size / 32)
    assert B.op_bytes((x, w, b), {"stride": 1}, (y, mask)) == expected
    assert B.op_bytes((x,), {}, (1.5, y)) == 4 * x.size + 4 + 4 * y.size


def test_dense_cycles_do_not_depend_on_data():
    from zskip.host.runtime.accelerator import Accelerator
    model = get_model("lenet5")
    params, vel = model.init_params(0), model.zero_velocities()
    rng = np.random.default_rng(3)
    sparse_x = rng.random((4, 1, 28, 28)).astype(np.float32) * (rng.random((4, 1, 28, 28)) < 0.2)
    dense_x = rng.random((4, 1, 28, 28)).astype(np.float32) + 0.1
    y = np.arange(4) % 10
    acc = Accelerator.emulated(skip_zeros=False)
    runs = [B.measure_steps(acc, model, params, vel, [(x, y)]) for x in (sparse_x, dense_x)]
    per_op = [[r["stats"]["cycles"] for r in run["records"][0]] for run in runs]
    # the scoreboard's issue clock runs on across calls, so a call may wait up to ACC_LATENCY - 1
    # cycles for the previous call's last accumulator write
    from zskip.host.bench.perf_model import kernel_constants
    slack = kernel_constants()["ACC_LATENCY"]
    assert len(per_op[0]) == len(per_op[1])
    assert all(abs(a - b) < slack for a, b in zip(*per_op))


def test_measure_steps_starts_every_batch_from_the_same_params():
    from zskip.host.runtime.accelerator import Accelerator
    model = get_model("lenet5")
    params, vel = model.init_params(1), model.zero_velocities()
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    y = np.arange(4)
    out = B.measure_steps(Accelerator.emulated(), model, params, vel, [(x, y), (x, y)])
    first, second = ([r["stats"] for r in batch] for batch in out["records"])
    assert [s["macs_executed"] for s in first] == [s["macs_executed"] for s in second]
    # the recorded conv-forward MACs of layer 0 are the reference's nonzero count
    macs = R.conv_macs(x, np.ones((4, 6, 24, 24)), (6, 1, 5, 5))["fwd"]["macs_nonzero"]
    assert first[0]["macs_executed"] == macs


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="batches"):
        B.run_bench(epochs=0, batches=0, speed=False)
    with pytest.raises(ValueError, match="boards"):
        B.run_bench(epochs=0, batch_size=4, batches=1, boards=["nonesuch"], speed=False)
    with pytest.raises(ValueError, match="batches: 2 batches of 64"):
        B.run_bench(epochs=0, batch_size=64, batches=2, limit_train=100, speed=False)


def test_speed_reports_each_implementation_and_notes_missing_torch(monkeypatch):
    from zskip.host.runtime.accelerator import Accelerator
    monkeypatch.setattr(S, "_torch", lambda: None)
    model = get_model("lenet5")
    x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    rep = S.step_speed(model, model.init_params(0), model.zero_velocities(), x, np.arange(2),
                       {"emu_float32": Accelerator.emulated()}, repeat=1)
    assert rep["seconds"]["emu_float32"] > 0 and rep["seconds"]["reference"] > 0
    assert rep["seconds"]["torch_cpu"] is None and rep["ratios"]["emu_float32_over_torch_cpu"] is None
    assert any("not installed" in n for n in rep["notes"])


def test_torch_network_computes_the_reference_logits():
    torch = pytest.importorskip("torch")
    from zskip.models.ops import ReferenceOps
    from zskip.models.step import predict
    model = get_model("lenet5")
    params = model.init_params(2)
    x = np.random.default_rng(1).random((3, 1, 28, 28)).astype(np.float32)
    net = S._torch_model(torch, model, params, "cpu")
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, predict(ReferenceOps(), model, params, x), rtol=1e-4, atol=1e-4)


def test_vgg16_layer_data_has_the_stated_sparsity():
    d = S.vgg16_layer_data(batch=1)
    assert d["x"].shape == (1, 128, 32, 32)
    assert abs(d["input_sparsity"] - S.VGG16_INPUT_SPARSITY) < 0.02
    # dy is zero wherever the layer's ReLU output is zero
    y = R.conv2d_forward(d["x"], d["w"], d["b"], 1, 1)
    assert np.all(d["dy"][y <= 0] == 0)


def test_cli_writes_report_and_plot(tmp_path):
    from zskip.host.cli import main
    report, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    # one training step (32 samples) exercises the training path
    assert main(["bench", "--epochs", "1", "--limit-train", "32", "--batch-size", "16", "--batches", "1",
                 "--boards", "pynq-z2", "--no-speed", "--quiet", "--report", str(report), "--plot", str(plot)]) == 0
    data = json.loads(report.read_text())
    for key in ("speedup_fwd", "speedup_bwd", "speedup_step", "ideal_speedup_step", "utilization_step"):
        assert data["totals"][key] > 0
    assert data["training"]["epochs"] == 1 and data["training"]["test_accuracy"] is not None
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the ResNet bench (issue 15)
@pytest.fixture(scope="module")
def resnet_report():
    # untrained ResNet-8 on synthetic 3x16x16 images, one batch of 2, one board: seconds
    return B.run_bench("resnet8", "synthetic:3x16x16", epochs=0, batch_size=2, batches=1, boards=["kv260"],
                       speed=True)


def test_resnet_rows_split_the_skipped_macs_by_type(resnet_report):
    rows = resnet_report["layers"]
    assert {r["kind"] for r in rows} == {"conv", "linear"}
    for r in rows:
        # every dense MAC is executed, skipped by input type or skipped by output type (reference accounting)
        assert r["macs_nonzero"] + r["macs_skipped_input"] + r["macs_skipped_output"] == r["macs_dense"]
        assert r["skipped_input_share"] == pytest.approx(r["macs_skipped_input"] / r["macs_dense"])
        assert r["skipped_output_share"] == pytest.approx(r["macs_skipped_output"] / r["macs_dense"])
        assert r["ideal_speedup_output_only"] == pytest.approx(
            r["macs_dense"] / (r["macs_dense"] - r["macs_skipped_output"]))
        assert r["macs_executed"] == r["macs_nonzero"]
        if r["pass"] != "bwd_data":
            assert r["macs_skipped_output"] == 0           # only backward-data has masked outputs
        elif r["kind"] == "conv":
            # every convolution's dy comes out of a batch normalisation: dense, nothing input-type to skip
            assert r["macs_skipped_input"] == 0 and r["macs_skipped_output"] > 0


def test_resnet_pass_totals_and_sarma_rows_are_sums_of_rows(resnet_report):
    rows, passes = resnet_report["layers"], resnet_report["passes"]
    for name, sel in (("fwd", ["fwd"]), ("bwd_data", ["bwd_data"]), ("bwd", ["bwd_data", "bwd_weight"]),
                      ("step", ["fwd", "bwd_data", "bwd_weight"])):
        rs = [r for r in rows if r["pass"] in sel]
        for key in ("macs_dense", "macs_nonzero", "macs_skipped_input", "macs_skipped_output", "cycles_dense",
                    "cycles_sparse"):
            assert passes[name][key] == sum(r[key] for r in rs), (name, key)
        assert passes[name]["speedup"] == pytest.approx(sum(r["cycles_dense"] for r in rs)
                                                        / sum(r["cycles_sparse"] for r in rs))
    bwd, step = resnet_report["sarma"]
    assert bwd["sarma"] == (1.69, 5.43) and step["sarma"] == (1.68, 3.30)
    assert bwd["ideal"] == passes["bwd"]["ideal_speedup"] and step["measured"] == passes["step"]["speedup"]
    assert step["measured_all_kernels"] == resnet_report["totals"]["speedup_all_kernels"]
    # every kernel of the step, from its own counters: the new ones have cycles too
    by_op = resnet_report["cycles_by_op"]["sparse"]
    for op in ("batchnorm_forward", "batchnorm_backward", "add_forward", "add_backward", "global_avgpool_forward",
               "global_avgpool_backward", "sgd_update"):
        assert by_op[op] > 0, op
    assert sum(by_op.values()) == resnet_report["totals"]["cycles_sparse_all_kernels"]
    assert any("speed timings skipped" in n for n in resnet_report["notes"])


def test_resnet_board_gops_follow_from_macs_and_seconds(resnet_report):
    (est,) = resnet_report["boards"]
    board = load_boards()["kv260"]
    # independent count of one batch's dense MACs: the conv and FC rows (the board runs the same batch)
    macs = sum(r["macs_dense"] for r in resnet_report["layers"]) / resnet_report["config"]["batches"]
    executed = sum(r["macs_nonzero"] for r in resnet_report["layers"]) / resnet_report["config"]["batches"]
    assert est["board_precision"] == board.precision and est["pe_lanes"] == board.pe_lanes
    for mode in ("dense", "sparse"):
        assert est[mode]["gops_effective"] == pytest.approx(2 * macs / est[mode]["seconds"] / 1e9)
    assert est["dense"]["gops_executed"] == pytest.approx(est["dense"]["gops_effective"])
    assert est["sparse"]["gops_executed"] == pytest.approx(2 * executed / est["sparse"]["seconds"] / 1e9)
    assert [p["system"] for p in resnet_report["published"]] == ["BOOST", "ETA"]
    lines = B.summary_lines(resnet_report)
    assert any(line.startswith("back-prop (bwd-data + bwd-weight): ideal") for line in lines)
    assert any("BOOST 131 GOPS" in line and "ETA 659 GOPS (8 bit)" in line for line in lines)
    assert len(B.layer_table_lines(resnet_report)) == 1 + len(resnet_report["layers"])


def test_board_maxima_check_sees_the_layers_inside_residual_blocks():
    limits = load_boards()["pynq-z2"]
    model = get_model("resnet20")
    exceeded = B._model_fits(model, limits)
    names = model.layer_names()
    # every convolution of stages 2 and 3 (32 and 64 channels) is inside a block
    inside = [names[i] for i, layer in enumerate(model.flat_layers) if layer.kind == "conv"
              and layer.out > limits.max_ch]
    assert inside and all(any(p.startswith(f"{n}: ") for p in exceeded) for n in inside)


def test_cli_bench_defaults_depend_on_the_model():
    from zskip.host import cli
    args = type("A", (), {"model": "resnet20", "data": None, "batch_size": None, "batches": None,
                          "limit_train": None})()
    cli.bench_defaults(args)
    assert (args.data, args.batch_size, args.batches, args.limit_train) == ("synthetic:3x32x32", 8, 2, 64)
    args = type("A", (), {"model": "lenet5", "data": "mnist5k", "batch_size": 16, "batches": None,
                          "limit_train": None})()
    cli.bench_defaults(args)
    assert (args.data, args.batch_size, args.batches, args.limit_train) == ("mnist5k", 16, 4, None)
