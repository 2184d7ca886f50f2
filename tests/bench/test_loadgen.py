"""The load generator against a real emulator on loopback and against small stand-ins at the HTTP seam."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from blockctl import replytable
from blockctl.bench.livelengths import items_table
from blockctl.bench.loadgen import INTERRUPTED, NOT_SENT, LoadSpec, run_live, run_load, send_schedule
from blockctl.bench.metrics import RequestSlo
from blockctl.bench.workloads import WorkItem, parse_arrival
from blockctl_agents.emulator.app import create_app as create_emulator
from tests.conftest import serve_app

MAX_MODEL_LEN = 512


def _items() -> list[WorkItem]:
    items = [WorkItem(None, 20 + 7 * i, 4 + i) for i in range(10)]
    items.insert(4, WorkItem(None, MAX_MODEL_LEN + 50, 8))  # longer than the model: the engine refuses it
    items.append(WorkItem("Tell me about the sea.", 99, 6))  # text given: the server's count wins
    return items


async def test_against_the_emulator_counts_a_failed_request(tmp_path: Path) -> None:
    items = _items()
    replytable.save(tmp_path / "replies.json", items_table(items), source={})
    app = create_emulator(max_model_len=MAX_MODEL_LEN, num_gpu_blocks_override=256, seed=1,
                          reply_lengths=str(tmp_path / "replies.json"))
    times = send_schedule(items, parse_arrival("poisson"), qps=40.0, seed=0)
    async with serve_app(app) as url:
        spec = LoadSpec(endpoint=url + "/v1", model="", api="completions")
        result = await run_live(items, times, spec, label="emu", config={"workload": "test"}, slo=RequestSlo(ttft=30.0))
    s = result.summary
    assert result.config["model"] == "emulated"  # found through /v1/models
    assert (s.requests, s.completed, s.failed) == (12, 11, 1)
    bad = result.records[4]
    assert bad.error is not None and bad.error.startswith("HTTP 400") and bad.index == 4
    assert list(s.errors.values()) == [1]
    for rec in result.records:
        if rec.ok:
            assert rec.output_tokens == rec.expected_output_tokens  # from the table: no length was sent
            assert rec.ttft_s is not None and rec.e2e_s is not None and 0 < rec.ttft_s <= rec.e2e_s
            assert len(rec.itl_s) == rec.output_tokens - 1
            if items[rec.index].prompt is None:  # a synthesised prompt has exactly the wanted length
                assert rec.prompt_tokens == items[rec.index].prompt_tokens
    assert result.records[-1].prompt_tokens == 6  # real text: the server's usage count
    assert s.ttft.n == 11 and s.goodput is not None and s.slo_attainment == 11 / 12


def _slow_app(step_s: float, tokens: int, seen: list[dict[str, object]], inflight: list[int]) -> Starlette:
    """A stand-in that streams ``tokens`` chunks ``step_s`` apart, with the scheduler's headers."""

    async def completions(request: Request) -> Response:
        body = json.loads(await request.body())
        seen.append(
            {
                "body": body,
                "hint": request.headers.get("x-blockctl-output-tokens"),
                "auth": request.headers.get("authorization"),
            }
        )
        if "break" in str(body.get("messages", body.get("prompt"))):
            return await _breaking()

        async def events() -> AsyncIterator[bytes]:
            inflight[0] += 1
            inflight[1] = max(inflight[1], inflight[0])
            try:
                for _ in range(tokens):
                    await asyncio.sleep(step_s)
                    yield b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
                yield b"data: [DONE]\n\n"
            finally:
                inflight[0] -= 1

        headers = {"x-blockctl-instance": "gpu-7", "x-blockctl-predicted-e2e-ms": "1500"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def _breaking() -> Response:
        async def events() -> AsyncIterator[bytes]:
            yield b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
            yield b'data: {"error": {"message": "engine died", "type": "InternalServerError"}}\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"data": [{"id": "stand-in"}]})

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]), Route("/v1/models", models)])


async def test_dispatch_stays_on_schedule_while_requests_are_slow() -> None:
    seen: list[dict[str, object]] = []
    inflight = [0, 0]
    items = [WorkItem(f"prompt {i}", 3, 5) for i in range(10)]
    times = send_schedule(items, parse_arrival("constant"), qps=20.0, seed=0)  # 0.05 s apart
    async with serve_app(_slow_app(0.25, 5, seen, inflight)) as url:
        spec = LoadSpec(endpoint=url, model="m", api="chat", api_key="sk-test", lengths="oracle")
        records = await run_load(items, times, spec)
    assert all(r.ok for r in records)
    assert inflight[1] >= 8  # each takes ~1.25 s, so nearly all ten were in flight together
    assert max(r.sent_s or 0.0 for r in records) < 1.0  # the last is due at 0.45 s; loaded machine margin
    assert all((r.lateness_s or 0.0) < 0.5 for r in records)
    assert records[0].instance == "gpu-7" and records[0].predicted_e2e_s == 1.5
    assert records[0].output_tokens == 5 and len(records[0].itl_s) == 4  # no usage: chunks are counted
    body = seen[0]["body"]
    assert isinstance(body, dict) and body["max_tokens"] == 5 and body["ignore_eos"] is True
    assert body["messages"] == [{"role": "user", "content": "prompt 0"}] and body["stream"] is True
    assert seen[0]["hint"] == "5" and seen[0]["auth"] == "Bearer sk-test"


async def test_closed_loop_concurrency_and_midstream_error() -> None:
    seen: list[dict[str, object]] = []
    inflight = [0, 0]
    items = [WorkItem(f"prompt {i}", 3, 3) for i in range(5)] + [WorkItem("please break", 3, 3)]
    arrival = parse_arrival("concurrency:2")
    async with serve_app(_slow_app(0.02, 3, seen, inflight)) as url:
        spec = LoadSpec(endpoint=url, model="m", api="chat", concurrency=arrival.concurrency)
        records = await run_load(items, send_schedule(items, arrival, 1.0, 0), spec)
    assert inflight[1] <= 2 and len(records) == 6
    broken = records[5]
    assert broken.error == "engine died" and broken.ttft_s is not None and broken.output_tokens == 1
    assert seen[0]["hint"] is None and seen[0]["auth"] is None


@pytest.mark.parametrize("arrival", ["constant", "concurrency:2"])
async def test_cancelled_run_keeps_every_request(arrival: str) -> None:
    seen: list[dict[str, object]] = []
    inflight = [0, 0]
    items = [WorkItem(f"prompt {i}", 3, 20) for i in range(12)]
    parsed = parse_arrival(arrival)
    times = send_schedule(items, parsed, qps=10.0, seed=0)
    async with serve_app(_slow_app(0.05, 20, seen, inflight)) as url:
        spec = LoadSpec(endpoint=url, model="m", api="chat", concurrency=parsed.concurrency)
        task = asyncio.create_task(run_load(items, times, spec))
        await asyncio.sleep(0.6)
        task.cancel()
        records = await asyncio.wait_for(task, timeout=10)
    assert len(records) == 12 and [r.index for r in records] == list(range(12))
    interrupted = [r for r in records if r.error == INTERRUPTED]
    assert interrupted and all(r.sent_s is not None for r in interrupted)
    assert any(r.ttft_s is not None for r in interrupted)  # partial streams keep their timings
    unsent = [r for r in records if r.error == NOT_SENT]
    assert unsent and all(r.sent_s is None for r in unsent)
    assert len(seen) <= len(records) - len(unsent)  # nothing was sent after the cancel


async def test_server_that_does_not_stream() -> None:
    async def completions(request: Request) -> Response:
        text = {
            "choices": [{"index": 0, "text": "a b c", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
        }
        return JSONResponse(text)

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    async with serve_app(app) as url:
        records = await run_load([WorkItem("w x y z", 4, 3)], [0.0], LoadSpec(endpoint=url, model="m"))
    rec = records[0]
    assert rec.ok and rec.output_tokens == 3 and rec.ttft_s == rec.e2e_s and rec.itl_s == ()


async def test_stream_cut_without_done_is_a_failure() -> None:
    async def completions(request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            yield b'data: {"choices": [{"index": 0, "text": "a"}]}\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    async with serve_app(app) as url:
        records = await run_load([WorkItem("w x y z", 4, 3)], [0.0], LoadSpec(endpoint=url, model="m"))
    assert records[0].error is not None and "ended early" in records[0].error
    assert records[0].output_tokens == 1 and records[0].ttft_s is not None


async def test_unreachable_endpoint_fails_every_request_but_records_them() -> None:
    items = [WorkItem("a b c d", 4, 2)] * 3
    async with httpx.AsyncClient() as client:
        spec = LoadSpec(endpoint="http://127.0.0.1:9", model="m", request_timeout_s=2.0)
        records = await run_load(items, [0.0, 0.0, 0.0], spec, client=client)
    assert [r.ok for r in records] == [False] * 3
    assert all(r.error and "ConnectError" in r.error for r in records)


def test_results_file_written_by_the_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from blockctl.bench.results import load_results
    from blockctl.cli.main import app
    from tests.conftest import serve_app_in_thread

    wl = tmp_path / "w.jsonl"
    wl.write_text("\n".join(json.dumps({"prompt_tokens": p, "output_tokens": 5}) for p in (30, 40, 900, 50)))
    out = tmp_path / "res" / "run.json"
    emulator = create_emulator(max_model_len=MAX_MODEL_LEN, num_gpu_blocks_override=256)
    with serve_app_in_thread(emulator) as url:
        args = [
            "bench",
            "run",
            "--endpoint",
            url,
            "--workload",
            str(wl),
            "--requests",
            "4",
            "--qps",
            "50",
            "--arrival",
            "gamma:0.5",
            "--slo",
            "ttft=20",
            "--out",
            str(out),
            "--json",
            "--label",
            "emu",
        ]
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output)
    assert printed["summary"]["requests"] == 4 and printed["summary"]["failed"] == 1
    assert printed["config"]["arrival"] == "gamma:0.5" and "records" not in printed
    saved = load_results(out)
    assert saved.label == "emu" and len(saved.records) == 4 and saved.summary == saved.summary
    assert saved.records[2].error is not None and "HTTP 400" in saved.records[2].error


async def test_a_multiturn_chat_replay_sends_the_conversation_and_gets_the_workload_s_lengths(tmp_path: Path) -> None:
    """--api chat sends a replayed turn as the conversation so far (earlier replies as assistant messages, which a
    router reads as length evidence); the emulator's reply table, keyed by the whole conversation, still gives
    every turn its own length."""
    import dataclasses

    from blockctl.bench.wire import request_body
    from blockctl.bench.workloads import load_workload

    turns = [dataclasses.replace(i, output_tokens=3 + k % 5)
             for k, i in enumerate(load_workload("sharegpt-multiturn", num_requests=400, seed=0))]
    items = [i for i in turns if i.replies][:10] + [i for i in turns if not i.replies][:2]
    spec = LoadSpec(endpoint="", model="m", api="chat")
    later = request_body(items[0], "", spec)["messages"]
    assert [m["role"] for m in later][-3:] == ["user", "assistant", "user"]
    assert len([m for m in later if m["role"] == "assistant"]) == len(items[0].replies)
    replytable.save(tmp_path / "replies.json", items_table(items, api="chat"), source={})
    app = create_emulator(max_model_len=4096, num_gpu_blocks_override=2048, seed=1,
                          reply_lengths=str(tmp_path / "replies.json"))
    times = send_schedule(items, parse_arrival("poisson"), qps=40.0, seed=0)
    async with serve_app(app) as url:
        result = await run_live(items, times, LoadSpec(endpoint=url + "/v1", model="", api="chat"), label="emu",
                                config={"workload": "test"})
    assert result.summary.completed == len(items)
    assert all(r.output_tokens == r.expected_output_tokens for r in result.records)
