"""Worker processes for simulations that run side by side (``bench compare --sim``, ``bench capacity --sim``).

Workers are *spawned*, never forked: a parent that has run torch (a tagger predicting the workload's lengths)
holds an OpenMP thread pool, and a forked child that then runs torch itself waits forever on that pool's
locks. With ``--lengths tagger:DIR`` the parent warms the tagger's cache before the pool starts, and a worker
that needs more requests than were warmed runs the tagger too: with fork, that run never ended.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` fresh interpreters (what they run must be picklable, module-level functions)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
