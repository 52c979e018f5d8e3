"""Host reads per training step (issue 18's CPU stand-in for GPU syncs): HostSyncCounter counts exactly the
reads a hand-written function makes, and a Mask R-CNN training step makes one, its loss logging."""
import os

import torch

from gn_det.benchmark.host_syncs import HostSyncCounter
from gn_det.config import get_cfg
from gn_det.engine.solver import build_optimizer
from gn_det.engine.train_loop import SimpleTrainer
from gn_det.modeling import build_model

HERE = os.path.dirname(__file__)


def test_counter_counts_each_kind_of_read():
    t = torch.arange(6.0)
    with HostSyncCounter() as c:
        t.sum().item()            # 1 item
        float(t[1])               # 2 item (float)
        bool((t > 2).any())       # 3 item (bool)
        t.tolist()                # 4 tolist
        t.cpu()                   # 5 cpu
        t.numpy()                 # 6 numpy
        _ = t[t > 3]              # data-dependent shape, counted apart
        _ = t * 2 + 1             # no read
    assert c.count == 6
    assert dict(c.by_kind) == {"item": 3, "tolist": 1, "cpu": 1, "numpy": 1}
    assert dict(c.data_dependent) == {"index": 1}
    assert all("test_host_syncs.py" in s for s in c.sites)
    assert torch.Tensor.tolist is not None and HostSyncCounter().count == 0  # patches undone
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def _batch(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    batch = []
    for i in range(n):
        boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0 + i, 18.0, 60.0, 50.0]])
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        batch.append((torch.rand(3, size, size, generator=g) * 255,
                      {"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks}))
    return batch


def test_training_step_reads_once_for_logging():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(HERE, "tiny_mask_rcnn.yaml"))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    batch = _batch()
    trainer = SimpleTrainer(model, [batch] * 3, build_optimizer(cfg, model))  # batches made beforehand: the
    trainer.run_step()                                                      # loader's CPU work is not the step's
    with HostSyncCounter() as c:
        trainer.run_step()
    # The CPU RoIAlign reads its RoIs' grid sizes from CPU tensors (on CUDA torchvision's kernel runs instead)
    step_reads = [s for s in c.sites if "layers/roi_align.py" not in s]
    assert len(step_reads) == 1, c.sites
    assert "train_loop.py" in step_reads[0]
    assert trainer.storage.history("total_loss")[-1][1] > 0
