"""ONNX export (fp32/int4/int8) and onnxruntime verification of a briefly trained synthetic model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from suite.cli import main
from suite.export import int4_initializer, pack_int4, unpack_int4
from suite.methods import get_method, symmetric_codes
from suite.model import quant_layers
from suite.train import TrainConfig, build_model, model_from_checkpoint, train
from suite.verify import VerifyConfig, verify


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, onnx dir, verify.json) of a 1-epoch synthetic tathe4 run."""
    root = tmp_path_factory.mktemp("export")
    config = TrainConfig(method="tathe4", synthetic=True, subset=256, epochs=1, threads=2, out=str(root / "run"))
    train(config, log=lambda *_: None)
    checkpoint, onnx_dir = root / "run" / "checkpoint.pt", root / "onnx"
    args = ["export", "--checkpoint", str(checkpoint), "--out", str(onnx_dir), "--calibration-images", "64"]
    assert main(args + ["--threads", "2"]) == 0
    quick = VerifyConfig(
        str(checkpoint), str(onnx_dir), threads=2, limit=100, agreement_images=50, speed_rounds=1, latency_runs=1
    )
    verify(quick, log=lambda *_: None)
    return checkpoint, onnx_dir, json.loads((onnx_dir / "verify.json").read_text())


def _save_checkpoint(path, method: str, num_classes: int = 10, arch: str = "vgg4bit") -> None:
    model, _ = build_model(get_method(method), num_classes)
    config = {"dataset": "cifar10", "synthetic": True, "subset": 64, "seed": 0}
    state = {
        "arch": {"name": arch, "num_classes": num_classes},
        "method": method,
        "epoch": 1,
        "model": model.state_dict(),
        "config": config,
    }
    torch.save(state, path)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("q4bench: error:"), err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------------
# int4 packing


def test_pack_int4_layout_and_roundtrip():
    # ONNX layout: element 0 in the low nibble, element 1 in the high nibble, two's complement.
    assert pack_int4(np.array([1, -1], dtype=np.int8)) == bytes([0xF1])
    assert pack_int4(np.array([-8, 7, 3], dtype=np.int8)) == bytes([0x78, 0x03])
    codes = np.random.default_rng(0).integers(-8, 8, size=(5, 3, 3, 3)).astype(np.int8)  # odd element count
    packed = pack_int4(codes)
    assert len(packed) == (codes.size + 1) // 2
    assert np.array_equal(unpack_int4(packed, codes.shape), codes)
    with pytest.raises(ValueError):
        pack_int4(np.array([8], dtype=np.int8))


def test_int4_initializer_read_by_onnx_and_onnxruntime():
    """Our packing agrees with onnx's own reader and with onnxruntime's DequantizeLinear."""
    codes = np.random.default_rng(1).integers(-7, 8, size=(7, 5)).astype(np.int8)
    tensor = int4_initializer("w", codes)
    assert tensor.raw_data and not tensor.int32_data and len(tensor.raw_data) == 18
    assert np.array_equal(onnx.numpy_helper.to_array(tensor).astype(np.int8), codes)
    scale = np.float32(0.0123)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["y"])],
        "dq",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7, 5])],
        [tensor, onnx.numpy_helper.from_array(np.array(scale), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    assert np.array_equal(y, codes.astype(np.float32) * scale)


# ---------------------------------------------------------------------------------------------
# Export and verify end to end


def test_export_writes_three_valid_files(exported):
    _, onnx_dir, _ = exported
    for name in ("fp32", "int4", "int8"):
        model = onnx.load(str(onnx_dir / f"{name}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == 21
    int4 = onnx.load(str(onnx_dir / "int4.onnx"))
    kinds = {t.name: t.data_type for t in int4.graph.initializer}
    weights = [n for n, k in kinds.items() if k == TensorProto.INT4]
    assert len(weights) == 8  # 6 convs + 2 linears
    assert not any(k == TensorProto.FLOAT and n.endswith(".weight") for n, k in kinds.items())
    dq_outputs = {n.output[0] for n in int4.graph.node if n.op_type == "DequantizeLinear"}
    consumers = [n for n in int4.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(consumers) == 8 and all(n.input[1] in dq_outputs for n in consumers)
    # Each file names the code that exported it.
    meta = json.loads(next(p.value for p in int4.metadata_props if p.key == "q4bench"))
    assert meta["provenance"]["code"]["commit"] and meta["provenance"]["versions"]["torch"]


def test_reexport_removes_the_verify_json_of_the_replaced_files(exported, tmp_path, capsys):
    checkpoint, onnx_dir, _ = exported
    again = tmp_path / "onnx"
    shutil.copytree(onnx_dir, again)
    assert (again / "verify.json").exists()
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(again), "--calibration-images", "64",
                 "--threads", "2"]) == 0
    assert not (again / "verify.json").exists() and all((again / f"{n}.onnx").exists() for n in ("fp32", "int4", "int8"))
    assert "removed the verify.json there, which checked the replaced files: rerun verify-onnx" in capsys.readouterr().out


def test_int4_codes_roundtrip_exactly(exported):
    """The codes read back from int4.onnx equal the PyTorch quantizer's codes, layer by layer."""
    checkpoint, onnx_dir, _ = exported
    model, _, _ = model_from_checkpoint(checkpoint)
    stored = {t.name: t for t in onnx.load(str(onnx_dir / "int4.onnx")).graph.initializer}
    for name, layer in quant_layers(model):
        codes, _ = symmetric_codes(layer.weight, layer.quantizer.levels)
        tensor = stored[f"{name}.weight_int4"]
        assert np.array_equal(unpack_int4(tensor.raw_data, tuple(tensor.dims)), codes.numpy())
        assert np.array_equal(layer.quantizer.codes(layer.weight).numpy(), codes.numpy())


def test_verify_json(exported):
    _, _, report = exported
    files = report["files"]
    assert report["test_images"] == 100 and report["threads"] == 2
    assert report["provenance"]["code"]["commit"] and report["provenance"]["written_at"]
    for name in ("fp32", "int4", "int8"):
        entry = files[name]
        for key in ("bytes", "top1_agreement", "max_abs_logit_diff", "test_acc", "latency_b1_ms", "throughput_b64"):
            assert entry[key] > 0 or key in ("max_abs_logit_diff", "test_acc"), (name, key)
        assert entry["optimizations_off_vs_all_on"]["images"] == 50
    for name in ("fp32", "int4"):  # the same float weights as PyTorch: only summation order differs
        assert files[name]["top1_agreement"] == 100.0
        assert files[name]["max_abs_logit_diff"] < 1e-3
    int4 = files["int4"]
    assert int4["codes_identical_to_pytorch"] is True
    assert all(2 <= n <= 15 for n in int4["distinct_codes"].values()) and len(int4["distinct_codes"]) == 8
    assert all(v["packed_in_raw_data"] for v in int4["codes"].values())
    assert report["size_ratio_fp32_int4"] >= 7.8
    assert report["targets"]["size_ratio_ge_7.8"] is True
    # int8: every conv and gemm fused into integer kernels, no float Conv/Gemm left
    types = files["int8"]["optimized_node_types"]
    assert types.get("QLinearConv") == 6 and types.get("QGemm") == 2, types
    assert "Conv" not in types and "Gemm" not in types and "DequantizeLinear" not in types, types
    assert files["int8"]["codes_identical_to_pytorch_up_to_channel_sign"] is True
    assert files["int8"]["activation_type"] == "uint8"
    # Per-layer kernel times: every conv and linear found by name in each file's optimized graph.
    layers = report["layer_times_b64"]
    names = [f"features.{i}" for i in (0, 3, 7, 10, 14, 17)] + ["classifier.0", "classifier.4"]
    for name in ("fp32", "int4", "int8"):
        times = layers["ms_per_run"][name]
        assert list(times) == names + ["other", "total"], (name, list(times))
        assert all(times[layer] > 0 for layer in names), (name, times)
        assert times["total"] == pytest.approx(sum(v for k, v in times.items() if k != "total"))
    speedups = layers["int8_speedup_per_layer"]
    assert speedups["total"] == pytest.approx(layers["ms_per_run"]["fp32"]["total"] / layers["ms_per_run"]["int8"]["total"])


def test_nodes_are_attributed_to_layers_by_name():
    from suite.verify import layer_of

    names = ["features.0", "features.3", "classifier.4"]
    assert layer_of("features.3.relu_nchwc", "Conv", names) == "features.3"  # fp32, fused with its ReLU
    assert layer_of("features.3.out/Conv_token_4", "QLinearConv", names) == "features.3"  # int8
    assert layer_of("features.3.pool/MaxPool_token_20", "NhwcMaxPool", names) == "other"
    assert layer_of("logits/Gemm", "QGemm", names) == "classifier.4"
    assert layer_of("Transpose_token_25", "Transpose", names) == "other"
    assert layer_of("features.99.out", "Conv", names) == "other"


# ---------------------------------------------------------------------------------------------
# Bad input: one line, no traceback


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_onnx_is_one_line_error(exported, tmp_path, capsys, damage):
    checkpoint, onnx_dir, _ = exported
    broken = tmp_path / "onnx"
    shutil.copytree(onnx_dir, broken)
    target = broken / "int4.onnx"
    blob = target.read_bytes()
    target.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else b"\x08\xff not a model" * 50)
    assert main(["verify-onnx", "--checkpoint", str(checkpoint), "--onnx", str(broken), "--limit", "10"]) == 2
    assert "int4.onnx" in _one_line_error(capsys)


def test_missing_onnx_file_is_one_line_error(exported, tmp_path, capsys):
    checkpoint, _, _ = exported
    assert main(["verify-onnx", "--checkpoint", str(checkpoint), "--onnx", str(tmp_path)]) == 2
    assert "fp32.onnx" in _one_line_error(capsys)


def test_checkpoint_of_another_architecture(exported, tmp_path, capsys):
    _, onnx_dir, _ = exported
    other = tmp_path / "resnet.pt"
    _save_checkpoint(other, "tathe4", arch="resnet18")
    assert main(["export", "--checkpoint", str(other), "--out", str(tmp_path / "o")]) == 2
    assert "architecture" in _one_line_error(capsys)
    assert main(["verify-onnx", "--checkpoint", str(other), "--onnx", str(onnx_dir)]) == 2
    assert "architecture" in _one_line_error(capsys)
    # a known architecture whose weights are another's (VGG4bit weights labelled simpleresnet4bit)
    _save_checkpoint(other, "tathe4", arch="simpleresnet4bit")
    assert main(["export", "--checkpoint", str(other), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint weights do not fit simpleresnet4bit" in _one_line_error(capsys)


def test_checkpoint_of_another_shape_does_not_verify(exported, tmp_path, capsys):
    _, onnx_dir, _ = exported
    other = tmp_path / "cifar100.pt"
    _save_checkpoint(other, "tathe4", num_classes=100)
    assert main(["verify-onnx", "--checkpoint", str(other), "--onnx", str(onnx_dir)]) == 2
    assert "does not match" in _one_line_error(capsys)


@pytest.mark.parametrize("method", ["fp32", "luq4"])
def test_checkpoint_without_symmetric_4bit_weights_is_refused(tmp_path, capsys, method):
    """FP32 has no codes; LUQ also quantizes activations, which none of the files reproduce."""
    path = tmp_path / f"{method}.pt"
    _save_checkpoint(path, method)
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "o")]) == 2
    assert f"'{method}'" in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()
