"""The pretraining classifier: the detectors' ResNet under ``backbone.bottom_up``, a loss in training and
logits in eval, on CPU and CUDA, in float32 and under autocast."""
import os

import pytest
import torch
import torch.nn.functional as F

from gn_det.config import get_cfg
from gn_det.modeling import build_model
from gn_det.modeling.classifier import build_backbone_classifier

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(name, device):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "tiny", "pretrain", name))
    cfg.MODEL.DEVICE = device
    return cfg


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("amp", [False, True])
def test_loss_and_logits(device, amp):
    cfg = _cfg("R_18_gn.yaml", device)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3"]  # a shorter network: the same code path, faster
    model = build_backbone_classifier(cfg)
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 32, 32, generator=gen) * 255 for _ in range(4)]
    targets = [{"label": torch.tensor(i % 8)} for i in range(4)]
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    with torch.autocast(device, dtype=dtype, enabled=amp):
        losses = model([im.to(device) for im in images], targets)
    assert set(losses) == {"loss_cls"} and losses["loss_cls"].dtype == torch.float32
    losses["loss_cls"].backward()
    assert model.pretrain_head.weight.grad is not None and model.backbone.bottom_up.stem.conv1.weight.grad is not None
    model.eval()
    with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=amp):
        logits = model(torch.stack(images).to(device))
    assert logits.shape == (4, 8)
    # the loss is the cross entropy of the logits (float64 reference, same weights, eval-free norm: GN)
    model.train()
    with torch.no_grad():
        again = model([im.to(device) for im in images], targets)["loss_cls"]
        want = F.cross_entropy(model(torch.stack(images).to(device), None).double().cpu(),
                               torch.arange(4) % 8)
    if not amp:
        torch.testing.assert_close(again.double().cpu(), want, rtol=1e-5, atol=1e-5)


def test_backbone_names_are_the_detectors():
    cfg = _cfg("R_18_bn.yaml", "cpu")
    classifier = {k for k in build_backbone_classifier(cfg).state_dict() if not k.startswith("pretrain_head.")}
    det_cfg = get_cfg()
    det_cfg.merge_from_file(os.path.join(REPO, "configs", "tiny", "finetune", "bn.yaml"))
    det_cfg.MODEL.DEVICE = "cpu"
    det_cfg.MODEL.BACKBONE.FREEZE_AT = 0  # FrozenBN keeps no num_batches_tracked: compare unfrozen
    detector = {k for k in build_model(det_cfg).state_dict() if k.startswith("backbone.bottom_up.")}
    assert classifier == detector
