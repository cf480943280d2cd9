"""Tests of cascade.networks against nnU-Net's network code and reference-numbers.md section 1.

Full-size networks are built and run on the ``meta`` device (shapes and FLOPs, no memory, no
arithmetic); numerical comparisons use tiny networks on the CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cascade.networks import ResEncUNet, load_nnunet_state_dict, localizer_resenc_unet, segmenter_resenc_unet
from cascade.networks.blocks import ResidualBlock
from cascade.networks.nnunet_weights import nnunet_key_to_cascade

# reference-numbers.md section 1: spatial shapes are (z, y, x) there, (x, y, z) here.
LOCALIZER_PATCH_ZYX = (28, 256, 224)
SEGMENTER_PATCH_ZYX = (20, 256, 256)
LOCALIZER_DS_ZYX = [(28, 256, 224), (28, 128, 112), (14, 64, 56), (7, 32, 28), (7, 16, 14)]
SEGMENTER_DS_ZYX = [(20, 256, 256), (20, 128, 128), (20, 64, 64), (10, 32, 32), (5, 16, 16), (5, 8, 8)]

# Small configurations for numerical comparisons with nnU-Net, per-axis values in input axis order.
TINY_ISOTROPIC = dict(
    features_per_stage=(4, 8, 8, 12),
    kernel_sizes=3,
    strides=(1, 2, 2, 2),
    n_blocks_per_stage=(1, 2, 1, 1),
    n_conv_per_stage_decoder=1,
    dropout=0.0,
)
TINY_ANISOTROPIC_DROPOUT = dict(
    features_per_stage=(4, 8, 12, 12),
    kernel_sizes=((3, 3, 1), (3, 3, 1), 3, 3),
    strides=(1, (2, 2, 1), 2, (2, 2, 1)),
    n_blocks_per_stage=(1, 2, 2, 1),
    n_conv_per_stage_decoder=(2, 1, 1),
    dropout=0.5,
)


def xyz(shape_zyx):
    return tuple(reversed(shape_zyx))


def on_meta(factory, **kwargs) -> ResEncUNet:
    with torch.device("meta"):
        return factory(**kwargs).eval()


@pytest.fixture(scope="module")
def localizer_meta() -> ResEncUNet:
    return on_meta(localizer_resenc_unet)


@pytest.fixture(scope="module")
def segmenter_meta() -> ResEncUNet:
    return on_meta(segmenter_resenc_unet)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_flops(model: nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops()


def nnunet_network(in_channels: int, out_channels: int, config: dict, deep_supervision: bool) -> nn.Module:
    """nnU-Net's ResidualEncoderUNet with the paper's operators and random weights (norms included)."""
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    dropout = config["dropout"]
    network = unet.ResidualEncoderUNet(
        input_channels=in_channels,
        n_stages=len(config["features_per_stage"]),
        features_per_stage=config["features_per_stage"],
        conv_op=nn.Conv3d,
        kernel_sizes=config["kernel_sizes"],
        strides=config["strides"],
        n_blocks_per_stage=config["n_blocks_per_stage"],
        num_classes=out_channels,
        n_conv_per_stage_decoder=config["n_conv_per_stage_decoder"],
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=nn.Dropout3d if dropout > 0 else None,
        dropout_op_kwargs={"p": dropout} if dropout > 0 else None,
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"negative_slope": 1e-2, "inplace": True},
        deep_supervision=deep_supervision,
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return network.eval()


def max_abs_diff(a, b) -> float:
    if isinstance(a, torch.Tensor):
        a, b = [a], [b]
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape
    return max((u - v).abs().max().item() for u, v in zip(a, b))


# --- reference numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, features, expected",
    [
        (localizer_resenc_unet, None, 11_345_866),
        (localizer_resenc_unet, (32, 64, 128, 128, 128, 128), 23_131_530),
        (localizer_resenc_unet, (32, 64, 128, 256, 320, 320), 101_529_994),
        (segmenter_resenc_unet, None, 140_404_440),
    ],
    ids=["localizer", "cap128", "cap320", "segmenter"],
)
def test_parameter_counts(factory, features, expected):
    kwargs = {} if features is None else {"features_per_stage": features}
    assert n_parameters(on_meta(factory, **kwargs)) == expected


@pytest.mark.parametrize(
    "network, patch_zyx, expected",
    [
        ("localizer_meta", (28, 256, 224), 464_412_999_680),
        ("segmenter_meta", (20, 256, 256), 1_606_114_344_960),
        ("segmenter_meta", (16, 192, 192), 722_751_455_232),
    ],
)
def test_flops(network, patch_zyx, expected, request):
    model = request.getfixturevalue(network)
    model.deep_supervision = False
    x = torch.empty(1, 1, *xyz(patch_zyx), device="meta")
    assert conv_flops(model, x) == expected


@pytest.mark.parametrize(
    "network, out_channels, patch_zyx, ds_zyx",
    [
        ("localizer_meta", 2, LOCALIZER_PATCH_ZYX, LOCALIZER_DS_ZYX),
        ("segmenter_meta", 4, SEGMENTER_PATCH_ZYX, SEGMENTER_DS_ZYX),
    ],
)
def test_output_shapes(network, out_channels, patch_zyx, ds_zyx, request):
    model = request.getfixturevalue(network)
    x = torch.empty(1, 1, *xyz(patch_zyx), device="meta")
    model.deep_supervision = False
    with torch.no_grad():
        assert model(x).shape == (1, out_channels, *xyz(patch_zyx))
        model.deep_supervision = True
        outputs = model.train()(x)  # deep-supervision lists come in training mode only
    model.deep_supervision = False
    model.eval()
    assert isinstance(outputs, list)
    assert [tuple(o.shape) for o in outputs] == [(1, out_channels, *xyz(s)) for s in ds_zyx]


def test_presets_use_xyz_axis_order(localizer_meta, segmenter_meta):
    # The paper's (z, y, x) kernel (1, 3, 3) and stride (1, 2, 2) are (3, 3, 1) and (2, 2, 1) here.
    assert localizer_meta.encoder.stem.conv.kernel_size == (3, 3, 1)
    assert localizer_meta.encoder.stages[1][0].conv1.conv.stride == (2, 2, 1)
    assert localizer_meta.encoder.stages[2][0].conv1.conv.kernel_size == (3, 3, 3)
    assert segmenter_meta.encoder.stages[1][0].conv1.conv.kernel_size == (3, 3, 1)
    assert localizer_meta.size_divisors == [32, 32, 4]
    assert segmenter_meta.size_divisors == [64, 64, 4]
    assert isinstance(localizer_meta.encoder.stem.dropout, nn.Dropout3d)
    assert localizer_meta.encoder.stem.dropout.p == 0.5
    assert not any(isinstance(m, nn.Dropout3d) for m in segmenter_meta.modules())


# --- equality with nnU-Net's ResidualEncoderUNet -------------------------------------------------


@pytest.mark.parametrize("deep_supervision", [False, True], ids=["ds_off", "ds_on"])
@pytest.mark.parametrize(
    "config", [TINY_ISOTROPIC, TINY_ANISOTROPIC_DROPOUT], ids=["isotropic", "anisotropic_dropout"]
)
def test_outputs_equal_nnunet(config, deep_supervision):
    # Deep supervision lists come in training mode only; there dropout draws from the global RNG,
    # so both networks run under the same seed.
    reference = nnunet_network(1, 3, config, deep_supervision).train(deep_supervision)
    ours = ResEncUNet(1, 3, deep_supervision=deep_supervision, **config).train(deep_supervision)
    load_nnunet_state_dict(ours, reference.state_dict())
    x = torch.randn(2, 1, 32, 32, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(2)
        expected = reference(x)
        torch.manual_seed(2)
        actual = ours(x)
    assert isinstance(actual, list) == deep_supervision
    if deep_supervision:
        assert len(actual) == len(config["features_per_stage"]) - 1
        assert actual[0].shape == (2, 3, 32, 32, 8)  # full resolution first, as nnU-Net's
    assert max_abs_diff(expected, actual) < 1e-4


def test_dropout_placed_as_in_nnunet():
    # In train mode Dropout3d draws from the global RNG: equal outputs under the same seed need
    # the same dropout layers, with the same shapes, drawn in the same order.
    reference = nnunet_network(1, 3, TINY_ANISOTROPIC_DROPOUT, True).train()
    ours = ResEncUNet(1, 3, deep_supervision=True, **TINY_ANISOTROPIC_DROPOUT).train()
    load_nnunet_state_dict(ours, reference.state_dict())
    x = torch.randn(1, 1, 32, 32, 8, generator=torch.Generator().manual_seed(7))
    outputs = []
    with torch.no_grad():
        for model in (reference, ours):
            torch.manual_seed(8)
            outputs.append(model(x))
        torch.manual_seed(9)
        outputs.append(ours(x))
    assert max_abs_diff(outputs[0], outputs[1]) < 1e-4
    assert max_abs_diff(outputs[1], outputs[2]) > 1e-2  # dropout is active


def test_load_checkpoint_dict_with_wrapper_prefixes():
    reference = nnunet_network(1, 2, TINY_ISOTROPIC, False)
    checkpoint = {
        "network_weights": {f"module._orig_mod.{k}": v for k, v in reference.state_dict().items()},
        "trainer_name": "nnUNetTrainer",
    }
    ours = ResEncUNet(1, 2, **TINY_ISOTROPIC).eval()
    load_nnunet_state_dict(ours, checkpoint)
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert max_abs_diff(reference(x), ours(x)) < 1e-4


def test_load_zyx_checkpoint_into_xyz_network():
    zyx_config = dict(TINY_ANISOTROPIC_DROPOUT)
    for key in ("kernel_sizes", "strides"):
        zyx_config[key] = [v if isinstance(v, int) else tuple(reversed(v)) for v in zyx_config[key]]
    reference = nnunet_network(1, 3, zyx_config, False)
    ours = ResEncUNet(1, 3, **TINY_ANISOTROPIC_DROPOUT).eval()
    with pytest.raises(ValueError, match="reverse_spatial_axes=True"):
        load_nnunet_state_dict(ours, reference.state_dict())
    load_nnunet_state_dict(ours, reference.state_dict(), reverse_spatial_axes=True)
    x_xyz = torch.randn(1, 1, 32, 32, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected_zyx = reference(x_xyz.permute(0, 1, 4, 3, 2))
        actual_xyz = ours(x_xyz)
    assert max_abs_diff(expected_zyx.permute(0, 1, 4, 3, 2), actual_xyz) < 1e-4


def test_load_reports_missing_unexpected_and_mismatched_keys():
    state = dict(nnunet_network(1, 3, TINY_ISOTROPIC, False).state_dict())
    del state["encoder.stages.1.blocks.0.conv1.conv.weight"]
    state["encoder.extra.weight"] = torch.zeros(1)
    ours = ResEncUNet(1, 5, **TINY_ISOTROPIC)  # 5 classes: every head's shape differs
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(ValueError) as error:
        load_nnunet_state_dict(ours, state)
    message = str(error.value)
    assert "missing keys ['encoder.stages.1.0.conv1.conv.weight']" in message
    assert "unexpected keys ['encoder.extra.weight']" in message
    assert "decoder.seg_layers.0.weight: checkpoint (3, 8, 1, 1, 1), model (5, 8, 1, 1, 1)" in message
    assert "reverse_spatial_axes" not in message
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())


@pytest.mark.parametrize(
    "nnunet_key, ours",
    [
        ("encoder.stem.convs.0.conv.weight", "encoder.stem.conv.weight"),
        ("encoder.stem.convs.0.all_modules.2.bias", None),
        ("encoder.stages.3.blocks.5.skip.1.norm.weight", "encoder.stages.3.5.skip.1.norm.weight"),
        ("decoder.encoder.stages.0.blocks.0.conv1.conv.bias", None),
        ("decoder.stages.2.convs.0.norm.bias", "decoder.stages.2.0.norm.bias"),
        ("decoder.transpconvs.0.weight", "decoder.transpconvs.0.weight"),
        ("_orig_mod.decoder.seg_layers.4.bias", "decoder.seg_layers.4.bias"),
        ("module.encoder.stages.0.blocks.0.conv2.norm.weight", "encoder.stages.0.0.conv2.norm.weight"),
    ],
)
def test_nnunet_key_mapping(nnunet_key, ours):
    assert nnunet_key_to_cascade(nnunet_key) == ours


# --- deep supervision, initialisation, export ----------------------------------------------------


def test_state_dict_does_not_depend_on_deep_supervision():
    training = ResEncUNet(1, 3, deep_supervision=True, **TINY_ISOTROPIC)
    inference = ResEncUNet(1, 3, deep_supervision=False, **TINY_ISOTROPIC).eval()
    inference.load_state_dict(training.state_dict(), strict=True)
    x = torch.randn(1, 1, 32, 32, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = inference(x)
        deep = training.train()(x)  # no dropout in this config: train and eval differ only in the list
        evaluated = training.eval()(x)
        training.deep_supervision = False
        toggled = training.train()(x)
    assert isinstance(deep, list)
    assert all(isinstance(t, torch.Tensor) for t in (logits, evaluated, toggled))
    assert torch.equal(logits, deep[0])
    assert torch.equal(evaluated, deep[0])
    assert torch.equal(toggled, deep[0])


def test_nnunet_initialisation():
    torch.manual_seed(5)
    model = ResEncUNet(1, 3, (32, 64), 3, (1, 2), 2, 1)
    gain = math.sqrt(2.0 / (1 + 1e-2**2))
    checked = 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            weight = module.weight
            if module.bias is not None:
                assert torch.count_nonzero(module.bias) == 0, name
            if weight.numel() >= 8000:
                # kaiming_normal_ fan_in: dim 1 times the kernel volume (also for transposed convs)
                expected_std = gain / math.sqrt(weight.shape[1] * math.prod(weight.shape[2:]))
                assert weight.std().item() == pytest.approx(expected_std, rel=0.05), name
                assert abs(weight.mean().item()) < 0.05 * expected_std, name
                checked += 1
    assert checked >= 5
    big = model.encoder.stages[1][1].conv2.conv.weight  # 64 x 64 x 27 weights
    assert big.std().item() == pytest.approx(gain / math.sqrt(64 * 27), rel=0.02)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 4
    for block in blocks:  # the main path's last norm starts at zero, nnU-Net's residual init
        assert torch.count_nonzero(block.conv2.norm.weight) == 0
        assert torch.count_nonzero(block.conv2.norm.bias) == 0
        assert torch.all(block.conv1.norm.weight == 1)


@pytest.fixture
def tiny_localizer() -> ResEncUNet:
    torch.manual_seed(6)
    model = localizer_resenc_unet(features_per_stage=(4, 8, 8, 8), n_blocks_per_stage=1).eval()
    with torch.no_grad():  # non-trivial norms, so every path contributes
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript(tiny_localizer):
    scripted = torch.jit.script(tiny_localizer)
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        assert max_abs_diff(scripted(x), tiny_localizer(x)) == 0
        scripted.deep_supervision = True
        tiny_localizer.deep_supervision = True
        scripted.train()
        tiny_localizer.train()
        torch.manual_seed(0)  # the localizer's dropout is active in training mode
        deep = scripted(x)
        torch.manual_seed(0)
        assert isinstance(deep, list) and max_abs_diff(deep, tiny_localizer(x)) == 0
    with pytest.raises(Exception, match="divisible"):
        scripted(torch.randn(1, 1, 12, 16, 8))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_trace_and_torch_export(tiny_localizer):
    x = torch.randn(1, 1, 16, 16, 8)
    other = torch.randn(2, 1, 32, 16, 4)
    with torch.no_grad():
        traced = torch.jit.trace(tiny_localizer, x)
        assert max_abs_diff(traced(other), tiny_localizer(other)) < 1e-5
        exported = torch.export.export(tiny_localizer, (x,)).module()
        assert max_abs_diff(exported(x), tiny_localizer(x)) < 1e-5


def test_onnx_export(tiny_localizer, tmp_path):
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "localizer.onnx"
    torch.onnx.export(tiny_localizer, (torch.randn(1, 1, 16, 16, 8),), str(path), dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))


# --- presets and argument checks -----------------------------------------------------------------


def test_preset_shrinks_to_fewer_stages():
    model = localizer_resenc_unet(features_per_stage=(4, 8, 8, 8), n_blocks_per_stage=1, deep_supervision=True)
    assert len(model.encoder.stages) == 4
    assert model.encoder.strides == ((1, 1, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2))
    assert [len(stage) for stage in model.encoder.stages] == [1, 1, 1, 1]
    with torch.no_grad():
        outputs = model.train()(torch.randn(1, 1, 16, 16, 8))
    assert [tuple(o.shape) for o in outputs] == [(1, 2, 16, 16, 8), (1, 2, 8, 8, 8), (1, 2, 4, 4, 4)]


def test_preset_with_more_stages_needs_every_per_stage_argument():
    with pytest.raises(ValueError, match="more than the preset's 6"):
        on_meta(localizer_resenc_unet, features_per_stage=(8,) * 7)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"kernel_sizes": (3, 3, 3)}, "kernel_sizes needs 4 entries"),
        ({"strides": (1, 2, (2, 2), 2)}, r"strides\[2\] must be an int or 3 per-axis ints"),
        ({"n_blocks_per_stage": (1, 1, 0, 1)}, "n_blocks_per_stage entries must be >= 1"),
        ({"n_conv_per_stage_decoder": (1, 1, 1, 1)}, "n_conv_per_stage_decoder needs 3 entries"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"features_per_stage": (4,), "kernel_sizes": 3, "strides": 1, "n_blocks_per_stage": 1}, "at least 2"),
    ],
)
def test_invalid_arguments(change, match):
    with pytest.raises(ValueError, match=match):
        ResEncUNet(1, 2, **{**TINY_ISOTROPIC, **change})


def test_input_size_must_be_divisible(tiny_localizer):
    with pytest.raises(ValueError, match=r"\[12, 16, 8\] must be divisible by \[8, 8, 4\]"):
        tiny_localizer(torch.randn(1, 1, 12, 16, 8))


def test_mednext_shares_the_output_contract(tiny_localizer):
    # Bundles may swap network_def to MONAI's MedNeXt; its deep-supervision outputs (train mode
    # only) are full resolution first, like ours, and it has a head at the bottleneck too.
    mednext = pytest.importorskip("monai.networks.nets").MedNeXt(
        spatial_dims=3, in_channels=1, out_channels=2, init_filters=4, deep_supervision=True,
        blocks_down=(1, 1), blocks_bottleneck=1, blocks_up=(1, 1), kernel_size=3,
    )
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        theirs = mednext.train()(x)
        tiny_localizer.deep_supervision = True
        ours = tiny_localizer.train()(x)
    assert [tuple(o.shape) for o in theirs] == [(1, 2, 16, 16, 8), (1, 2, 8, 8, 4), (1, 2, 4, 4, 2)]
    assert [tuple(o.shape) for o in ours] == [(1, 2, 16, 16, 8), (1, 2, 8, 8, 8), (1, 2, 4, 4, 4)]
