"""The scheduler daemon over real HTTP on loopback, against stand-in agents: routing, streaming, faults."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from blockctl.cluster.state import ensure_token, load_state
from blockctl.predict.lengths import format_atoms, prior
from blockctl.scheduler.app import SchedulerSettings, create_app
from blockctl.tokens import get_counter
from tests.conftest import free_port, serve_app
from tests.scheduler.fakes import FakeAgent, write_cluster

BODY = {"model": "emulated", "prompt": "Say hello", "max_tokens": 64}


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, *agents: FakeAgent, policy: str = "block", **settings: object
                  ) -> AsyncIterator[str]:
    """Serve the agents and one scheduler over ``tmp_path``; yields the scheduler's URL."""
    token = ensure_token(tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for agent in agents:
            agent.token = token
            urls[agent.name] = await stack.enter_async_context(serve_app(agent.app()))
        write_cluster(tmp_path, urls)
        app = create_app(SchedulerSettings(state_dir=tmp_path, policy=policy, seed=0, poll_s=0.02,
                                           **settings))  # type: ignore[arg-type]
        yield await stack.enter_async_context(serve_app(app))


async def test_block_routes_to_least_predicted_e2e_and_passes_headers(tmp_path: Path) -> None:
    slow, fast = FakeAgent("slow", e2e_s=2.0), FakeAgent("fast", e2e_s=0.5)
    async with cluster(tmp_path, slow, fast) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/completions", json=BODY)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "hello from the agent"
    assert r.headers["x-blockctl-instance"] == "fast"
    assert r.headers["x-blockctl-predicted-e2e-ms"] == "500.0"
    assert r.headers["x-blockctl-predicted-output-tokens"] == "64"  # min(max_tokens, default 256)
    assert r.headers["x-blockctl-length-source"] == "fallback"  # what the load generator records
    assert len(slow.predicts) == len(fast.predicts) == 1 and not slow.forwarded
    sent = fast.forwarded[0]
    assert sent["x-blockctl-predicted-output-tokens"] == "64"
    # the fallback stands for ShareGPT's length shape at its mean (max_tokens caps it at the agent)
    assert sent["x-blockctl-predicted-output-quantiles"] == format_atoms(prior(256))
    assert int(sent["x-blockctl-prompt-tokens"]) == fast.predicts[0]["prompt_tokens"] > 0
    assert sent["x-blockctl-predicted-e2e-ms"] == "500.0"
    assert sent["authorization"] == f"Bearer {fast.token}"


async def test_openai_client_streams_chat_through_the_scheduler(tmp_path: Path) -> None:
    agent = FakeAgent("a")
    async with cluster(tmp_path, agent, FakeAgent("b", e2e_s=5.0)) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        stream = await client.chat.completions.create(
            model="emulated", messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_headers={"x-blockctl-output-tokens": "7"},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        models = await client.models.list()
        await client.close()
    assert text == "hello from the agent"
    assert agent.predicts[0]["predicted_output_tokens"] == 7
    assert [m.id for m in models.data] == ["emulated"]


async def test_malformed_body_is_400_before_any_routing(tmp_path: Path) -> None:
    agent = FakeAgent("a")
    async with cluster(tmp_path, agent) as url, httpx.AsyncClient(base_url=url) as http:
        bad_json = await http.post("/v1/completions", content=b"{nope",
                                   headers={"content-type": "application/json"})
        bad_field = await http.post("/v1/completions", json={**BODY, "max_tokens": "many"})
        bad_hint = await http.post("/v1/completions", json=BODY, headers={"x-blockctl-output-tokens": "-3"})
        no_messages = await http.post("/v1/chat/completions", json={"model": "m"})
    for r in (bad_json, bad_field, bad_hint, no_messages):
        assert r.status_code == 400
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert bad_field.json()["error"]["param"] == "max_tokens"
    assert not agent.predicts and not agent.forwarded


async def test_no_instance_is_503_naming_blockctl_status(tmp_path: Path) -> None:
    async with cluster(tmp_path) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/completions", json=BODY)
        health = await http.get("/health")
    assert r.status_code == 503
    assert "blockctl status" in r.json()["error"]["message"]
    assert health.json()["instances"] == 0


async def test_hanging_agent_is_skipped_at_the_deadline(tmp_path: Path) -> None:
    hung = FakeAgent("hung", e2e_s=0.01, predict_delay_s=1.5)
    ok = FakeAgent("ok", e2e_s=3.0)
    async with cluster(tmp_path, hung, ok, predict_timeout_s=0.2) as url, \
            httpx.AsyncClient(base_url=url) as http:
        started = time.perf_counter()
        r = await http.post("/v1/completions", json=BODY)
        elapsed = time.perf_counter() - started
        metrics = (await http.get("/metrics")).text
    assert r.status_code == 200 and r.headers["x-blockctl-instance"] == "ok"
    assert 0.2 <= elapsed < 1.4  # waited for the deadline, not for the hung agent
    assert 'blockctl_scheduler_agent_errors_total{instance="hung"} 1' in metrics


async def test_all_agents_failing_falls_back_to_round_robin(tmp_path: Path) -> None:
    a, b = FakeAgent("a", predict_status=500), FakeAgent("b", predict_status=500)
    async with cluster(tmp_path, a, b) as url, httpx.AsyncClient(base_url=url) as http:
        replies = [await http.post("/v1/completions", json=BODY) for _ in range(4)]
        chosen = [r.headers["x-blockctl-instance"] for r in replies]
        metrics = (await http.get("/metrics")).text
    assert chosen == ["a", "b", "a", "b"]
    assert "blockctl_scheduler_fallbacks_total 4" in metrics


async def test_dead_instance_is_retried_elsewhere_before_any_byte(tmp_path: Path) -> None:
    dead, alive = FakeAgent("dead", e2e_s=0.1, traffic_status=503), FakeAgent("alive", e2e_s=1.0)
    async with cluster(tmp_path, dead, alive) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/completions", json={**BODY, "stream": True})
        later = [await http.post("/v1/completions", json=BODY) for _ in range(3)]
    assert r.status_code == 200 and r.headers["x-blockctl-instance"] == "alive"
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("data: [DONE]\n\n")
    # "dead" still predicts best, but after its failed forward it is out of rotation (its /load probes
    # fail): no more round trips to it.
    assert [x.headers["x-blockctl-instance"] for x in later] == ["alive"] * 3
    assert len(dead.forwarded) == 1 and len(alive.forwarded) == 4


async def test_connection_refused_instance_is_retried(tmp_path: Path) -> None:
    alive = FakeAgent("alive", e2e_s=1.0)
    token = ensure_token(tmp_path)
    alive.token = token
    async with serve_app(alive.app()) as alive_url_, contextlib.AsyncExitStack() as stack:
        # "gone" predicts best but nobody listens there: /predict fails, so it is skipped; with a policy that
        # asks nobody (round-robin) the forward itself fails and is retried on "alive".
        write_cluster(tmp_path, {"gone": f"http://127.0.0.1:{free_port()}", "alive": alive_url_})
        app = create_app(SchedulerSettings(state_dir=tmp_path, policy="round-robin", seed=0, poll_s=0.02))
        url = await stack.enter_async_context(serve_app(app))
        async with httpx.AsyncClient(base_url=url) as http:
            replies = [await http.post("/v1/completions", json=BODY) for _ in range(4)]
            metrics = (await http.get("/metrics")).text
    assert all(r.status_code == 200 and r.headers["x-blockctl-instance"] == "alive" for r in replies)
    # Request 2 tried "gone" and was retried; "gone" is then benched, so requests 3 and 4 skip it.
    assert "blockctl_scheduler_retries_total 1" in metrics
    assert 'blockctl_scheduler_forward_errors_total{instance="gone"} 1' in metrics


async def test_broken_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    agent = FakeAgent("a", break_stream_after=2)
    async with cluster(tmp_path, agent) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        got = []
        with pytest.raises(openai.APIError, match="failed while streaming"):
            stream = await client.completions.create(model="emulated", prompt="hi", stream=True)
            async for chunk in stream:
                got.append(chunk.choices[0].text)
        await client.close()
    assert got == ["hello", " from"]


async def test_draining_instances_get_nothing_and_changes_are_picked_up(tmp_path: Path) -> None:
    a, b = FakeAgent("a", e2e_s=0.1), FakeAgent("b", e2e_s=1.0)
    async with cluster(tmp_path, a, b) as url, httpx.AsyncClient(base_url=url) as http:
        first = await http.post("/v1/completions", json=BODY)
        state = load_state(tmp_path)
        assert state is not None
        write_cluster(tmp_path, {i.name: i.agent_url for i in state.instances}, draining=("a",))
        await asyncio.sleep(0.3)
        second = await http.post("/v1/completions", json=BODY)
        health = (await http.get("/health")).json()
    assert first.headers["x-blockctl-instance"] == "a"
    assert second.headers["x-blockctl-instance"] == "b"
    assert health["instances"] == 1


async def test_api_keys_guard_the_public_endpoint(tmp_path: Path) -> None:
    async with cluster(tmp_path, FakeAgent("a"), api_keys=frozenset({"sk-1"})) as url, \
            httpx.AsyncClient(base_url=url) as http:
        denied = await http.post("/v1/completions", json=BODY)
        wrong = await http.post("/v1/completions", json=BODY, headers={"authorization": "Bearer sk-2"})
        allowed = await http.post("/v1/completions", json=BODY, headers={"authorization": "Bearer sk-1"})
        health = await http.get("/health")
    assert denied.status_code == wrong.status_code == 401
    assert denied.json()["error"]["code"] == "invalid_api_key"
    assert allowed.status_code == 200 and health.status_code == 200


@pytest.mark.parametrize(("policy", "loads"), [("least-outstanding", 1), ("round-robin", 0)])
async def test_non_predictive_policies_ask_load_or_nothing(tmp_path: Path, policy: str, loads: int) -> None:
    a, b = FakeAgent("a", outstanding=5), FakeAgent("b", outstanding=1)
    async with cluster(tmp_path, a, b, policy=policy) as url, httpx.AsyncClient(base_url=url) as http:
        await asyncio.sleep(0.2)  # new agents get one /load to open a connection early
        before = (a.loads, b.loads)
        r = await http.post("/v1/completions", json=BODY)
    assert r.status_code == 200
    assert r.headers["x-blockctl-instance"] == ("b" if policy == "least-outstanding" else "a")
    assert "x-blockctl-predicted-e2e-ms" not in r.headers
    assert (a.loads - before[0], b.loads - before[1]) == (loads, loads)
    assert not a.predicts and not b.predicts


class StubTagger:
    """The tagger seam: async predict(text) -> int | None, plus the optional lifecycle."""

    def __init__(self, answer: int | None) -> None:
        self.answer = answer
        self.prompts: list[str] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def predict(self, prompt_text: str) -> int | None:
        self.prompts.append(prompt_text)
        return self.answer


@pytest.mark.parametrize(("answer", "expected"), [(40, "40"), (None, "64")])
async def test_tagger_seam_predicts_the_length_unless_the_client_hints(
    tmp_path: Path, answer: int | None, expected: str
) -> None:
    agent, tagger = FakeAgent("a"), StubTagger(answer)
    token = ensure_token(tmp_path)
    agent.token = token
    async with serve_app(agent.app()) as agent_url:
        write_cluster(tmp_path, {"a": agent_url})
        app = create_app(SchedulerSettings(state_dir=tmp_path, seed=0), tagger=tagger)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
            tagged = await http.post("/v1/completions", json=BODY)
            hinted = await http.post("/v1/completions", json=BODY, headers={"x-blockctl-output-tokens": "9"})
            metrics = (await http.get("/metrics")).text
    assert tagger.started and tagger.closed
    assert tagger.prompts == ["Say hello"]  # asked once: the hinted request never reached it
    assert tagged.headers["x-blockctl-predicted-output-tokens"] == expected
    assert hinted.headers["x-blockctl-predicted-output-tokens"] == "9"
    source = "tagger" if answer else "fallback"
    assert f'blockctl_scheduler_output_length_source_total{{source="{source}"}} 1' in metrics


BAD_BODIES = [
    b"", b"null", b"[]", b'"text"', b"\xff\xfe", b'{"prompt": 5}', b'{"prompt": []}', b'{"prompt": [[1], [2]]}',
    b'{"prompt": "x", "n": 3}', b'{"prompt": "x", "max_tokens": 0}', b'{"prompt": "x", "stream": "yes"}',
    b'{"prompt": "x", "stream_options": {"include_usage": true}}', b'{"prompt": "x", "temperature": 9}',
    b'{"messages": []}', b'{"messages": [{"content": "no role"}]}', b'{"messages": "hi"}',
    b'{"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}',
]


async def test_garbage_bodies_get_4xx_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    agent = FakeAgent("a")
    async with cluster(tmp_path, agent) as url, httpx.AsyncClient(base_url=url) as http:
        for body in BAD_BODIES:
            for path in ("/v1/completions", "/v1/chat/completions"):
                r = await http.post(path, content=body, headers={"content-type": "application/json"})
                assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
                assert "message" in r.json()["error"]
        ok = await http.post("/v1/completions", json=BODY)
    assert ok.status_code == 200
    assert len(agent.forwarded) == 1


async def test_oversized_body_is_413_without_routing(tmp_path: Path) -> None:
    agent = FakeAgent("a")
    async with cluster(tmp_path, agent, max_body_bytes=1000) as url, httpx.AsyncClient(base_url=url) as http:
        big = await http.post("/v1/completions", json={**BODY, "prompt": "word " * 300})
        small = await http.post("/v1/completions", json=BODY)
    assert big.status_code == 413 and "larger than 1000 bytes" in big.json()["error"]["message"]
    assert small.status_code == 200
    assert not agent.predicts[1:] and len(agent.forwarded) == 1


async def test_tokenize_and_version_as_vllm_serves_them(tmp_path: Path) -> None:
    """vLLM's bench client aligns prompts through /tokenize; without it, it warns and skips the alignment."""
    async with cluster(tmp_path, FakeAgent("a"), api_keys=frozenset({"k"})) as url, \
            httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer k"}) as http:
        tok = (await http.post("/tokenize", json={"model": "emulated", "prompt": "hello world",
                                                  "add_special_tokens": False})).json()
        chat = (await http.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]})).json()
        bad = await http.post("/tokenize", json={"prompt": 3})
        version = await http.get("/version")
        denied = await http.post("/tokenize", json={"prompt": "x"}, headers={"authorization": "Bearer no"})
    assert tok == {"count": 2, "max_model_len": 4096, "tokens": get_counter().encode("hello world"),
                   "token_strs": None}
    assert chat["count"] == len(chat["tokens"]) > 1
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert version.status_code == 200 and "blockctl" in version.json()["version"]
    assert denied.status_code == 401


async def test_a_chat_s_earlier_replies_set_its_length_when_the_tagger_has_a_history_table(tmp_path: Path) -> None:
    """With earlier assistant messages the reply-history table answers (source "history", its bin's atoms);
    a first turn still goes to the tagger, and a client's hint still wins."""
    from blockctl.predict.history import fit_history
    from blockctl.predict.lengths import dist

    tagger = StubTagger(40)
    short, long = [[20, 20, 25]] * 50, [[600, 700, 650]] * 50  # short replies stay short, long ones long
    history = tagger.history = fit_history(short + long, bins=2)  # type: ignore[attr-defined]
    agent = FakeAgent("a")
    agent.token = ensure_token(tmp_path)
    earlier = "x " * 300  # a long earlier reply: the long conversations' bin
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": earlier},
                                       {"role": "user", "content": "and then?"}]}
    first = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with serve_app(agent.app()) as agent_url:
        write_cluster(tmp_path, {"a": agent_url})
        app = create_app(SchedulerSettings(state_dir=tmp_path, seed=0), tagger=tagger)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
            later = await http.post("/v1/chat/completions", json=chat)
            opening = await http.post("/v1/chat/completions", json=first)
            hinted = await http.post("/v1/chat/completions", json=chat, headers={"x-blockctl-output-tokens": "9"})
    assert get_counter().count(earlier) > history.edges[0]
    assert later.headers["x-blockctl-length-source"] == "history"
    assert later.headers["x-blockctl-predicted-output-tokens"] == "675"  # the long bin's mean (650s and 700s)
    assert agent.forwarded[0]["x-blockctl-predicted-output-quantiles"] == format_atoms(dist(history.atoms[1]))
    assert opening.headers["x-blockctl-length-source"] == "tagger"
    assert hinted.headers["x-blockctl-length-source"] == "header"
    assert tagger.prompts == ["user: hi\nassistant:"]  # only the first turn asked the tagger
