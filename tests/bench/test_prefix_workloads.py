"""Workloads with shared prefixes: what they share is in their token ids, as an engine would hash it."""

from __future__ import annotations

from collections import Counter

from blockctl.bench.workloads import load_workload
from blockctl.bench.workloads.prefixed import GSP_GROUPS, GSP_QUESTION, GSP_SYSTEM, TENANTS
from blockctl.bench.workloads.tokenize import encode


def test_shared_prefix_requests_of_a_tenant_share_its_system_prompt() -> None:
    items = load_workload("shared-prefix", num_requests=400, seed=3)
    assert all(i.token_ids is not None and len(i.token_ids) == i.prompt_tokens for i in items)
    assert all(i.prompt_tokens + i.output_tokens <= 4000 for i in items)
    heads = Counter(tuple(i.token_ids[:1000]) for i in items if i.token_ids is not None)
    assert 100 < len(heads) <= TENANTS and max(heads.values()) > 1  # 400 draws over 150 tenants
    first = items[0]
    assert first.prompt is not None and list(encode(first.prompt)) == list(first.token_ids or ())


def test_generated_shared_prefix_has_sglang_s_shape() -> None:
    items = load_workload("generated-shared-prefix", num_requests=GSP_GROUPS * 2, seed=0)
    # synthesised text is GSP_SYSTEM + GSP_QUESTION tokens, give or take a merge where the two meet
    assert all(abs(i.prompt_tokens - GSP_SYSTEM - GSP_QUESTION) <= 2 for i in items)
    assert len({tuple(i.token_ids[:GSP_SYSTEM]) for i in items if i.token_ids is not None}) <= GSP_GROUPS


def test_a_multiturn_turn_extends_the_conversation_so_far_with_the_reply_in_it() -> None:
    items = load_workload("sharegpt-multiturn", num_requests=600, seed=0)
    full = {tuple(i.token_ids) for i in items if i.token_ids is not None}  # prompt + reply of each turn
    later = [i for i in items if i.prompt is not None and i.prompt.count("USER:") >= 2]
    assert len(later) > 50
    for i in later:
        ids = list(i.token_ids or ())
        # the previous turn (prompt + reply) is a strict prefix of this prompt
        assert any(len(f) < i.prompt_tokens and tuple(ids[: len(f)]) == f for f in full)
    assert max(i.prompt_tokens + i.output_tokens for i in items) <= 4000


def test_a_multiturn_turn_carries_its_earlier_replies_and_the_test_split_holds_out_whole_conversations() -> None:
    from blockctl.bench.workloads.prefixed import ASSISTANT, USER
    from blockctl.tagger.dataset import split_of

    items = load_workload("sharegpt-multiturn:test", num_requests=600, seed=0)
    for i in items:
        assert i.prompt is not None and i.prompt.startswith(USER)
        turns = i.prompt[len(USER):].split(USER)  # "user text" + ASSISTANT + " reply" per earlier turn
        assert split_of(turns[0].split(ASSISTANT)[0]) == "test"  # its first example is in the test split
        earlier = [len(encode(t.split(ASSISTANT, 1)[1])) for t in turns[:-1]]
        assert list(i.replies) == earlier  # the replies a chat request would carry, in tokens
    assert sum(bool(i.replies) for i in items) > 200
