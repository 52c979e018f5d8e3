"""Run by test_syncsn_launch: 2 CPU processes under detectron2's ``launch`` (gloo), each putting its own images
through the SyncSN that detectron2's get_norm builds with the plugin on; each saves its input, output and
running statistics to OUT/rank<k>.pt. Usage: python syncsn_launch.py OUT"""
import os
import sys

import torch


def main(out):
    import gn_det.detectron2  # noqa: F401
    from detectron2.modeling.backbone.resnet import get_norm
    from detectron2.utils import comm

    rank = comm.get_rank()
    torch.manual_seed(0)
    norm = get_norm("SyncSN", 8)  # the same initial parameters on both ranks
    norm.train()
    x = torch.randn(1 + rank, 8, 5, 7, generator=torch.Generator().manual_seed(10 + rank)) * (1 + rank) + rank
    x.requires_grad_(True)
    y = norm(x)
    (y * torch.arange(8.0)[None, :, None, None]).sum().backward()
    torch.save({"x": x.detach(), "y": y.detach(), "running_mean": norm.running_mean.clone(),
                "running_var": norm.running_var.clone(), "type": type(norm).__name__,
                "world": comm.get_world_size()}, os.path.join(out, f"rank{rank}.pt"))


if __name__ == "__main__":
    from detectron2.engine import launch
    launch(main, 2, dist_url="tcp://127.0.0.1:%d" % (20000 + os.getpid() % 20000), args=(sys.argv[1],))
