import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

from cascade.annotation import annotation_code
from cascade.losses import MaskedDiceCELoss, nnunet_deep_supervision_weights


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_all_ones_mask_equals_monai_dice_ce(batch, include_background):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, 4)
    labels = torch.randint(0, 4, (2, 1, 8, 8, 4))
    expected = DiceCELoss(
        to_onehot_y=True, softmax=True, include_background=include_background, batch=batch,
        smooth_nr=1e-5, smooth_dr=1e-5,
    )(logits, labels)
    loss = MaskedDiceCELoss(include_background=include_background, batch=batch)
    torch.testing.assert_close(loss(logits, labels), expected)
    torch.testing.assert_close(loss(logits, torch.cat([labels, torch.ones_like(labels)], 1)), expected)


def test_no_gradient_outside_mask():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 10, 10, 4, requires_grad=True)
    labels = torch.randint(0, 4, (2, 1, 10, 10, 4))
    mask = torch.zeros_like(labels)
    mask[:, :, 2:7, 3:8, 1:3] = 1
    MaskedDiceCELoss()(logits, torch.cat([labels, mask], 1)).backward()
    outside = (mask == 0).expand_as(logits)
    assert logits.grad[outside].abs().max() == 0
    assert logits.grad[~outside].abs().max() > 0


def test_outside_values_do_not_change_loss():
    torch.manual_seed(2)
    logits = torch.randn(1, 4, 8, 8, 4)
    labels = torch.randint(0, 4, (1, 1, 8, 8, 4))
    mask = torch.zeros_like(labels)
    mask[..., :4, :, :] = 1
    target = torch.cat([labels, mask], 1)
    other_logits = logits.clone()
    other_logits[..., 4:, :, :] = torch.randn_like(other_logits[..., 4:, :, :]) * 10
    other_target = target.clone()
    other_target[:, 0, 4:] = 3
    loss = MaskedDiceCELoss()
    torch.testing.assert_close(loss(logits, target), loss(other_logits, other_target))


def test_monai_masked_dice_pitfall_is_avoided():
    """A perfect prediction inside the mask scores ~0 Dice loss, whatever lies outside."""
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    labels[..., 2:6, 2:6, 2:6] = 1
    mask = torch.zeros_like(labels)
    mask[..., 1:7, 1:7, 1:7] = 1
    logits = torch.nn.functional.one_hot(labels[:, 0], 2).movedim(-1, 1).float() * 40
    loss = MaskedDiceCELoss(include_background=True, lambda_ce=0.0)
    assert loss(logits, torch.cat([labels, mask], 1)).item() < 1e-4


def test_deep_supervision_downsamples_mask_with_label():
    torch.manual_seed(3)
    outputs = [torch.randn(2, 4, 16, 16, 4, requires_grad=True), torch.randn(2, 4, 8, 8, 4, requires_grad=True)]
    labels = torch.randint(0, 4, (2, 1, 16, 16, 4))
    mask = torch.zeros_like(labels)
    mask[:, :, :8] = 1
    loss = DeepSupervisionLoss(MaskedDiceCELoss(), weights=nnunet_deep_supervision_weights(3))
    loss(outputs, torch.cat([labels, mask], 1).float()).backward()  # MONAI labels are float tensors
    assert outputs[1].grad[:, :, 4:].abs().max() == 0
    assert outputs[1].grad[:, :, :4].abs().max() > 0


def test_nnunet_weights():
    assert nnunet_deep_supervision_weights(1) == [1.0]
    weights = nnunet_deep_supervision_weights(5)
    assert weights[-1] == 0 and abs(sum(weights) - 1) < 1e-12
    assert weights[0] == pytest.approx(1 / 1.875) and weights[1] == pytest.approx(0.5 / 1.875)


LA_ONLY = annotation_code([3])  # left atrium annotated; wall and right atrium not drawn


def _with_code(labels, mask, code):
    return torch.cat([labels, mask, torch.full_like(labels, code)], 1).float()


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_full_annotation_code_equals_plain_loss(batch, include_background):
    torch.manual_seed(4)
    logits = torch.randn(2, 4, 8, 8, 4)
    labels = torch.randint(0, 4, (2, 1, 8, 8, 4))
    mask = (torch.rand_like(labels, dtype=torch.float) > 0.3).long()
    loss = MaskedDiceCELoss(include_background=include_background, batch=batch)
    full = annotation_code([1, 2, 3])
    torch.testing.assert_close(loss(logits, _with_code(labels, mask, full)), loss(logits, torch.cat([labels, mask], 1)))


def test_partial_annotation_one_voxel_analytic():
    """Label 0 where only the left atrium is annotated: CE = -log(1 - p_LA), Dice of the LA only."""
    logits = torch.tensor([0.3, 1.2, -0.4, 0.8]).view(1, 4, 1, 1, 1)
    labels = torch.zeros(1, 1, 1, 1, 1, dtype=torch.long)
    target = _with_code(labels, torch.ones_like(labels), LA_ONLY)
    p = torch.softmax(logits.flatten(), 0)
    smooth = 1e-5
    la_dice = smooth / (p[3] + smooth)  # no LA in the truth: (0 + s) / (p_LA + 0 + s)
    expected = (1 - la_dice) - torch.log(1 - p[3])
    torch.testing.assert_close(MaskedDiceCELoss(smooth=smooth)(logits, target), expected)


@pytest.mark.parametrize("batch", [True, False])
def test_partial_annotation_ignores_how_unannotated_mass_is_split(batch):
    """Where only the LA is annotated, moving probability between background, wall and right atrium
    changes nothing (the plain loss would punish wall and right atrium as false positives)."""
    torch.manual_seed(5)
    logits = torch.randn(2, 4, 8, 8, 4)
    labels = torch.where(torch.rand(2, 1, 8, 8, 4) > 0.6, 3, 0)
    mask = torch.ones_like(labels)
    shuffled = logits[:, [2, 0, 1, 3]]  # permute background, wall, right atrium at every voxel
    loss = MaskedDiceCELoss(batch=batch)
    target = _with_code(labels, mask, LA_ONLY)
    torch.testing.assert_close(loss(logits, target), loss(shuffled, target))
    assert not torch.isclose(loss(logits, torch.cat([labels, mask], 1)), loss(shuffled, torch.cat([labels, mask], 1)))


def test_mixed_batch_marginal_per_case():
    """A fully labelled case and an LA-only case in one batch: each case is marginalised by its own code."""
    torch.manual_seed(6)
    logits = torch.randn(2, 4, 6, 6, 4, requires_grad=True)
    labels = torch.randint(0, 4, (2, 1, 6, 6, 4))
    labels[1] = torch.where(labels[1] == 3, 3, 0)
    mask = torch.ones_like(labels)
    codes = torch.stack([torch.full_like(labels[0], annotation_code([1, 2, 3])), torch.full_like(labels[1], LA_ONLY)])
    MaskedDiceCELoss(batch=True)(logits, torch.cat([labels, mask, codes], 1).float()).backward()
    grad, p = logits.grad, torch.softmax(logits.detach(), 1)
    # LA-only case, label-0 voxels: the loss sees background, wall and RA only through their sum,
    # so each logit's gradient is proportional to its probability (equal ratios)
    silent = (labels[1, 0] == 0)
    ratios = grad[1, :3][:, silent] / p[1, :3][:, silent]
    torch.testing.assert_close(ratios[0], ratios[1], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(ratios[0], ratios[2], rtol=1e-4, atol=1e-7)
    # the fully labelled case is not marginalised: its ratios differ
    full_ratios = grad[0, :3] / p[0, :3]
    assert not torch.allclose(full_ratios[1], full_ratios[2], rtol=1e-2)


def test_deep_supervision_carries_annotation_code():
    torch.manual_seed(7)
    outputs = [torch.randn(2, 4, 16, 16, 4), torch.randn(2, 4, 8, 8, 4)]
    labels = torch.where(torch.rand(2, 1, 16, 16, 4) > 0.5, 3, 0)
    target = _with_code(labels, torch.ones_like(labels), LA_ONLY)
    weights = nnunet_deep_supervision_weights(3)
    loss = DeepSupervisionLoss(MaskedDiceCELoss(), weights=weights)
    shuffled = [o[:, [1, 2, 0, 3]] for o in outputs]
    torch.testing.assert_close(loss(outputs, target), loss(shuffled, target))
