"""The CPU form of DDP on CUDA: DistributedDataParallel runs with find_unused_parameters=False, so a
trainable parameter left without a gradient in some step would make it fail there. Every parameter of
the detector gets one, also from a batch without any ground truth."""
import pytest
import torch

from gn_det.modeling import build_model

from .helpers import tiny_batch, tiny_cfg


@pytest.mark.parametrize("recipe", ["tiny/mask_rcnn_R_18_FPN_gn.yaml", "tiny/mask_rcnn_R_18_FPN_sn.yaml"])
def test_every_trainable_parameter_gets_a_gradient_even_without_boxes(recipe):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(recipe, "MODEL.DEVICE", "cpu")).train()
    images, targets = tiny_batch()
    for batch in ((images, targets), ([images[1]] * 2, [targets[1]] * 2)):  # with boxes; no boxes at all
        model.zero_grad(set_to_none=True)
        sum(model(*batch).values()).backward()
        assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
