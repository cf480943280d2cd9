import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy.ndimage import binary_dilation

from cascade.transforms import DilateMask, DilateMaskd, ball


def reference_ball(radius: int) -> np.ndarray:
    """Independent construction: distance of each offset from the centre."""
    size = 2 * radius + 1
    grid = np.indices((size, size, size)) - radius
    return np.sqrt((grid**2).sum(0)) <= radius


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", [(17, 13, 5), (40, 31, 3)])
def test_dilation_matches_scipy_ball(radius, shape):
    rng = np.random.default_rng(radius)
    mask = rng.random(shape) > 0.97
    mask[0, :, -1] = True  # foreground touching the volume border
    expected = binary_dilation(mask, structure=reference_ball(radius)) if radius else mask
    out = DilateMask(radius)(torch.as_tensor(mask[None], dtype=torch.float32))
    np.testing.assert_array_equal(out[0].numpy() > 0, expected)


def test_ball_sizes():
    assert [int(ball(r).sum()) for r in range(4)] == [1, 7, 33, 123]
    with pytest.raises(ValueError, match="radius"):
        ball(-1)


def test_dictionary_version_keeps_meta_and_other_keys():
    mask = torch.zeros(1, 9, 9, 4)
    mask[0, 4, 4, 2] = 1
    affine = torch.diag(torch.tensor([0.625, 0.625, 2.5, 1.0]))
    data = {"mask": MetaTensor(mask, affine=affine), "image": torch.ones(1, 9, 9, 4)}
    out = DilateMaskd("mask", radius=1)(data)
    assert isinstance(out["mask"], MetaTensor)
    torch.testing.assert_close(out["mask"].affine, affine.double(), check_dtype=False)
    assert int(out["mask"].sum()) == 7
    assert out["image"] is data["image"]
    assert int(data["mask"].sum()) == 1  # the input is not modified


def test_numpy_input_stays_numpy():
    mask = np.zeros((1, 5, 5, 5), np.uint8)
    mask[0, 2, 2, 2] = 1
    out = DilateMask(1)(mask)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.sum() == 7
