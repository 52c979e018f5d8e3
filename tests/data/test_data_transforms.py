"""Flip and resize: boxes and masks agree with the transformed image."""
import numpy as np
import pytest
import torch

from gn_det.data import DatasetMapper, DatasetCatalog, ResizeShortestEdge, register_shapes, resize_shortest_edge
from gn_det.data.transforms import shortest_edge_size


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
    (480, 640, 800, 1333, (800, 1067)),   # 640 * 800 / 480 = 1066.67
    (100, 1000, 800, 1333, (133, 1333)),  # long side capped: scale 1.333
    (640, 480, 600, 0, (800, 600)),       # no cap
    (128, 128, 64, 1000, (64, 64)),
])
def test_shortest_edge_size(h, w, short, max_size, expected):
    assert shortest_edge_size(h, w, short, max_size) == expected


def test_resize_scales_boxes_and_masks():
    image = torch.zeros(3, 40, 60)
    image[:, 10:20, 30:45] = 255
    mask = (image[0] > 0).to(torch.uint8)[None]
    boxes = torch.tensor([[30.0, 10.0, 45.0, 20.0]])
    out, oboxes, omasks = resize_shortest_edge(image, 80, 1000, boxes, mask)
    assert out.shape == (3, 80, 120) and omasks.shape == (1, 80, 120)
    assert oboxes.tolist() == [[60.0, 20.0, 90.0, 40.0]]
    assert _tight_box(omasks[0].numpy()) == [60, 20, 90, 40]
    aug = ResizeShortestEdge((32, 48), max_size=1000)
    sizes = {aug(image)[0].shape[-2] for _ in range(30)}
    assert sizes == {32, 48}
    with pytest.raises(ValueError, match=r"sample_style should be 'choice' or 'range', got 'x'"):
        ResizeShortestEdge(32, sample_style="x")
