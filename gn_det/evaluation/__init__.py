"""Evaluation: inference over a test loader, gathering across processes, COCO box and mask AP."""
from .coco_evaluation import COCOEvaluator, dataset_dicts_to_coco, evaluate_predictions, instances_to_coco_json
from .evaluator import DatasetEvaluator, format_results, inference_context, inference_on_dataset

__all__ = ["COCOEvaluator", "DatasetEvaluator", "dataset_dicts_to_coco", "evaluate_predictions",
           "format_results", "inference_context", "inference_on_dataset", "instances_to_coco_json"]
