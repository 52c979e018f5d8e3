"""Pictures of what a model sees and finds: instances drawn on images (masks, boxes, labels), a
predictor's detections on image files (tools/demo.py), a training set as stored or as the loader yields
it (tools/visualize_data.py), saved results beside the ground truth (tools/visualize_json_results.py),
training curves of runs (tools/plot_metrics.py), and precision/recall and COCO error-analysis plots
(tools/eval_json.py). It sits at the top of the package, beside gn_det.benchmark: it may import any
layer below."""
from .draw import MASK_ALPHA, Instances, draw_instances, instance_colors, side_by_side

__all__ = ["MASK_ALPHA", "Instances", "draw_instances", "instance_colors", "side_by_side"]
