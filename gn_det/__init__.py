"""gn_det: Group and Switchable Normalization for Faster R-CNN and Mask R-CNN on torchvision."""

__version__ = "0.1.0"
