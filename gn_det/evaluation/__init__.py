"""Evaluation: inference over a test loader, gathering across processes, COCO box and mask AP
(pycocotools or faster-coco-eval), per-category metrics, precision/recall curves, COCO error analysis."""
from .backends import AUTO, EVAL_BACKENDS, faster_coco_eval_installed, resolve_backend
from .coco_evaluation import (COCOEvaluator, dataset_dicts_to_coco, dataset_ground_truth, evaluate_predictions,
                              instances_to_coco_json)
from .evaluator import DatasetEvaluator, format_results, inference_context, inference_on_dataset
from .scoring import Scored, score

__all__ = ["AUTO", "COCOEvaluator", "DatasetEvaluator", "EVAL_BACKENDS", "Scored", "dataset_dicts_to_coco",
           "dataset_ground_truth", "evaluate_predictions", "faster_coco_eval_installed", "format_results",
           "inference_context", "inference_on_dataset", "instances_to_coco_json", "resolve_backend", "score"]
