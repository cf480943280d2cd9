import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

from cascade.losses import MaskedDiceCELoss, nnunet_deep_supervision_weights


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_all_ones_mask_equals_monai_dice_ce(batch, include_background):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, 4)
    labels = torch.randint(0, 4, (2, 1, 8, 8, 4))
    expected = DiceCELoss(
        to_onehot_y=True, softmax=True, include_background=include_background, batch=batch, smooth_nr=1e-5, smooth_dr=1e-5
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
