"""Models in and out (zskip.models.interop): PyTorch, ONNX and hls4ml against independent computations.

The PyTorch networks below are written here, by hand, in PyTorch's own terms;
the zskip side runs the numpy reference (``ReferenceOps``). Exports are
checked by running them in their own framework (torch, onnxruntime, hls4ml's
C simulation) against zskip's ``predict`` on the mnist5k test split.
Tests that need the optional extra skip, saying so, only when it is absent.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from zskip.models.interop import (ImportRefused, MissingExtra, from_onnx, from_torch, load_model_file,
                                  load_torch_file, predict_hls4ml, save_torch_file, to_hls4ml, to_onnx, to_torch)
from zskip.models.interop.hls4ml_io import hls4ml_precision
from zskip.models.networks import get_model, model_from_dict, model_to_dict, MODELS
from zskip.models.ops import ReferenceOps
from zskip.models.step import predict

NO_EXTRA = "needs the optional extra zskip[interop] (pip install 'zskip[interop]')"


def _torch():
    return pytest.importorskip("torch", reason=NO_EXTRA)


def _onnx():
    return pytest.importorskip("onnx", reason=NO_EXTRA)


def _zskip_logits(model, params, x):
    return np.concatenate([predict(ReferenceOps(), model, params, x[i:i + 250]) for i in range(0, len(x), 250)])


# --------------------------------------------------------------------------- networks written in PyTorch
def _torch_lenet5(torch):
    """LeNet-5 as in PyTorch's MNIST example: functional ReLU after the pool, view(size(0), -1)."""
    nn, F = torch.nn, torch.nn.functional

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
            self.f1, self.f2, self.f3 = nn.Linear(256, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.c1(x), 2))
            x = F.max_pool2d(torch.relu(self.c2(x)), kernel_size=2, stride=2)
            x = x.view(x.size(0), -1)
            return self.f3(F.relu(self.f2(self.f1(x).relu())))

    return LeNet5().eval()


def _torch_vgg_tiny(torch):
    nn = torch.nn
    block = lambda c_in, c_out: [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]  # noqa: E731
    return nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                         nn.MaxPool2d(2), *block(64, 128), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


@pytest.mark.parametrize("name, build, shape", [("lenet5", _torch_lenet5, (1, 28, 28)),
                                                ("vgg_tiny", _torch_vgg_tiny, (3, 32, 32))])
def test_from_torch_matches_pytorch_forward(name, build, shape, rng):
    torch = _torch()
    torch.manual_seed(0)
    module = build(torch)
    model, params = from_torch(module, shape, name=name)
    # the traced layers are zskip's own definition of the network
    assert model.layers == get_model(name).layers and model.input_shape == shape
    x = rng.standard_normal((6,) + shape).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = _zskip_logits(model, params, x)
    assert np.abs(expected).max() > 1e-2          # a meaningful comparison, not two near-zero outputs
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_from_torch_bias_free_and_same_padding(rng):
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(1)
    module = nn.Sequential(nn.Conv2d(2, 4, 3, padding="same", bias=False), nn.MaxPool2d(2), nn.ReLU(),
                           nn.Flatten(), nn.Identity(), nn.Linear(4 * 4 * 4, 5, bias=False)).eval()
    model, params = from_torch(module, (2, 8, 8))
    assert (model.layers[0].pad, model.layers[0].relu) == (1, True)   # ReLU after the pool fused into the conv
    assert not params["layer0.b"].any()
    x = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(_zskip_logits(model, params, x), module(torch.from_numpy(x)).numpy(), atol=1e-5)


# --------------------------------------------------------------------------- a zskip-trained LeNet-5 out
@pytest.fixture(scope="module")
def trained_lenet5():
    """LeNet-5 trained by zskip (reference backend, 1 epoch on the 4,000 mnist5k training images) and the test split."""
    from zskip.host.backends import make_backend
    from zskip.models.datasets import load_dataset
    from zskip.models.train import train
    data = load_dataset("mnist5k")
    model = get_model("lenet5")
    result = train(make_backend("reference", account=False), model, data, epochs=1,
                   batch_size=32, lr=0.02, quiet=True)
    params = {k: np.array(v) for k, v in result.params.items()}
    logits = _zskip_logits(model, params, data.x_test)
    # a trained network, so that agreeing predictions say something
    assert np.mean(logits.argmax(1) == data.y_test) > 0.8
    return model, params, data.x_test, logits


def test_to_torch_predicts_like_zskip(trained_lenet5):
    torch = _torch()
    model, params, x, logits = trained_lenet5
    module = to_torch(model, params)
    assert [n for n, _ in module.named_children()][:3] == ["conv1", "conv1_relu", "pool1"]
    with torch.no_grad():
        out = module(torch.from_numpy(x)).numpy()
    assert np.array_equal(out.argmax(1), logits.argmax(1))
    np.testing.assert_allclose(out, logits, atol=1e-4)
    # and back: the traced export is the same model with the same weights
    model2, params2 = from_torch(module, model.input_shape, name=model.name)
    assert model2 == model and all(np.array_equal(params2[k], params[k]) for k in params)


def test_to_onnx_predicts_like_zskip(trained_lenet5, tmp_path):
    _onnx()
    model, params, x, logits = trained_lenet5
    path = tmp_path / "lenet5.onnx"
    to_onnx(model, params, path)
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(["logits"], {"input": x})[0]
    assert np.array_equal(out.argmax(1), logits.argmax(1))
    np.testing.assert_allclose(out, logits, atol=1e-4)
    model2, params2 = from_onnx(path)
    assert model2 == model and all(np.array_equal(params2[k], params[k]) for k in params)


def test_sparse_junctions_export_as_dense_layers_with_zeros(tmp_path, rng):
    torch, _ = _torch(), _onnx()
    model = get_model("lenet5").with_density(0.25, seed=1)
    params = model.init_params(0)
    assert params["layer5.w"].shape[1] < 256            # stored compressed: (out, fan_in)
    x = rng.random((4, 1, 28, 28)).astype(np.float32)
    logits = _zskip_logits(model, params, x)
    module = to_torch(model, params)
    assert np.count_nonzero(module.fc1.weight.detach().numpy()) == params["layer5.w"].size
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), logits, atol=1e-5)
    dense_model, dense = from_onnx(to_onnx(model, params))
    assert dense_model.layers[5].density == 1.0
    np.testing.assert_allclose(_zskip_logits(dense_model, dense, x), logits, atol=1e-5)


def test_from_onnx_reads_pytorch_exporter_output(tmp_path, rng):
    """A file written by torch.onnx.export (Shape/Gather/Concat/Reshape for view, Gemm) imports."""
    torch, _ = _torch(), _onnx()
    torch.manual_seed(2)
    module = _torch_lenet5(torch)
    path = tmp_path / "torch_lenet5.onnx"
    torch.onnx.export(module, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "N"}})
    model, params = from_onnx(path, name="lenet5")
    assert model.layers == get_model("lenet5").layers
    x = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(_zskip_logits(model, params, x), module(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_from_onnx_matmul_add_and_reshape(rng):
    _onnx()
    from onnx import TensorProto, helper, numpy_helper
    w = rng.standard_normal((12, 3)).astype(np.float32)     # MatMul weight is (in, out)
    b = rng.standard_normal(3).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["x", "shape"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(np.array([0, -1], np.int64), "shape")])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ImportRefused, match="tensor 'x' feeds"):
        from_onnx(proto)                     # x feeds both Relu and Reshape: a branch
    del proto.graph.node[0]
    model, params = from_onnx(proto)
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(_zskip_logits(model, params, x), x.reshape(4, -1) @ w + b, atol=1e-5)


def test_torch_file_round_trip(trained_lenet5, tmp_path):
    torch = _torch()
    model, params, x, logits = trained_lenet5
    path = tmp_path / "lenet5.pt"
    save_torch_file(model, params, path)
    model2, params2 = load_model_file(path, input_shape=model.input_shape, name="lenet5")
    assert model2 == model and all(np.array_equal(params2[k], params[k]) for k in params)
    torch.save(to_torch(model, params).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_torch_file(tmp_path / "weights.pt")
    # classes beyond the layers zskip reads are not unpickled unless the caller trusts the file
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.GELU()), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="trust_pickle"):
        load_torch_file(tmp_path / "other.pt")
    assert isinstance(load_torch_file(tmp_path / "other.pt", trust_pickle=True)[1], torch.nn.GELU)
    with pytest.raises(ValueError, match="must end in .onnx, .pt or .pth"):
        load_model_file(tmp_path / "lenet5.h5")


# --------------------------------------------------------------------------- hls4ml
def test_hls4ml_float_agrees_with_zskip_and_fixed_is_stated(trained_lenet5, tmp_path):
    """hls4ml C simulation of the trained LeNet-5: >= 99 % of labels at float; ap_fixed<16,6> is stated."""
    _torch()
    model, params, x, logits = trained_lenet5
    labels = logits.argmax(1)
    hls_model = to_hls4ml(model, params, tmp_path / "float", precision="float32", part="xc7z020clg400-1")
    hls_model.compile()
    agree_float = float(np.mean(predict_hls4ml(hls_model, x).argmax(1) == labels))
    fixed = to_hls4ml(model, params, tmp_path / "fixed", precision="ap_fixed<16,6>", part="xc7z020clg400-1")
    fixed.compile()
    agree_fixed = float(np.mean(predict_hls4ml(fixed, x).argmax(1) == labels))
    print(f"hls4ml vs zskip float32 labels on {len(x)} mnist5k test images: float {agree_float:.4f}, "
          f"ap_fixed<16,6> {agree_fixed:.4f}")
    assert agree_float >= 0.99
    assert agree_fixed >= 0.9       # 16-bit fixed point keeps most labels; the exact figure is printed above


def test_hls4ml_precision_from_training_spec(tmp_path):
    pytest.importorskip("torch", reason=NO_EXTRA)
    from zskip.host.ip.precision import parse_precision
    spec = parse_precision("fixed16")
    types = hls4ml_precision(spec)
    assert types == {"weight": spec["wgt"], "bias": spec["wgt"], "result": spec["act"], "accum": spec["acc"]}
    assert set(hls4ml_precision("float32").values()) == {"float"}
    model = get_model("lenet5")
    hls_model = to_hls4ml(model, model.init_params(0), tmp_path / "prj", precision=spec, write=False)
    layer = {l.name: l for l in hls_model.get_layers()}["fc1"]
    assert str(layer.get_attr("weight_t").precision).replace(" ", "").startswith("fixed<16,4")
    assert str(layer.get_attr("result_t").precision).replace(" ", "").startswith("fixed<16,6")
    vivado = to_hls4ml(model, model.init_params(0), tmp_path / "v", backend="Vivado", write=False)
    assert vivado.config.get_config_value("Backend") == "Vivado"
    with pytest.raises(ValueError, match="io_parallel"):
        to_hls4ml(model, model.init_params(0), tmp_path / "p2", precision="float", io_type="io_parallel")
    with pytest.raises(ValueError, match="backend: must be one of"):
        to_hls4ml(model, model.init_params(0), tmp_path / "p3", backend="Quartus")
    with pytest.raises(ValueError, match="precision: act"):
        hls4ml_precision({"act": "int8", "wgt": "float", "acc": "float"})


# --------------------------------------------------------------------------- clear errors
def _refused(torch, module, shape=(1, 8, 8)):
    with pytest.raises(ImportRefused) as info:
        from_torch(module, shape)
    return str(info.value)


def test_unsupported_torch_layers_are_refused_naming_node_and_type():
    torch = _torch()
    nn = torch.nn
    cases = [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(), nn.Flatten(), nn.Linear(72, 2)), "'1' has type Dropout"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 2)), "type BatchNorm2d"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(18, 2)), "type AvgPool2d"),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 2), nn.Softmax(dim=1)), "type Softmax"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, groups=1, dilation=2), nn.Flatten(), nn.Linear(32, 2)), "dilation"),
        (nn.Sequential(nn.Conv2d(1, 2, (3, 1)), nn.Flatten(), nn.Linear(96, 2)), "differs per axis"),
        (nn.Sequential(nn.MaxPool2d(2, padding=1), nn.Flatten(), nn.Linear(25, 2)), "padding"),
        (nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(64, 2)), "ReLU on the network input"),
    ]
    for module, expected in cases:
        assert expected in _refused(torch, module.eval())

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 1, 3, padding=1), nn.Linear(64, 2)

        def forward(self, x):
            return self.fc((x + self.conv(x)).flatten(1))

    assert "residual" in _refused(torch, Residual())

    class FixedBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 2)

        def forward(self, x):
            return self.fc(x.view(1, -1))      # right for a batch of one only

    assert "zskip supports only flattening each sample" in _refused(torch, FixedBatch())


def test_shape_mismatches_are_clear_errors(trained_lenet5):
    torch = _torch()
    nn = torch.nn
    module = nn.Sequential(nn.Conv2d(1, 6, 5), nn.Flatten(), nn.Linear(400, 10))
    with pytest.raises(ImportRefused, match=r"input_shape: .*shape mismatch"):
        from_torch(module, (1, 28, 28))
    with pytest.raises(ValueError, match=r"input_shape: expected one sample's \(C, H, W\)"):
        from_torch(module, (28, 28))
    model, params, _, _ = trained_lenet5
    bad = dict(params, **{"layer5.w": params["layer5.w"][:, :100]})
    with pytest.raises(ValueError, match=r"params: layer5.w \(fc1\) has shape \(120, 100\)"):
        to_torch(model, bad)
    with pytest.raises(ValueError, match="params: model 'lenet5' needs entries"):
        to_onnx(model, {k: v for k, v in params.items() if k != "layer0.b"})


def test_onnx_refusals_name_node_and_op(trained_lenet5):
    _onnx()
    from onnx import helper
    model, params, _, _ = trained_lenet5
    proto = to_onnx(model, params)
    proto.graph.node[-1].output[0] = "fc3_out"
    proto.graph.node.append(helper.make_node("Softmax", ["fc3_out"], ["logits"], name="probs", axis=1))
    with pytest.raises(ImportRefused, match="node 'probs' has op type Softmax.*loss applies softmax"):
        from_onnx(proto)
    bad = to_onnx(model, params)     # fc1's weight made (120, 250) while its input has 256 features
    init = {t.name: t for t in bad.graph.initializer}["fc1.weight"]
    init.dims[1] = 250
    del init.float_data[:]
    init.raw_data = np.zeros((120, 250), np.float32).tobytes()
    with pytest.raises(ImportRefused, match=r"node 'fc1': weight has shape \(120, 250\).*\(shape mismatch\)"):
        from_onnx(bad)
    with pytest.raises(ValueError, match="cannot read it as an ONNX model"):
        from_onnx(__file__)


def test_missing_extras_say_which_extra_to_install(monkeypatch, tmp_path):
    for name in ("torch", "onnx"):
        monkeypatch.setitem(sys.modules, name, None)     # import of a None entry raises ImportError
    model = get_model("lenet5")
    params = model.init_params(0)
    calls = [lambda: from_torch(object(), (1, 28, 28)), lambda: to_torch(model, params),
             lambda: to_onnx(model, params), lambda: from_onnx(tmp_path / "m.onnx"),
             lambda: to_hls4ml(model, params, tmp_path / "prj")]
    for call in calls:
        with pytest.raises(MissingExtra, match=r"pip install 'zskip\[interop\]'"):
            call()


def test_zskip_imports_without_the_extra():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "import zskip.models.interop, zskip.host.cli\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_model_dict_round_trip():
    for model in [get_model(name) for name in MODELS] + [get_model("lenet5").with_density(0.5, seed=3)]:
        assert model_from_dict(json.loads(json.dumps(model_to_dict(model)))) == model
    with pytest.raises(ValueError, match="architecture: layers\\[0\\] has kind 'lstm'"):
        model_from_dict({"name": "x", "input_shape": [1, 4, 4], "layers": [{"kind": "lstm"}]})


# --------------------------------------------------------------------------- CLI
CLI_TINY = ["--data", "mnist5k", "--backend", "reference", "--epochs", "1", "--limit-train", "128",
            "--limit-test", "64", "--batch-size", "32", "--quiet"]


def _yaml_value(path, key: str) -> str:
    """The value of a top-level ``key: value`` line of hls4ml_config.yml."""
    lines = [l for l in path.read_text().splitlines() if l.startswith(f"{key}: ")]
    assert len(lines) == 1, (key, lines)
    return lines[0].split(": ", 1)[1]


def test_cli_init_from_and_export(tmp_path, capsys):
    torch, _ = _torch(), _onnx()
    from zskip.host.backends import make_backend
    from zskip.host.cli import main
    from zskip.models.checkpoint import checkpoint_model, load_checkpoint, save_checkpoint
    from zskip.models.datasets import load_dataset
    from zskip.models.train import train
    from zskip.overlay.boards import board
    torch.manual_seed(3)
    source = tmp_path / "mine.onnx"
    torch.onnx.export(_torch_lenet5(torch), (torch.zeros(1, 1, 28, 28),), str(source), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "N"}})
    ckpt_path = tmp_path / "run.npz"
    assert main(["train", "--init-from", str(source), "--checkpoint", str(ckpt_path)] + CLI_TINY) == 0
    ckpt = load_checkpoint(ckpt_path)
    model = checkpoint_model(ckpt)       # rebuilt from the stored architecture, not from a known name
    imported, init = from_onnx(source)
    assert model.layers == imported.layers and ckpt.config["init_from"] == str(source)
    # the run started from the file's weights: the same training through the API gives the same weights
    expected = train(make_backend("reference"), imported, load_dataset("mnist5k").subset(128, 64), epochs=1,
                     batch_size=32, quiet=True, init_params=init)
    assert all(np.array_equal(ckpt.params[k], expected.params[k]) for k in init)

    for fmt, out in (("onnx", tmp_path / "out.onnx"), ("torch", tmp_path / "out.pt")):
        assert main(["export", "--checkpoint", str(ckpt_path), "--to", fmt, str(out)]) == 0
        back, params = load_model_file(out, input_shape=model.input_shape)
        assert back.layers == model.layers and all(np.array_equal(params[k], ckpt.params[k]) for k in params)

    # hls4ml: the part comes from boards.ini, the types from the checkpoint's training precision
    assert main(["export", "--checkpoint", str(ckpt_path), "--to", "hls4ml", str(tmp_path / "hls"),
                 "--board", "kv260"]) == 0
    assert _yaml_value(tmp_path / "hls" / "hls4ml_config.yml", "Part") == board("kv260").part
    assert float(_yaml_value(tmp_path / "hls" / "hls4ml_config.yml", "ClockPeriod")) == board("kv260").clock_period_ns
    assert "weight: float" in (tmp_path / "hls" / "hls4ml_config.yml").read_text()
    ckpt.config["precision"] = "fixed16"
    save_checkpoint(ckpt_path, ckpt)
    assert main(["export", "--checkpoint", str(ckpt_path), "--to", "hls4ml", str(tmp_path / "hls16")]) == 0
    text = (tmp_path / "hls16" / "hls4ml_config.yml").read_text()
    assert _yaml_value(tmp_path / "hls16" / "hls4ml_config.yml", "Part") == board("pynq-z2").part
    assert "weight: ap_fixed<16,4,AP_RND,AP_SAT>" in text and "result: ap_fixed<16,6,AP_RND,AP_SAT>" in text
    capsys.readouterr()

    assert main(["train", "--init-from", str(source), "--model", "lenet5"] + CLI_TINY) == 2
    assert "--model and --init-from: give one" in capsys.readouterr().err
    assert main(["train", "--init-from", str(source), "--density", "0.5"] + CLI_TINY) == 2
    assert "--density: " in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(ckpt_path), "--to", "onnx", str(tmp_path / "x.onnx"),
                 "--precision", "fixed16"]) == 2
    assert "--precision: applies only to --to hls4ml" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(ckpt_path), "--to", "onnx", str(tmp_path / "no" / "x.onnx")]) == 2
    assert "OUT: directory" in capsys.readouterr().err
    assert main(["train", "--init-from", str(tmp_path / "missing.onnx")] + CLI_TINY) == 2
    assert "ONNX file not found" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(ckpt_path), "--to", "hls4ml", str(tmp_path / "h"),
                 "--board", "zedboard"]) == 2
    assert "board must be one of" in capsys.readouterr().err


def test_export_refuses_layers_it_cannot_write_by_name():
    pytest.importorskip("onnx")
    from zskip.models.networks import get_model
    model = get_model("resnet8")
    with pytest.raises(ValueError, match=r"bn1 \(batchnorm\) cannot be exported yet"):
        to_onnx(model, model.init_params(0), None)
