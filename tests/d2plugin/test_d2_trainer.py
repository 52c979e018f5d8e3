"""detectron2's DefaultTrainer, optimizer, freezing and precise BN with gn_det norms (the plugin on)."""
import copy

import pytest

from d2_common import SKIP_REASON

pytest.importorskip("detectron2", reason=SKIP_REASON)

import torch  # noqa: E402

from gn_det.layers import SwitchNorm2d, is_norm  # noqa: E402


def _train(cfg):
    from detectron2.engine import DefaultTrainer

    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    before = copy.deepcopy(trainer.model.state_dict())
    losses = []

    from detectron2.engine import HookBase

    class Record(HookBase):
        def after_step(self):
            losses.append(self.trainer.storage.history("total_loss").latest())

    trainer.register_hooks([Record()])
    trainer.train()
    return trainer, before, losses


def test_default_trainer_trains_sn_mask_rcnn_with_frozen_stages_and_norm_weight_decay(tiny_d2_cfg):
    cfg = tiny_d2_cfg("mask_rcnn_R_50_FPN_2x_sn.yaml", "MODEL.RESNETS.DEPTH", "18", "MODEL.BACKBONE.FREEZE_AT", "2",
                      "SOLVER.MAX_ITER", "6", "SOLVER.WEIGHT_DECAY", "1e-4", "SOLVER.WEIGHT_DECAY_NORM", "0.0",
                      "MODEL.ROI_BOX_HEAD.NUM_CONV", "2")
    trainer, before, losses = _train(cfg)
    model = trainer.model
    after = model.state_dict()
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    sn = {n: m for n, m in model.named_modules() if isinstance(m, SwitchNorm2d)}
    # stem 1, res2 2 blocks x 2 convs, res3-5 (2 x 2 + shortcut) each; FPN 4 + 4; box head 2; mask head 2
    assert len(sn) == 1 + 4 + 3 * 5 + 8 + 2 + 2
    frozen = [n for n in sn if n.startswith(("backbone.bottom_up.stem", "backbone.bottom_up.res2"))]
    trained = [n for n in sn if n.startswith("backbone.bottom_up.res4")]
    assert frozen and trained
    for name in frozen:  # parameters and running statistics of frozen stages do not change
        for key in ("weight", "bias", "mean_weight", "var_weight", "running_mean", "running_var"):
            torch.testing.assert_close(after[f"{name}.{key}"], before[f"{name}.{key}"], rtol=0, atol=0)
    moved = [n for n in trained if not torch.equal(after[f"{n}.mean_weight"], before[f"{n}.mean_weight"])]
    assert moved, "SN importance weights of a trained stage should move"
    stats = [n for n in trained if not torch.equal(after[f"{n}.running_mean"], before[f"{n}.running_mean"])]
    assert stats, "SN running statistics of a trained stage should update"
    # weight decay: every trainable parameter of a norm in a group with weight decay 0, the others 1e-4
    norm_params = {id(p) for m in model.modules() if is_norm(m) for p in m.parameters(recurse=False)}
    decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    sn_params = [p for m in sn.values() for p in m.parameters(recurse=False) if p.requires_grad]
    assert sn_params and all(decay[id(p)] == 0.0 for p in sn_params)
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in norm_params]
    assert others and all(decay[id(p)] == 1e-4 for p in others)


def test_weight_decay_bias_override_wins_over_norm_decay(tiny_d2_cfg):
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    cfg = tiny_d2_cfg("mask_rcnn_R_50_FPN_2x_sn.yaml", "MODEL.RESNETS.DEPTH", "18", "SOLVER.WEIGHT_DECAY", "1e-4",
                      "SOLVER.WEIGHT_DECAY_NORM", "0.0", "SOLVER.WEIGHT_DECAY_BIAS", "5e-4")
    model = build_model(cfg)
    decay = {id(p): g["weight_decay"] for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    sn = next(m for m in model.modules() if isinstance(m, SwitchNorm2d) and m.weight.requires_grad)
    assert decay[id(sn.weight)] == 0.0 and decay[id(sn.mean_weight)] == 0.0 and decay[id(sn.bias)] == 5e-4


def test_precise_bn_recomputes_sn_statistics_as_the_mean_of_batch_statistics(tiny_d2_cfg):
    from detectron2.data import build_detection_train_loader
    from detectron2.engine.hooks import PreciseBN, get_bn_modules
    from detectron2.modeling import build_model
    cfg = tiny_d2_cfg("mask_rcnn_R_50_FPN_2x_sn.yaml", "MODEL.RESNETS.DEPTH", "18", "MODEL.BACKBONE.FREEZE_AT", "0")
    model = build_model(cfg)
    model.train()
    sn = [m for m in model.modules() if isinstance(m, SwitchNorm2d)]
    assert {id(m) for m in sn} <= {id(m) for m in get_bn_modules(model)}
    layer = model.backbone.bottom_up.res3[0].conv1.norm
    seen = []
    handle = layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().double().mean((0, 2, 3))))
    loader = build_detection_train_loader(cfg)
    hook = PreciseBN(0, model, loader, 3)
    hook.update_stats()
    handle.remove()
    assert len(seen) == 3
    expected = torch.stack(seen).mean(0)  # the exact average of the 3 batches' channel means, computed here
    torch.testing.assert_close(layer.running_mean.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_amp_trainer_on_cuda_with_sn_and_gn_det_builders(tiny_d2_cfg):
    """detectron2's AMPTrainer (SOLVER.AMP.ENABLED; it requires CUDA) with SN in detectron2's builders and
    gn_det's: finite losses, float32 running statistics. On CPU the same models run under bf16 autocast
    (test_d2_builders.py)."""
    cfg = tiny_d2_cfg("Base-gn_det-builders.yaml", "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True",
                      "MODEL.RESNETS.NORM", "SN", "MODEL.FPN.NORM", "SN", "MODEL.ROI_BOX_HEAD.NORM", "SN",
                      "MODEL.ROI_BOX_HEAD.NUM_CONV", "2", "MODEL.ROI_MASK_HEAD.NORM", "GN",
                      "MODEL.BACKBONE.FREEZE_AT", "0", "SOLVER.MAX_ITER", "4")
    trainer, _, losses = _train(cfg)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    sn = next(m for m in trainer.model.modules() if isinstance(m, SwitchNorm2d))
    assert sn.running_mean.dtype == torch.float32 and sn.running_mean.is_cuda
