"""the paper code's second network, SimpleResNet4bit, as --arch simpleresnet4bit."""

import json
from pathlib import Path

import pytest
import torch

import suite
from suite.cli import main as cli_main
from suite.errors import UserError
from suite.spec import ARCH_NAMES
from suite.methods import get_method
from suite.model import ARCHS, SimpleResNet4bit, count_parameters, layer_macs_per_image, quant_layers
from suite.train import TrainConfig, build_model, load_checkpoint, model_from_checkpoint, train


def test_parameter_count_is_the_codes():
    assert count_parameters(SimpleResNet4bit(10)) == 73_178  # docs/method.md.7
    # 100 classes: only the head grows, by 90 outputs of 64 weights + 1 bias
    assert count_parameters(SimpleResNet4bit(100)) == 73_178 + 90 * 65


def test_layers_strides_and_macs():
    model = SimpleResNet4bit(10)
    layers = quant_layers(model)
    assert [name for name, _ in layers] == [f"conv{i}" for i in range(1, 7)] + ["fc"]
    assert [m.stride[0] for _, m in layers[:6]] == [1, 1, 2, 1, 2, 1]
    # conv1 3x16x9 at 32x32; conv3 16x32x9 at 16x16 (its stride halves the output); fc 64x10
    macs = layer_macs_per_image(model)
    assert macs[0] == 3 * 16 * 9 * 32 * 32 and macs[2] == 16 * 32 * 9 * 16 * 16 and macs[-1] == 640


def test_identity_residual_around_the_second_conv():
    """Zeroing conv2's BN (gamma = beta = 0) makes the second unit relu(0) + h = h: the output is then
    the same as a network whose second unit is skipped, which only an identity residual gives."""
    torch.manual_seed(0)
    model = SimpleResNet4bit(10).eval()
    with torch.no_grad():
        model.bn2.weight.zero_(), model.bn2.bias.zero_()
    x = torch.randn(2, 3, 32, 32)
    h = model._unit(1, x)
    out = h
    for i in range(3, 7):
        out = model._unit(i, out)
    expected = model.fc(torch.flatten(model.avgpool(out), 1))
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_every_method_builds_and_runs_on_it():
    x = torch.randn(4, 3, 32, 32)
    from suite.methods import METHODS

    for name in METHODS:
        torch.manual_seed(0)
        model, _ = build_model(get_method(name), 10, "simpleresnet4bit")
        model.train()
        out = model(x)
        assert out.shape == (4, 10) and torch.isfinite(out).all(), name
        out.sum().backward()


def test_unknown_arch_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown --arch 'resnet50'; known: vgg4bit, simpleresnet4bit"):
        train(TrainConfig(arch="resnet50", synthetic=True, out=str(tmp_path / "r")))
    assert cli_main(["train", "--arch", "resnet50", "--synthetic", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown --arch 'resnet50'" in err and "\n" not in err


@pytest.mark.parametrize("method", ["fp32", "tathe4"])
def test_trains_through_the_cli_and_checkpoint_records_the_arch(tmp_path, method):
    out = tmp_path / "run"
    assert cli_main(["train", "--arch", "simpleresnet4bit", "--method", method, "--synthetic", "--subset", "128",
                     "--epochs", "1", "--batch-size", "64", "--threads", "1", "--out", str(out)]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["arch"] == {"name": "simpleresnet4bit", "num_classes": 10}
    assert state["config"]["arch"] == "simpleresnet4bit"
    model, _, _ = model_from_checkpoint(out / "checkpoint.pt")
    assert isinstance(model, SimpleResNet4bit) and not model.training


def test_resume_refuses_another_arch(tmp_path):
    config = TrainConfig(method="fp32", epochs=1, threads=1, synthetic=True, subset=64, batch_size=64,
                         out=str(tmp_path / "run"), arch="simpleresnet4bit")
    train(config, log=lambda *a: None)
    with pytest.raises(UserError, match="arch was 'simpleresnet4bit', this call asks for 'vgg4bit'"):
        train(TrainConfig(**{**config.__dict__, "arch": "vgg4bit", "epochs": 2, "resume": True}), log=lambda *a: None)


def test_checkpoint_of_an_unknown_arch_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"model": {}, "arch": {"name": "alexnet", "num_classes": 10}}, path)
    with pytest.raises(UserError, match="architecture 'alexnet', expected one of vgg4bit, simpleresnet4bit"):
        load_checkpoint(path)
    assert set(ARCHS) == {"vgg4bit", "simpleresnet4bit"}


def test_every_list_of_network_names_is_the_registry_s():
    """The torch-free names planning parents check against, and the bench result schema's, are model.ARCHS."""
    assert tuple(ARCHS) == ARCH_NAMES
    schema = json.loads((Path(suite.__file__).parent / "result_schema.json").read_text())
    enums = [node["enum"] for node in _nodes(schema) if isinstance(node, dict) and "vgg4bit" in node.get("enum", [])]
    assert len(enums) == 2 and all(enum == list(ARCH_NAMES) for enum in enums)  # the bench's and its scaling plan's


def _nodes(tree):
    yield tree
    for child in (tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else ()):
        yield from _nodes(child)


# --- ONNX export -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["tathe4", "tathe4-rangebn"])
def test_exports_to_onnx_and_agrees_with_pytorch(tmp_path, method):
    import json

    from suite.verify import VerifyConfig, verify

    run = tmp_path / "run"
    train(TrainConfig(method=method, arch="simpleresnet4bit", synthetic=True, subset=128, epochs=1, batch_size=64,
                      threads=1, out=str(run)), log=lambda *a: None)
    onnx_dir = tmp_path / "onnx"
    assert cli_main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(onnx_dir),
                     "--calibration-images", "64", "--threads", "1"]) == 0
    verify(VerifyConfig(str(run / "checkpoint.pt"), str(onnx_dir), threads=1, limit=100, agreement_images=20,
                        speed_rounds=1, latency_runs=1, throughput_runs=1, profile_runs=1), log=lambda *a: None)
    report = json.loads((onnx_dir / "verify.json").read_text())
    files = report["files"]
    for name in ("fp32", "int4"):
        assert files[name]["optimized_node_types"]["Add"] == 1 and files[name]["optimized_node_types"]["GlobalAveragePool"] == 1
    # int8: every conv and the head fused into integer kernels around the residual and the pooling
    assert files["int8"]["optimized_node_types"]["QLinearConv"] == 6 and files["int8"]["optimized_node_types"]["QGemm"] == 1
    import onnx

    model = onnx.load(onnx_dir / "int4.onnx")
    assert json.loads(model.metadata_props[0].value)["arch"] == "simpleresnet4bit"
    assert model.graph.name == "simpleresnet4bit"


def test_fp32_onnx_of_range_bn_vgg_matches_pytorch():
    """The Range BN -> BatchNormalization(var = (scale + eps)^2, epsilon 0) rewrite, on VGG4bit with
    non-trivial running statistics: the float file computes the PyTorch model's logits."""
    import onnxruntime as ort

    from suite.export import build_fp32, network_stages

    torch.manual_seed(0)
    model, _ = build_model(get_method("tathe4-rangebn"), 10)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_scale"):
                m.running_mean.uniform_(-0.5, 0.5), m.running_scale.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
    model.eval()
    blob = build_fp32(network_stages(model, "tathe4-rangebn"), {"method": "tathe4-rangebn"}).SerializeToString()
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    x = torch.randn(4, 3, 32, 32)
    (logits,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert abs(logits - expected).max() < 1e-3 * max(1.0, abs(expected).max())


@pytest.mark.parametrize("method", ["sbm8", "fractrain-dfq", "fractrain-pfq"])
def test_export_refuses_the_other_new_methods_in_one_line(tmp_path, method, capsys):
    run = tmp_path / "run"
    model, _ = build_model(get_method(method), 10, "simpleresnet4bit")
    run.mkdir()
    torch.save({"arch": {"name": "simpleresnet4bit", "num_classes": 10}, "method": method, "epoch": 1,
                "model": model.state_dict(), "config": {"synthetic": True, "subset": 64, "seed": 0}},
               run / "checkpoint.pt")
    assert cli_main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot be exported" in err and f"method '{method}'" in err
