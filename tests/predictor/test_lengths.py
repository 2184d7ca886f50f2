"""Lengths as distributions: the expected rest of a reply given its age, quantiles, the prior, the header."""

from __future__ import annotations

import pytest

from blockctl.predict.lengths import DEFAULT_QUANTILES, dist, exact, format_atoms, parse_atoms, prior
from blockctl.predict.tracker import Tracked
from blockctl.predict.view import run_length

from .helpers import core_with


def test_a_reply_that_ran_long_is_expected_to_run_longer() -> None:
    d = dist([10, 20, 30, 400])
    assert d.mean == 115.0 and d.expected_total(0) == 115
    assert d.expected_total(25) == 215  # only 30 and 400 remain possible: mean 215
    assert d.expected_total(100) == 400
    assert d.expected_total(400) is None  # past every atom: the distribution has nothing to say
    assert d.quantile_total(0.5, 25) == 215 and d.quantile_total(0.9, 25) >= 300


def test_quantiles_are_linear_between_atoms_at_their_probabilities() -> None:
    d = dist([100, 200, 300, 400])  # atoms at 1/8, 3/8, 5/8, 7/8
    assert d.quantile(0.125) == 100 and d.quantile(0.5) == 250 and d.quantile(0.875) == 400
    assert d.quantile(0.0) == 100 and d.quantile(1.0) == 400


def test_the_prior_keeps_sharegpts_shape_at_the_given_mean() -> None:
    p = prior(100)
    assert abs(p.mean - 100) < 2 and len(p.atoms) == len(DEFAULT_QUANTILES)
    assert p.atoms[-1] / p.atoms[0] > 50  # a heavy right tail, unlike one number
    assert exact(7).exact and not p.exact and dist([3, 1]) is dist([1, 3])  # cached, order-free


def test_header_round_trip_and_bad_values() -> None:
    d = prior(256)
    assert parse_atoms(format_atoms(d)) is d
    for bad in ("", "0,3", "x", ",".join(["5"] * 65)):
        with pytest.raises(ValueError):
            parse_atoms(bad)


def test_the_what_if_runs_others_to_their_expected_total_given_age() -> None:
    d = prior(256)
    young, old = run_length(10, 256, None, 4000, d), run_length(256, 256, None, 4000, d)
    assert young == d.expected_total(10) and old > 256 + 200  # one number would say: done at 256
    assert run_length(256, 256, 300, 4000, d) == 300  # max_tokens still caps it
    assert run_length(256, 256, None, 4000, exact(256)) == run_length(256, 256, None, 4000)  # overrun rule
    past = run_length(5000, 256, None, 9000, d)  # beyond every atom: the overrun rule
    assert past == run_length(5000, 256, None, 9000)


def test_the_agent_view_uses_each_requests_distribution() -> None:
    core = core_with(0, 0)
    d = prior(200)
    core.tracker.add(Tracked("a", 99.0, 100, 200, stream=True, produced=300, first_token_at=99.1,
                             last_token_at=99.99, length_dist=d))
    core.tracker.add(Tracked("b", 99.0, 100, 200, stream=True, produced=300, first_token_at=99.1,
                             last_token_at=99.99))
    a, b = core.view(100.0).running
    assert a.output_tokens == d.expected_total(300) and b.output_tokens == 450  # overrun: half again


def test_what_the_agent_keeps_for_what_it_was_told() -> None:
    from blockctl.predict.lengths import told_length

    sent = format_atoms(dist([5, 50, 500]))
    assert told_length(sent, default=256, hinted=True, ignore_eos=False, limit=None) is dist([5, 50, 500])
    assert told_length(None, default=256, hinted=True, ignore_eos=False, limit=None) is None  # a hint: exact
    assert told_length(None, default=256, hinted=False, ignore_eos=True, limit=64) is None  # ignore_eos: exact
    assert told_length(None, default=256, hinted=False, ignore_eos=False, limit=64) is prior(256)  # nothing
    with pytest.raises(ValueError):
        told_length("1,x", default=256, hinted=True, ignore_eos=False, limit=None)
