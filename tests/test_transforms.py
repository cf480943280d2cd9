import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy.ndimage import binary_dilation

from monai.transforms import CropForegroundd, KeepLargestConnectedComponentd

from cascade.transforms import (
    ChannelArgmaxd,
    CropForegroundMinSized,
    DilateMask,
    DilateMaskd,
    KeepLargestComponentd,
    MergeIntoBackgroundd,
    ball,
    channel_argmax,
    dilate_mask,
    margin_voxels,
)


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


def _box(data: dict) -> tuple[slice, ...]:
    """Where the crop came from, read off an image whose voxel values are their flat indices."""
    first, last = data["image"].flatten()[[0, -1]].long().tolist()
    shape = (60, 50, 20)
    return tuple(slice(a, b + 1) for a, b in zip(np.unravel_index(first, shape), np.unravel_index(last, shape)))


def test_crop_grows_to_min_size_inside_the_image_and_inverts():
    image = MetaTensor(torch.arange(60 * 50 * 20, dtype=torch.float32).reshape(1, 60, 50, 20))
    mask = torch.zeros(1, 60, 50, 20)
    mask[0, 2:10, 20:30, 8:12] = 1
    crop = CropForegroundMinSized(
        ["image", "mask"], source_key="mask", min_size=[16, 64, 4], margin=1, allow_smaller=True
    )
    data = crop({"image": image, "mask": MetaTensor(mask)})
    # x: box 1..11 grows to 16 about its centre, shifted back inside the image; y: the image (50)
    # is smaller than 64, so all of it; z: box 7..13 is already longer than 4, unchanged
    assert _box(data) == (slice(0, 16), slice(0, 50), slice(7, 13))
    assert data["mask"].shape == data["image"].shape == (1, 16, 50, 6)
    restored = crop.inverse(data)
    assert restored["image"].shape == image.shape
    assert torch.equal(restored["image"][:, :16, :, 7:13], image[:, :16, :, 7:13])
    assert restored["image"][:, 16:].abs().sum() == 0 and torch.equal(restored["mask"], mask)


def test_crop_larger_than_min_size_is_monai_crop_foreground():
    image = MetaTensor(torch.arange(60 * 50 * 20, dtype=torch.float32).reshape(1, 60, 50, 20))
    mask = torch.zeros(1, 60, 50, 20)
    mask[0, 20:45, 10:40, 3:15] = 1
    kwargs = {"keys": ["image", "mask"], "source_key": "mask", "margin": [2, 2, 1], "allow_smaller": True}
    ours = CropForegroundMinSized(min_size=[8, 8, 4], **kwargs)({"image": image, "mask": MetaTensor(mask)})
    monai = CropForegroundd(**kwargs)({"image": image, "mask": MetaTensor(mask)})
    assert _box(ours) == _box(monai) == (slice(18, 47), slice(8, 42), slice(2, 16))


@pytest.mark.parametrize("radius", [(3, 2.5, 1.2), (2, 2, 0), (4.8, 4.8, 1.2)])
def test_ellipsoidal_dilation_matches_scipy(radius):
    """Radii per axis (a margin in mm over an anisotropic grid); an empty channel stays empty."""
    rng = np.random.default_rng(1)
    mask = rng.random((40, 31, 12)) > 0.985
    mask[-1, 3, 0] = True
    out = dilate_mask(torch.as_tensor(np.stack([mask, np.zeros_like(mask)])[None], dtype=torch.float32), radius)
    np.testing.assert_array_equal(out[0, 0].numpy() > 0, binary_dilation(mask, structure=ball(radius)))
    assert not out[0, 1].any()


def test_margin_in_mm_is_the_papers_radius_on_the_mbas_grid():
    assert margin_voxels([1.25, 1.25, 5.0], [0.625, 0.625, 2.5]) == (2.0, 2.0, 2.0)
    assert margin_voxels(7.5, [1.25, 1.25, 2.5]) == (6.0, 6.0, 3.0)
    assert ball(margin_voxels([1.25, 1.25, 5.0], [0.625, 0.625, 2.5])).sum() == ball(2).sum()


def test_channel_argmax_equals_torch_argmax_ties_included():
    rng = torch.Generator().manual_seed(0)
    probabilities = torch.randint(0, 3, (4, 20, 17, 6), generator=rng).float()  # many ties
    probabilities[:, 0, 0, 0] = 1.0  # all channels equal: the first wins
    expected = torch.argmax(probabilities, dim=0, keepdim=True).float()
    torch.testing.assert_close(channel_argmax(probabilities), expected)
    data = ChannelArgmaxd("pred")(
        {"pred": MetaTensor(probabilities, affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))}
    )
    assert isinstance(data["pred"], MetaTensor) and data["pred"].affine[2, 2] == 3.0


@pytest.mark.parametrize("independent, applied", [(True, [1, 2, 3]), (False, [1, 2, 3]), (True, [1])])
def test_largest_component_in_the_box_equals_monai(independent, applied):
    rng = np.random.default_rng(3)
    labels = np.zeros((40, 36, 12), np.float32)
    labels[5:30, 4:30, 2:10] = rng.integers(0, 4, (25, 26, 8)) * (rng.random((25, 26, 8)) > 0.8)
    data = {"pred": torch.tensor(labels[None])}
    ours = KeepLargestComponentd("pred", applied_labels=applied, independent=independent)(data)["pred"]
    assert torch.equal(data["pred"], torch.as_tensor(labels[None]))  # the input is not modified
    monai = KeepLargestConnectedComponentd("pred", applied_labels=applied, independent=independent)(data)["pred"]
    torch.testing.assert_close(ours, monai)
    assert not torch.equal(ours, torch.as_tensor(labels[None]))  # components were removed
    empty = {"pred": torch.zeros(1, 8, 8, 4)}
    assert torch.equal(KeepLargestComponentd("pred", applied_labels=applied)(empty)["pred"], empty["pred"])


def test_merge_into_background_keeps_only_the_learned_classes():
    probabilities = torch.tensor([[0.3, 0.1], [0.25, 0.1], [0.25, 0.1], [0.2, 0.7]]).view(4, 2, 1, 1)
    merged = MergeIntoBackgroundd("pred", keep=[3])({"pred": probabilities})["pred"]
    # voxel 0: the LA's 0.2 loses to background, wall and RA together (0.8); voxel 1: the LA's 0.7 wins
    torch.testing.assert_close(merged[:, :, 0, 0], torch.tensor([[0.8, 0.3], [0, 0], [0, 0], [0.2, 0.7]]))
    torch.testing.assert_close(merged.sum(0), probabilities.sum(0))
    assert channel_argmax(merged).flatten().tolist() == [0, 3]
    unchanged = MergeIntoBackgroundd("pred", keep=[1, 2, 3])({"pred": probabilities})["pred"]
    assert torch.equal(unchanged, probabilities)


def _rotated(degrees: float, axis: int) -> np.ndarray:
    angle, (i, j) = np.deg2rad(degrees), [(1, 2), (0, 2), (0, 1)][axis]
    rotation = np.eye(4)
    rotation[[i, j, i, j], [i, j, j, i]] = np.cos(angle), np.cos(angle), -np.sin(angle), np.sin(angle)
    return rotation


def _scan_grid(rng: np.random.Generator, kind: str) -> tuple[tuple[int, ...], np.ndarray]:
    """A random grid: axis-aligned with flips, tilted, or with swapped storage axes."""
    shape = tuple(int(n) for n in rng.integers([40, 50, 10], [90, 100, 30]))
    in_plane = [rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) for _ in range(2)]
    affine = np.diag([*in_plane, rng.uniform(1.5, 3), 1.0])
    affine[:3, 3] = rng.uniform(-50, 50, 3)
    if kind == "tilted":
        affine = _rotated(rng.uniform(-40, 40), int(rng.integers(3))) @ affine
    if kind == "swapped":
        affine = affine[:, [1, 0, 2, 3]]
    return shape, affine


@pytest.mark.parametrize("kind", ["aligned", "tilted", "swapped"])
def test_threshold_on_input_grid_equals_invert_then_threshold(kind):
    """The box-limited inverse gives MONAI's full Invertd + AsDiscreted voxel for voxel: smooth random
    probabilities (wide and narrow foreground), no candidate at all, candidates on the volume's border."""
    from monai.transforms import AsDiscreted, Compose, Invertd, Orientationd, Spacingd
    from scipy.ndimage import gaussian_filter

    from cascade.transforms import ThresholdOnInputGridd, _linear_resampling

    rng = np.random.default_rng({"aligned": 0, "tilted": 1, "swapped": 2}[kind])
    for trial in range(3):
        shape, affine = _scan_grid(rng, kind)
        preprocessing = Compose([Orientationd("image", axcodes="RAS", labels=None),
                                 Spacingd("image", pixdim=(1.9, 1.9, 2.5), diagonal=True, mode="bilinear")])
        image = preprocessing({"image": MetaTensor(torch.zeros((1, *shape)), affine=torch.as_tensor(affine))})["image"]
        assert _linear_resampling(image.applied_operations) is not None  # the box route, not the fallback
        field = gaussian_filter(rng.random(image.shape[1:]), 2.0)
        field = (field - field.min()) / (field.max() - field.min())
        if trial == 1:
            field[:] = 0.0
            field[:2, :4, -2:] = 1.0  # on the border: clamped samples beyond the volume reach it
        if trial == 2:
            field[:] = 0.0
        probabilities = MetaTensor(torch.as_tensor(field[None], dtype=torch.float32), meta=image.meta,
                                   applied_operations=list(image.applied_operations))
        for threshold in (0.2, 0.5, 0.8):
            full_inverse = Compose([Invertd("pred", preprocessing, "image", nearest_interp=False, to_tensor=True),
                                    AsDiscreted("pred", threshold=threshold)])
            reference = full_inverse({"pred": probabilities.clone(), "image": image})["pred"]
            fast_inverse = ThresholdOnInputGridd("pred", preprocessing, "image", threshold)
            fast = fast_inverse({"pred": probabilities.clone(), "image": image})["pred"]
            assert fast.shape == reference.shape == (1, *shape) and fast.dtype == reference.dtype
            assert torch.equal(fast.as_tensor(), reference.as_tensor()) and np.allclose(fast.affine, affine)
            assert kind == "tilted" or trial != 1 or fast.sum() > 0  # a tilted scan may not reach the grid's corner
            assert trial != 2 or fast.sum() == 0
