"""launch(): spawned gloo processes, torchrun-style environment, and argument errors."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from gn_det.engine.launch import find_free_port, launch

SCRIPT = textwrap.dedent("""
    import sys
    import torch.distributed as dist
    from gn_det.engine import launch
    from gn_det.utils import comm

    def main(tag):
        line = f"{tag} {comm.get_rank()} {comm.get_world_size()} {dist.get_backend()} {comm.all_gather(comm.get_rank() * 10)}\\n"
        sys.stdout.write(line)  # one small write per process: lines of two processes cannot interleave
        sys.stdout.flush()

    if __name__ == "__main__":
        launch(main, int(sys.argv[1]), args=(sys.argv[2],), device="cpu")  # gloo, also on a GPU machine
""")


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(SCRIPT)
    return str(path)


def test_spawn_two_gloo_processes(script):
    out = subprocess.run([sys.executable, script, "2", "spawn"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = sorted(line for line in out.stdout.splitlines() if line.startswith("spawn"))
    assert lines == ["spawn 0 2 gloo [0, 10]", "spawn 1 2 gloo [0, 10]"]


def test_torchrun_environment_is_used(script):
    """As torchrun starts it: RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* set, launch runs main in-process."""
    port = str(find_free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, script, "1", "torchrun"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    # (some torch releases' gloo prints its own "[Gloo] Rank ..." lines to stdout)
    lines = [[line for line in o.splitlines() if line.startswith("torchrun")] for o, _ in outs]
    assert lines == [["torchrun 0 2 gloo [0, 10]"], ["torchrun 1 2 gloo [0, 10]"]]


@pytest.mark.parametrize("kwargs, msg", [
    (dict(num_gpus_per_machine=0), "--num-gpus and --num-machines must be >= 1, got 0 and 1"),
    (dict(num_gpus_per_machine=1, num_machines=2, machine_rank=2), r"--machine-rank should be in \[0, 1\], got 2"),
    (dict(num_gpus_per_machine=1, num_machines=2, dist_url="auto"), "--dist-url auto works on one machine only"),
])
def test_bad_launch_arguments(kwargs, msg, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match=msg):
        launch(print, **kwargs)


def test_cpu_processes_share_the_cores(monkeypatch):
    from gn_det.engine.launch import share_cpu_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    try:
        share_cpu_threads(4)
        assert torch.get_num_threads() == 2
        share_cpu_threads(16)  # more processes than cores: one thread each, never zero
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's setting wins
        torch.set_num_threads(5)
        share_cpu_threads(4)
        assert torch.get_num_threads() == 5
    finally:
        torch.set_num_threads(before)
