"""Arrival processes (rate, burstiness -> CV, trace replay) and the synthetic workloads' statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from blockctl.bench.workloads import WORKLOADS, arrival_times, load_workload, synth_prompt
from blockctl.bench.workloads.dataset import keep
from blockctl.bench.workloads.tokenize import count_tokens
from blockctl.errors import WorkloadError

N = 20_000


def _gaps(t: np.ndarray) -> np.ndarray:
    return np.diff(t)


@pytest.mark.parametrize(
    ("process", "burstiness", "cv"),
    [("poisson", 1.0, 1.0), ("gamma", 0.25, 2.0), ("gamma", 4.0, 0.5), ("constant", 1.0, 0.0)],
)
def test_rate_and_burstiness(process: str, burstiness: float, cv: float) -> None:
    t = arrival_times(process, N, qps=8.0, burstiness=burstiness, seed=3)
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    gaps = _gaps(t)
    assert (N - 1) / t[-1] == pytest.approx(8.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.06)


def test_seed_reproducible_and_qps_inf() -> None:
    a = arrival_times("poisson", 100, qps=2.0, seed=1)
    assert np.array_equal(a, arrival_times("poisson", 100, qps=2.0, seed=1))
    assert not np.array_equal(a, arrival_times("poisson", 100, qps=2.0, seed=2))
    assert np.array_equal(arrival_times("poisson", 5, qps=math.inf), np.zeros(5))


def test_trace_replay_scaled() -> None:
    t = arrival_times("trace", 3, qps=1.0, timestamps=[10.0, 12.0, 16.0, 99.0], time_scale=0.5)
    assert t.tolist() == [0.0, 1.0, 3.0]
    with pytest.raises(WorkloadError, match="time stamp"):
        arrival_times("trace", 2, qps=1.0, timestamps=[1.0, None])
    with pytest.raises(WorkloadError, match="unknown arrival process 'weibull'"):
        arrival_times("weibull", 2, qps=1.0)
    with pytest.raises(WorkloadError, match="qps"):
        arrival_times("poisson", 2, qps=0.0)


def _stats(name: str, n: int = 5000) -> tuple[float, float, float, float]:
    items = load_workload(name, num_requests=n, seed=7)
    assert len(items) == n
    assert all(i.prompt is None and i.prompt_tokens >= 1 and i.output_tokens >= 1 for i in items)
    p = np.array([i.prompt_tokens for i in items])
    o = np.array([i.output_tokens for i in items])
    return float(np.median(p)), float(np.median(o)), float(p.mean()), float(o.mean())


def test_azure_medians_match_splitwise() -> None:
    mp, mo, _, _ = _stats("azure-conv")
    assert mp == pytest.approx(1020, rel=0.05) and mo == pytest.approx(129, rel=0.08)
    mp, mo, _, _ = _stats("azure-code")
    assert mp == pytest.approx(1500, rel=0.05) and mo == pytest.approx(13, rel=0.1)


def test_synthetic_sharegpt_passes_vllm_filter_and_matches_means() -> None:
    items = load_workload("synthetic-sharegpt", num_requests=5000, seed=1)
    assert all(keep(i.prompt_tokens, i.output_tokens) for i in items)
    med_p, med_o, mean_p, mean_o = _stats("synthetic-sharegpt")
    assert med_p == pytest.approx(106, rel=0.1) and med_o == pytest.approx(134, rel=0.1)
    assert mean_p == pytest.approx(219, rel=0.12) and mean_o == pytest.approx(201, rel=0.08)


def test_burstgpt_zipf_lengths_and_gamma_timestamps() -> None:
    items = load_workload("burstgpt", num_requests=N, seed=2)
    p = np.array([i.prompt_tokens for i in items])
    assert p.max() < 1024 and p.min() >= 1
    zeta_trunc = sum(k**-1.1 for k in range(1, 1024))
    assert np.mean(p == 1) == pytest.approx(1 / zeta_trunc, abs=0.01)  # Zipf(1.1) truncated below 1024
    stamps = np.array([i.timestamp for i in items], dtype=float)
    gaps = np.diff(stamps)
    assert gaps.mean() == pytest.approx(1.0, rel=0.05)  # shape 0.5 x scale 2 s
    assert gaps.std() / gaps.mean() == pytest.approx(math.sqrt(2), rel=0.08)


def test_every_builtin_name_is_loadable_without_the_dataset() -> None:
    for name in WORKLOADS:
        if not name.startswith("sharegpt"):  # the ShareGPT forms need the dataset
            assert len(load_workload(name, num_requests=3)) == 3


@pytest.mark.parametrize("tokens", [1, 2, 17, 512, 3000])
def test_synthesised_prompt_has_exact_token_count(tokens: int) -> None:
    text = synth_prompt(tokens, seed=tokens)
    assert count_tokens([text]) == [tokens]
    assert synth_prompt(tokens, seed=tokens) == text


@pytest.mark.slow
def test_builtin_sharegpt_filtered_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("BLOCKCTL_CACHE_DIR", str(tmp_path))
    items = load_workload("sharegpt", num_requests=20_000, seed=0)  # more than the ~15.5k usable: repeats
    assert len(items) == 20_000 and all(i.prompt and keep(i.prompt_tokens, i.output_tokens) for i in items)
    assert len({i.prompt for i in items}) > 14_000
    assert list(tmp_path.glob("sharegpt-*.json"))
    start = time.perf_counter()
    again = load_workload("sharegpt", num_requests=100, seed=0)
    assert time.perf_counter() - start < 8.0  # the cache makes it ~0.5 s; uncached tokenising takes >10 s
    assert again == items[:100]
