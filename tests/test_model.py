import torch

from suite.methods import get_method
from suite.model import VGG4bit, count_parameters, forward_macs_per_image, quant_layers
from suite.train import build_model


def test_parameter_counts_match_the_paper():
    assert count_parameters(VGG4bit(10)) == 3_251_018
    assert count_parameters(VGG4bit(100)) == 3_297_188  # the log's count; the paper's 3,301,468 is wrong


def test_quantized_weights_are_all_conv_and_linear_weights():
    model = VGG4bit(10)
    layers = quant_layers(model)
    assert len(layers) == 8  # 6 convs + 2 linears, first and last included
    assert sum(m.weight.numel() for _, m in layers) == 3_246_784
    assert all(m.bias is not None for _, m in layers)  # convs keep their bias


def test_init_follows_the_paper():
    torch.manual_seed(0)
    model = VGG4bit(10)
    first = model.features[0]
    assert torch.all(first.bias == 0)
    assert abs(first.weight.std().item() - (2 / 27) ** 0.5) < 0.03
    fc = model.classifier[0]
    assert abs(fc.weight.std().item() - (1 / 4096) ** 0.5) < 0.001
    assert isinstance(model.classifier[1], torch.nn.BatchNorm1d)


def test_forward_shapes_and_macs():
    model, _ = build_model(get_method("tathe4"), 10)
    model.eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert abs(forward_macs_per_image(model) - 154.9e6) / 154.9e6 < 0.01  # docs/method.md


def test_eval_forward_uses_quantized_weights():
    model, _ = build_model(get_method("tathe4"), 10)
    fp32 = VGG4bit(10)
    fp32.load_state_dict(model.state_dict())
    model.eval(), fp32.eval()
    x = torch.randn(4, 3, 32, 32)
    assert not torch.allclose(model(x), fp32(x))


def test_set_memory_format_changes_the_layout_not_the_network():
    """A speed trial's NCHW variant: the same parameter values, inputs and weights really in NCHW, and the
    same logits up to the kernels' rounding (the default stays channels_last)."""
    from suite.model import set_memory_format

    for arch in ("vgg4bit", "simpleresnet4bit"):
        torch.manual_seed(0)
        model, _ = build_model(get_method("tathe4"), 10, arch)
        model.eval()
        x = torch.randn(4, 3, 32, 32)
        default = model(x)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
        set_memory_format(model, torch.contiguous_format)
        assert conv.weight.is_contiguous()
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        torch.testing.assert_close(model(x), default, rtol=1e-4, atol=1e-4)
        fresh, _ = build_model(get_method("tathe4"), 10, arch)
        assert fresh.memory_format == torch.channels_last  # one instance switched, not the class
