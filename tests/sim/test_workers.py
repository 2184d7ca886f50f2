"""Simulation workers survive a parent that has run torch (as ``--lengths tagger:DIR`` makes it do)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import torch
    from blockctl.bench.workers import worker_pool

    def work(_):
        return float(torch.ones(2**22).add_(1).sum())  # a parallel region in the worker

    if __name__ == "__main__":
        torch.set_num_threads(2)
        torch.ones(2**22).add_(1).sum()  # the parent's OpenMP pool is now running
        with worker_pool(2) as pool:
            print(sum(pool.map(work, range(4))))
""")


def test_workers_can_run_torch_after_the_parent_did(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    script = tmp_path / "hot_parent.py"
    script.write_text(SCRIPT)
    # with forked workers this never ends (the inherited OpenMP pool's locks); the timeout makes that a failure
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == 4 * 2.0 * 2**22
