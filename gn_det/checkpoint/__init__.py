"""Loading weights of every format users hold (gn_det, torchvision, Detectron/detectron2, SN authors),
safely, with one report; input conventions per weights source. Training checkpoints: checkpointer.py.
"""
from .conventions import check_input_conventions
from .converted import ConvertedWeights, DetectedFormat, InputConvention
from .formats import KNOWN_FORMATS
from .load import load_converted, load_weights, read_converted
from .report import LoadReport
from .safe_load import UnsafeWeightsError, WeightsFileError, read_weights_file

__all__ = [
    "KNOWN_FORMATS",
    "ConvertedWeights",
    "DetectedFormat",
    "InputConvention",
    "LoadReport",
    "UnsafeWeightsError",
    "WeightsFileError",
    "check_input_conventions",
    "load_converted",
    "load_weights",
    "read_converted",
    "read_weights_file",
]
