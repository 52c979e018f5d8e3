"""The pretraining task's texture generator: images show their class, batches are reproducible and
the loader resumes where it stopped."""
import numpy as np
import pytest
import torch

from gn_det.data.textures import TEXTURE_CLASSES, TextureLoader, make_textures, texture_eval_set


def _profile_variation(images: np.ndarray, axis: int) -> float:
    """How much the image varies along one direction: the grey levels averaged over the other direction
    (which averages the noise away), then the mean absolute step between neighbours of that profile.
    ``axis`` 2: across a row (x), 1: down a column (y)."""
    grey = images.astype(np.float64).mean(axis=3)
    profile = grey.mean(axis=1 if axis == 2 else 2)
    return float(np.abs(np.diff(profile, axis=1)).mean())


def test_stripe_orientation_is_visible():
    """Stripes whose wave runs along x (stripes_0) change across a row, hardly down a column; stripes_90
    the other way round."""
    rng = np.random.default_rng(0)
    vertical = make_textures([TEXTURE_CLASSES.index("stripes_0")] * 16, 64, rng)
    horizontal = make_textures([TEXTURE_CLASSES.index("stripes_90")] * 16, 64, rng)
    assert vertical.shape == (16, 64, 64, 3) and vertical.dtype == np.uint8
    assert _profile_variation(vertical, 2) > 2 * _profile_variation(vertical, 1)
    assert _profile_variation(horizontal, 1) > 2 * _profile_variation(horizontal, 2)


def test_every_class_has_contrast_and_bad_labels_are_named():
    rng = np.random.default_rng(1)
    images = make_textures(np.repeat(np.arange(len(TEXTURE_CLASSES)), 4), 48, rng)
    spread = images.reshape(len(images), -1, 3).astype(np.float64)
    # foreground and background differ by >= 90 grey levels in some channel: the per-image range is large
    assert (np.ptp(spread, axis=1).max(axis=1) >= 90).all()
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 8\)"):
        make_textures([8], 32, rng)


def test_loader_is_reproducible_resumable_and_disjoint_from_the_held_out_set():
    a = TextureLoader(4, 32, 8, seed=3)
    it = iter(a)
    first, second = next(it), next(it)
    assert len(first) == 4 and first[0][0].shape == (3, 32, 32) and first[0][0].dtype == torch.float32
    assert set(first[0][1]) == {"label"} and 0 <= int(first[0][1]["label"]) < 8
    b = TextureLoader(4, 32, 8, seed=3)
    b.load_state_dict({"position": 1})
    again = next(iter(b))
    for (x, t), (y, u) in zip(second, again):
        assert torch.equal(x, y) and torch.equal(t["label"], u["label"])
    assert a.state_dict() == {"position": 2}
    images, labels = texture_eval_set(4, 32, 8, seed=3)
    assert not torch.equal(images, torch.stack([x for x, _ in first]))
    # two processes draw different images at the same step
    r0, r1 = (next(iter(TextureLoader(2, 32, 8, seed=3, rank=r, world_size=2))) for r in (0, 1))
    assert not torch.equal(r0[0][0], r1[0][0])
    with pytest.raises(ValueError, match="PRETRAIN.NUM_CLASSES must be in"):
        TextureLoader(4, 32, 9, seed=0)
