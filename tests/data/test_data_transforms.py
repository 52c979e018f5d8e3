"""Flip and resize (detectron2's ResizeShortestEdge: PIL bilinear on uint8): boxes and masks agree with the
transformed image."""
import numpy as np
import pytest
import torch

from gn_det.config import get_cfg
from gn_det.data import DatasetMapper, DatasetCatalog, ResizeShortestEdge, register_shapes, resize_image, shortest_edge_size


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_flip_boxes_masks_agree_with_flipped_image(shapes_root, unique_name):
    names = (unique_name("shp"), unique_name("shp"))
    register_shapes(shapes_root, names=names)
    mapper = DatasetMapper(is_train=True, image_format="RGB", mask_on=True)
    for d in DatasetCatalog.get(names[0])[:4]:
        img, tgt = mapper(d, flip=False)
        fimg, ftgt = mapper(d, flip=True)
        w = img.shape[-1]
        assert torch.equal(fimg, img.flip(-1))
        assert torch.equal(ftgt["labels"], tgt["labels"])
        for box, fbox, mask, fmask in zip(tgt["boxes"], ftgt["boxes"], tgt["masks"], ftgt["masks"]):
            # shapes boxes are tight around the masks: check both sides against the flipped mask
            assert fbox.tolist() == _tight_box(fmask.numpy())
            assert box.tolist() == _tight_box(mask.numpy())
            assert fbox.tolist() == [w - box[2].item(), box[1].item(), w - box[0].item(), box[3].item()]
            # the masked pixels of the flipped image are the mirrored masked pixels of the original
            m = fmask.bool()
            assert torch.equal(fimg[:, m], img.flip(-1)[:, m])
            assert torch.equal(fmask, mask.flip(-1))


def test_random_flip_none_ignores_flip(shapes_root, unique_name):
    names = (unique_name("shp"), unique_name("shp"))
    register_shapes(shapes_root, names=names)
    d = DatasetCatalog.get(names[0])[0]
    mapper = DatasetMapper(is_train=True, mask_on=False, random_flip="none")
    img, tgt = mapper(d, flip=True)
    img0, tgt0 = mapper(d, flip=False)
    assert torch.equal(img, img0) and torch.equal(tgt["boxes"], tgt0["boxes"]) and "masks" not in tgt


@pytest.mark.parametrize("h, w, short, max_size, expected", [
    (480, 640, 800, 1333, (800, 1067)),   # 640 * 800 / 480 = 1066.67 rounds up (floor would give 1066)
    (100, 1000, 800, 1333, (133, 1333)),  # long side capped: scale 1.333
    (640, 480, 600, 0, (800, 600)),       # no cap
    (128, 128, 64, 1000, (64, 64)),
    (800, 1067, 800, 1333, (800, 1067)),  # already at size
    (333, 500, 0, 1333, (333, 500)),      # 0: no resize (detectron2's MIN_SIZE_TEST 0)
])
def test_shortest_edge_size(h, w, short, max_size, expected):
    assert shortest_edge_size(h, w, short, max_size) == expected


def _pil_bilinear_float(image, new_h, new_w):
    """PIL's bilinear resize written out in float64: a triangle filter of radius max(1, in/out) input pixels
    around each output centre (x + 0.5) * in/out, weights normalised (PIL's antialiased bilinear)."""
    def weights(n_in, n_out):
        scale = n_in / n_out
        support = max(scale, 1.0)
        m = np.zeros((n_out, n_in))
        for o in range(n_out):
            centre = (o + 0.5) * scale
            for i in range(n_in):
                m[o, i] = max(0.0, 1.0 - abs((i + 0.5 - centre) / support))
            m[o] /= m[o].sum()
        return m

    wy, wx = weights(image.shape[0], new_h), weights(image.shape[1], new_w)
    return np.einsum("oi,ijc,pj->opc", wy, image.astype(np.float64), wx)


@pytest.mark.parametrize("size", [(37, 50), (90, 121)])  # down (antialiased) and up
def test_resize_image_is_pil_bilinear_on_uint8(size):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    out = resize_image(image, size)
    assert out.dtype == np.uint8 and out.shape == size + (3,)
    # PIL works in 8-bit fixed point with one rounding per pass: within 1 of the float formula
    np.testing.assert_allclose(out.astype(np.float64), _pil_bilinear_float(image, *size), rtol=0, atol=1.01)
    # torch's non-antialiased bilinear is not it when shrinking (a float resize would change the numbers)
    if size[0] < 60:
        plain = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].double(), size=size,
                                                mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
        assert np.abs(plain - _pil_bilinear_float(image, *size)).max() > 20
    assert resize_image(image, (60, 80)) is image


def test_mapper_resizes_image_boxes_and_masks(shapes_root, unique_name):
    """Training: boxes scale by new/old size per axis; polygon masks are rasterized at the new size, so
    each mask's tight box is its scaled box (to within a pixel); eval keeps the original height/width."""
    names = (unique_name("shp"), unique_name("shp"))
    register_shapes(shapes_root, names=names)
    plain = DatasetMapper(is_train=True, image_format="RGB", mask_on=True)
    resized = DatasetMapper(is_train=True, image_format="RGB", mask_on=True,
                            resize=ResizeShortestEdge((96, 150), max_size=1000))
    for d in DatasetCatalog.get(names[0])[:3]:
        img0, tgt0 = plain(d)
        h, w = img0.shape[-2:]
        for short in (96, 150):
            img, tgt = resized(d, short_edge=short)
            nh, nw = shortest_edge_size(h, w, short, 1000)
            assert img.shape == (3, nh, nw) and tgt["masks"].shape[-2:] == (nh, nw)
            scale = torch.tensor([nw / w, nh / h, nw / w, nh / h])
            torch.testing.assert_close(tgt["boxes"], tgt0["boxes"] * scale, rtol=1e-6, atol=1e-4)
            for box, mask in zip(tgt["boxes"], tgt["masks"]):
                np.testing.assert_allclose(_tight_box(mask.numpy()), box.numpy(), atol=1.01)
        assert torch.equal(resized(d)[0], resized(d, short_edge=96)[0])  # default: the first length
    test = DatasetMapper(is_train=False, image_format="RGB", resize=ResizeShortestEdge(100, max_size=1000))
    d = DatasetCatalog.get(names[1])[0]
    img, info = test(d)
    assert img.shape[-2:] == shortest_edge_size(d["height"], d["width"], 100, 1000)
    assert (info["height"], info["width"]) == (d["height"], d["width"])


def test_resize_from_config_and_sampling():
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (32, 48), "INPUT.MIN_SIZE_TEST", 40, "INPUT.MAX_SIZE_TEST", 500])
    train, test = ResizeShortestEdge.from_config(cfg, True), ResizeShortestEdge.from_config(cfg, False)
    rng = np.random.default_rng(0)
    assert {train.sample_size(rng) for _ in range(40)} == {32, 48}
    assert test.output_size(480, 640) == (40, 53)  # 53.33
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN_SAMPLING", "range"])
    assert {ResizeShortestEdge.from_config(cfg, True).sample_size(rng) for _ in range(300)} == set(range(32, 49))
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (32, 40, 48)])
    with pytest.raises(ValueError, match=r"INPUT.MIN_SIZE_TRAIN_SAMPLING='range' needs INPUT.MIN_SIZE_TRAIN=\(min, max\), "
                                         r"got \(32, 40, 48\)"):
        ResizeShortestEdge.from_config(cfg, True)
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN_SAMPLING", "rnd"])
    with pytest.raises(ValueError, match=r"INPUT.MIN_SIZE_TRAIN_SAMPLING must be one of \['choice', 'range'\], got 'rnd'"):
        ResizeShortestEdge.from_config(cfg, True)
    with pytest.raises(ValueError, match=r"sample_style should be 'choice' or 'range', got 'x'"):
        ResizeShortestEdge(32, sample_style="x")


def test_mapped_dataset_draws_flip_then_short_side_from_the_position_rng():
    """augmentation_draws is the one source of the per-sample draws: rng = default_rng([seed, position]),
    flip = first uniform < 0.5, short side = the resize's choice from the same stream; MappedDataset uses it."""
    from gn_det.data.mapper import MappedDataset, augmentation_draws

    resize = ResizeShortestEdge((32, 40, 48, 56))
    calls = []

    class Recorder:
        def __init__(self):
            self.resize = resize

        def __call__(self, d, flip=False, short_edge=None):
            calls.append((d["i"], flip, short_edge))
            return d

    dataset = MappedDataset([{"i": k} for k in range(3)], Recorder(), seed=11)
    expected = []
    for index, position in [(0, 0), (2, 5), (1, 17), (0, 1000)]:
        rng = np.random.default_rng([11, position])
        flip = bool(rng.random() < 0.5)
        short = (32, 40, 48, 56)[int(rng.integers(4))]
        assert augmentation_draws(11, position, resize) == (flip, short)
        assert augmentation_draws(11, position, None) == (flip, None)
        dataset[(index, position)]
        expected.append((index, flip, short))
    assert calls == expected
    assert {augmentation_draws(11, p, None)[0] for p in range(20)} == {False, True}
