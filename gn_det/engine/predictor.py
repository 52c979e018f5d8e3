"""``DefaultPredictor(cfg)``: detectron2's single-image predictor for running a model on your own images."""
from __future__ import annotations

import logging
from typing import Dict

import numpy as np
import torch

logger = logging.getLogger(__name__)


class DefaultPredictor:
    """Build the model of ``cfg``, load MODEL.WEIGHTS, and run it on one image at a time (detectron2's
    DefaultPredictor): ``predictor(image)`` takes an HxWx3 image in BGR order (as ``cv2.imread`` gives it;
    flipped to RGB when INPUT.FORMAT is "RGB"), resizes it as evaluation does (INPUT.MIN/MAX_SIZE_TEST,
    PIL bilinear on uint8) and returns the model's detections in the original image's pixels:
    ``{"boxes", "labels" (1..K), "scores", "masks" (R x 1 x H x W probabilities, with MASK_ON)}``.
    ``metadata`` is DATASETS.TEST[0]'s (class names), when DATASETS.TEST names one.
    """

    def __init__(self, cfg) -> None:
        from gn_det.checkpoint import load_weights
        from gn_det.data import MetadataCatalog, ResizeShortestEdge
        from gn_det.modeling import build_model

        self.cfg = cfg.clone()
        if self.cfg.INPUT.FORMAT not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be 'BGR' or 'RGB', got {self.cfg.INPUT.FORMAT!r}")
        self.input_format = self.cfg.INPUT.FORMAT
        self.model = build_model(self.cfg).eval()
        self.metadata = MetadataCatalog.get(self.cfg.DATASETS.TEST[0]) if len(self.cfg.DATASETS.TEST) else None
        if self.cfg.MODEL.WEIGHTS:
            load_weights(self.model, self.cfg.MODEL.WEIGHTS, cfg=self.cfg)
        else:
            logger.warning("MODEL.WEIGHTS is empty: DefaultPredictor runs a randomly initialised model")
        self.resize = ResizeShortestEdge.from_config(self.cfg, is_train=False)

    def __call__(self, original_image: np.ndarray) -> Dict[str, torch.Tensor]:
        """Detections of one HxWx3 BGR image, in its own pixel coordinates."""
        from gn_det.data import resize_image

        if not isinstance(original_image, np.ndarray) or original_image.ndim != 3 or original_image.shape[2] != 3:
            shape = getattr(original_image, "shape", type(original_image).__name__)
            raise ValueError(f"DefaultPredictor takes one HxWx3 numpy image in BGR order (e.g. cv2.imread), got {shape}")
        image = original_image[:, :, ::-1] if self.input_format == "RGB" else original_image
        height, width = image.shape[:2]
        image = resize_image(np.ascontiguousarray(image), self.resize.output_size(height, width))
        device = next(self.model.parameters()).device
        tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1)).to(device)
        with torch.no_grad():
            return self.model([tensor], original_sizes=[(height, width)])[0]
