"""The --lengths parser and the noisy-length generator's statistics."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from blockctl.bench.sim.lengths import LengthSpec, noisy_lengths, parse_lengths, predicted_lengths
from blockctl.errors import ConfigError, TaggerError


def test_parse_each_kind() -> None:
    assert parse_lengths("oracle") == LengthSpec("oracle")
    assert parse_lengths("noisy:50") == LengthSpec("noisy", pct=50.0)
    assert parse_lengths("tagger") == LengthSpec("tagger")
    assert parse_lengths("tagger:/tmp/t") == LengthSpec("tagger", tagger_dir="/tmp/t")
    assert str(parse_lengths("noisy:12.5")) == "noisy:12.5"
    assert parse_lengths("fixed:202") == LengthSpec("fixed", tokens=202)
    assert str(LengthSpec("fixed", tokens=7)) == "fixed:7"


@pytest.mark.parametrize(
    "bad", ["", "noisy", "noisy:x", "noisy:-1", "noisy:101", "oracle:1", "perfect", "fixed", "fixed:0", "fixed:2.5"]
)
def test_parse_rejects_bad_values(bad: str) -> None:
    with pytest.raises(ConfigError, match="--lengths"):
        parse_lengths(bad)


def test_noisy_error_is_uniform_unbiased_and_bounded() -> None:
    true = [1000] * 20000
    pred = noisy_lengths(true, 50.0, seed=3)
    rel = [p / t - 1.0 for p, t in zip(pred, true, strict=True)]
    assert max(rel) <= 0.5 and min(rel) >= -0.5
    assert abs(statistics.fmean(rel)) < 0.01  # unbiased
    # Uniform on [-0.5, 0.5]: mean |error| 0.25, standard deviation 0.5 / sqrt(3) ≈ 0.2887.
    assert statistics.fmean(abs(r) for r in rel) == pytest.approx(0.25, abs=0.01)
    assert statistics.pstdev(rel) == pytest.approx(0.5 / 3**0.5, abs=0.01)
    # Each quarter of the range gets about a quarter of the samples.
    quarters = [sum(lo <= r < lo + 0.25 for r in rel) for lo in (-0.5, -0.25, 0.0, 0.25)]
    assert all(abs(q / len(rel) - 0.25) < 0.02 for q in quarters)


def test_noisy_is_deterministic_per_seed_and_at_least_one() -> None:
    true = [1, 2, 5, 300, 7]
    assert noisy_lengths(true, 100.0, seed=1) == noisy_lengths(true, 100.0, seed=1)
    assert noisy_lengths(true * 200, 30.0, seed=1) != noisy_lengths(true * 200, 30.0, seed=2)
    assert min(noisy_lengths(true * 200, 100.0, seed=4)) >= 1
    assert noisy_lengths(true, 0.0, seed=9) == true


def test_oracle_is_the_truth_and_fixed_ignores_it() -> None:
    assert predicted_lengths(LengthSpec("oracle"), [3, 9], [None, None], seed=0) == [3, 9]
    assert predicted_lengths(parse_lengths("fixed:50"), [3, 9], [None, None], seed=0) == [50, 50]


def test_tagger_needs_a_directory_and_prompt_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tagger:DIR"):
        predicted_lengths(LengthSpec("tagger"), [3], ["hi"], seed=0)
    with pytest.raises(ConfigError, match="no prompt text"):
        predicted_lengths(LengthSpec("tagger", tagger_dir=str(tmp_path)), [3], [None], seed=0)
    with pytest.raises(TaggerError, match=r"config\.json"):
        predicted_lengths(LengthSpec("tagger", tagger_dir=str(tmp_path)), [3], ["hi"], seed=0)


def test_a_tagger_runs_on_its_held_out_split_only() -> None:
    from blockctl.bench.sim.lengths import held_out_workload
    from blockctl.bench.workloads import read_workload
    from blockctl.tagger.dataset import split_of

    tagger = parse_lengths("tagger:/tmp/t")
    assert held_out_workload("sharegpt", parse_lengths("fixed:9")) == ("sharegpt", None)
    workload, note = held_out_workload("sharegpt", tagger)
    assert workload == "sharegpt:test" and note is not None and "held-out" in note
    assert held_out_workload("other.jsonl", tagger) == ("other.jsonl", None)  # another dataset: as given
    assert held_out_workload("sharegpt-multiturn", tagger)[0] == "sharegpt-multiturn:test"
    with pytest.raises(ConfigError, match="--workload") as refused:
        held_out_workload("sharegpt-multiturn:train", tagger)
    assert refused.value.hint == "--workload sharegpt-multiturn:test"
    for seen in ("sharegpt:train", "sharegpt:val"):
        with pytest.raises(ConfigError, match="--workload"):
            held_out_workload(seen, tagger)
    loaded = read_workload(workload, num_requests=300, seed=1)
    assert len(loaded.items) == 300 and all(split_of(i.prompt) == "test" for i in loaded.items)
    assert "test split" in loaded.notes[0]
