"""Plain-value pieces of the daemon: the output-length rule, agent JSON → InstanceView, benching."""

from __future__ import annotations

import random

import pytest

from blockctl.errors import BadRequest
from blockctl.scheduler.agents import view_from_json
from blockctl.scheduler.lengths import parse_hint, resolve
from blockctl.scheduler.metrics import SchedulerMetrics
from blockctl.scheduler.policies import RouteRequest, make_policy
from blockctl.scheduler.routing import Router

LOAD = {"running": 2, "waiting": 1, "outstanding": 3, "kv_free_blocks": 10, "kv_total_blocks": 20,
        "waiting_prompt_blocks": 4, "recent_requests": 9}


@pytest.mark.parametrize(
    ("hint", "tagged", "limit", "ignore_eos", "expected"),
    [
        (40, 90, None, False, (40, "header")),
        (None, 90, None, False, (90, "tagger")),
        (None, None, None, False, (256, "fallback")),
        (None, 0, None, False, (256, "fallback")),  # a tagger's non-answer is no answer
        (None, None, 16, False, (16, "fallback")),  # completions' default max_tokens
        (500, None, 100, False, (100, "header")),  # clamped to the client's limit
        (None, 300, 64, False, (64, "tagger")),
        (5, 300, 64, True, (64, "ignore_eos")),  # the engine will produce exactly the limit
        (None, None, None, True, (256, "fallback")),
    ],
)
def test_resolve(hint: int | None, tagged: int | None, limit: int | None, ignore_eos: bool,
                 expected: tuple[int, str]) -> None:
    assert resolve(hint=hint, tagged=tagged, limit=limit, ignore_eos=ignore_eos, default=256) == expected


def test_parse_hint() -> None:
    assert parse_hint(None) is None
    assert parse_hint("12") == 12
    for bad in ("0", "-1", "ten", "1.5"):
        with pytest.raises(BadRequest) as info:
            parse_hint(bad)
        assert info.value.param == "x-blockctl-output-tokens"


def test_view_from_predict_and_load() -> None:
    answer = {**LOAD, "ttft_s": 0.1, "e2e_s": 2, "queue_s": 0.0}
    predicted = view_from_json("i0", answer, with_prediction=True)
    assert predicted.prediction is not None and predicted.prediction.e2e_s == 2.0
    assert (predicted.outstanding, predicted.waiting_prompt_blocks, predicted.recent_requests) == (3, 4, 9)
    load = view_from_json("i0", LOAD, with_prediction=False)
    assert load.prediction is None and load.kv_total_blocks == 20
    with_prefill = view_from_json("i0", {**answer, "prefill_s": 0.25}, with_prediction=True).prediction
    assert with_prefill is not None and with_prefill.prefill_s == 0.25
    assert predicted.prediction.prefill_s == 0.0  # an agent that does not say: no miss cost


@pytest.mark.parametrize(
    "data",
    [[], {**LOAD, "running": "2"}, {k: v for k, v in LOAD.items() if k != "outstanding"},
     {**LOAD, "waiting": True}, {**LOAD, "ttft_s": "x", "e2e_s": 1, "queue_s": 0},
     {**LOAD, "ttft_s": 1, "e2e_s": 1, "queue_s": 0, "prefill_s": "0.1"}],
)
def test_malformed_agent_answers_are_value_errors(data: object) -> None:
    with pytest.raises(ValueError, match="malformed agent answer"):
        view_from_json("i0", data, with_prediction=isinstance(data, dict) and "ttft_s" in data)


async def test_instances_out_of_rotation_are_routed_around_until_they_are_back() -> None:
    router = Router(make_policy("round-robin"), rng=random.Random(0), deadline_s=0.1,
                    metrics=SchedulerMetrics("round-robin"))
    req = RouteRequest(prompt_tokens=1, predicted_output_tokens=1)

    async def names() -> list[str]:
        return [v.instance for v in (await router.candidates(req, ("a", "b"), {})).views]

    assert await names() == ["a", "b"]
    router.bench("a", "engine sick", None)
    assert await names() == ["b"]
    router.bench("b", "engine sick", None)
    assert await names() == ["a", "b"]  # everyone out: nobody is excluded
    router.quarantine.back("a")
    assert await names() == ["a"]
    router.quarantine.back("b")
    assert await names() == ["a", "b"]
