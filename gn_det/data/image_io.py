"""Image reading: EXIF orientation applied, any PIL mode (grayscale, palette, RGBA, 16-bit) turned
into 3 channels, in the channel order the model expects (cfg.INPUT.FORMAT)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["SUPPORTED_FORMATS", "read_image", "image_to_tensor", "check_image_size"]

SUPPORTED_FORMATS = ("BGR", "RGB")


def read_image(file_name: str, fmt: str = "BGR") -> np.ndarray:
    """Read `file_name` as an HxWx3 uint8 array in channel order `fmt` ("BGR" or "RGB"), rotated
    upright by its EXIF orientation tag. Alpha is dropped; grayscale is replicated to 3 channels."""
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"INPUT.FORMAT must be one of {list(SUPPORTED_FORMATS)}, got {fmt!r}")
    try:
        with Image.open(file_name) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16/32-bit grayscale: scale to 8 bits rather than let PIL clip at 255
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
                img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
            array = np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"Image file '{file_name}' does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise OSError(f"Cannot read image file '{file_name}': {e}") from None
    if fmt == "BGR":
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC uint8 array -> CxHxW float32 tensor with values 0-255."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(torch.float32)


def check_image_size(dataset_dict: dict, image: np.ndarray) -> None:
    """Raise when the image read differs in size from the height/width its dataset entry declares."""
    h, w = image.shape[:2]
    expected = (dataset_dict.get("height"), dataset_dict.get("width"))
    if expected != (None, None) and expected != (h, w):
        raise ValueError(f"Image file '{dataset_dict['file_name']}' (image id {dataset_dict.get('image_id')}) "
                         f"is {h}x{w} (HxW, after EXIF orientation) but its dataset entry says "
                         f"{expected[0]}x{expected[1]}")
