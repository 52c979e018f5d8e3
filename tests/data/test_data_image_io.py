"""Image reading: EXIF orientation, grayscale / RGBA / palette to 3 channels, channel order."""
import numpy as np
import pytest
import torch
from PIL import Image

from gn_det.data import DatasetMapper, read_image
from gn_det.data.image_io import image_to_tensor


def _pattern(h=6, w=10):
    """An asymmetric RGB image: every pixel and channel differs."""
    return (np.arange(h * w * 3).reshape(h, w, 3) * 7 % 251).astype(np.uint8)


@pytest.mark.parametrize("orientation, rot_k", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation(tmp_path, orientation, rot_k):
    stored = _pattern()
    path = str(tmp_path / "e.png")
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: display = stored rotated 90 degrees clockwise
    Image.fromarray(stored).save(path, exif=exif)
    expected = np.rot90(stored, k=rot_k)  # np.rot90 with k=-1 rotates clockwise
    np.testing.assert_array_equal(read_image(path, "RGB"), expected)


def test_grayscale_rgba_palette_to_three_channels(tmp_path):
    gray = _pattern()[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "g.png"), "RGB"), np.stack([gray] * 3, -1))

    rgba = np.concatenate([_pattern(), np.full((6, 10, 1), 77, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "a.png"), "RGB"), rgba[..., :3])

    gray16 = (np.arange(60, dtype=np.uint16).reshape(6, 10) * 1000)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    out = read_image(str(tmp_path / "g16.png"), "RGB")
    assert out.shape == (6, 10, 3)
    for c in range(3):  # 16-bit scaled to 8 bits: floor(v * 255 / 65535) = v // 257
        np.testing.assert_array_equal(out[..., c], (gray16 // 257).astype(np.uint8))

    pal = Image.fromarray(_pattern()).convert("P", palette=Image.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "p.png"), "RGB"), np.asarray(pal.convert("RGB")))


def test_bgr_order_and_tensor(tmp_path):
    rgb = _pattern()
    Image.fromarray(rgb).save(tmp_path / "c.png")
    bgr = read_image(str(tmp_path / "c.png"), "BGR")
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])
    mapper = DatasetMapper(is_train=False, image_format="BGR")
    image, d = mapper({"file_name": str(tmp_path / "c.png"), "height": 6, "width": 10, "image_id": 1})
    assert image.dtype == torch.float32 and image.shape == (3, 6, 10)
    np.testing.assert_array_equal(image.numpy(), rgb[..., ::-1].transpose(2, 0, 1).astype(np.float32))
    assert d["image_id"] == 1
    assert image_to_tensor(rgb).max() == float(rgb.max())  # 0-255 scale, not 0-1
