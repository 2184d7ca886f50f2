"""A reproducible corpus of bad requests, and a runner that checks every answer is OpenAI's error JSON.

Each case is one raw HTTP request (exact bytes, so malformed JSON, invalid UTF-8 and lone surrogates go out as
written) sent to one kind of server: the scheduler, the agent or the emulator (vLLM's API). A case is answered
correctly when the status is the one expected (a 4xx; a few control cases expect 200, e.g. a lower-case
``bearer`` scheme, which RFC 9110 says is case-insensitive) and, for errors, the body is
``{"error": {"message": str, "type": str, "param": ..., "code": ...}}`` with a JSON content type.
A 5xx, a plain-text error, an accepted bad request or no answer at all is a failure, named in the result.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Target = Literal["scheduler", "agent", "emulator"]
TARGETS: tuple[Target, ...] = ("scheduler", "agent", "emulator")
COMPLETION_PATHS = ("/v1/completions", "/v1/chat/completions")
AUTH_GOOD = "good"  # the case is sent with the server's key, as ``Authorization: Bearer <key>``
OUT_OF_VOCAB = 1_000_000_000  # a token id past any real vocabulary


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    expect: int | None = None  # None: any 4xx with OpenAI's error JSON
    targets: frozenset[str] = frozenset(TARGETS)
    auth: str | None = AUTH_GOOD  # AUTH_GOOD, None (no header), or the literal header value ("{key}" filled in)
    headers: tuple[tuple[str, str], ...] = ()
    needs_auth: bool = False  # only meaningful against a server that requires a key


@dataclass(frozen=True, slots=True)
class Result:
    case: str
    status: int | None  # None: no answer (connection failed, timeout)
    correct: bool
    problem: str  # "" when correct; else a short class: "5xx", "plain-text 4xx", "accepted", ...


@dataclass(slots=True)
class Report:
    target: str
    results: list[Result] = field(default_factory=list)

    @property
    def tried(self) -> int:
        return len(self.results)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.results)

    def problems(self) -> Counter[str]:
        return Counter(r.problem for r in self.results if not r.correct)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "tried": self.tried, "correct": self.correct,
                "problems": dict(self.problems()),
                "failures": [{"case": r.case, "status": r.status, "problem": r.problem}
                             for r in self.results if not r.correct]}


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _completion_bodies() -> list[tuple[str, bytes]]:
    """Bad bodies for ``/v1/completions`` (a valid one is ``{"prompt": "hi", "max_tokens": 4}``)."""
    deep = 100_000
    nested_prompt = b'{"prompt": ' + b"[" * deep + b"]" * deep + b', "max_tokens": 4}'
    cases: list[tuple[str, bytes]] = [
        ("empty body", b""),
        ("truncated JSON", b'{"prompt": "hi", "max_tokens": 4'),
        ("not JSON", b"prompt=hi&max_tokens=4"),
        ("trailing garbage", b'{"prompt": "hi"} x'),
        ("JSON array body", b'["hi"]'),
        ("JSON string body", b'"hi"'),
        ("JSON number body", b"42"),
        ("JSON null body", b"null"),
        ("invalid UTF-8", b'{"prompt": "\xff\xfe hi", "max_tokens": 4}'),
        ("NaN literal", b'{"prompt": "hi", "max_tokens": 4, "temperature": NaN}'),
        ("Infinity literal", b'{"prompt": "hi", "max_tokens": 4, "top_p": Infinity}'),
        ("deeply nested array body", b"[" * deep + b"]" * deep),
        ("deeply nested object body", b'{"a":' * deep + b"1" + b"}" * deep),
        ("deeply nested prompt", nested_prompt),
        ("lone high surrogate in prompt", b'{"prompt": "hi \\ud800 there", "max_tokens": 4}'),
        ("lone low surrogate in prompt", b'{"prompt": "\\udfff", "max_tokens": 4}'),
        ("lone surrogate in prompt list", b'{"prompt": ["\\ud83d"], "max_tokens": 4}'),
        ("lone surrogate in stop", b'{"prompt": "hi", "max_tokens": 4, "stop": "\\udc00"}'),
        ("lone surrogate in model", b'{"prompt": "hi", "max_tokens": 4, "model": "\\ud800"}'),
        ("missing prompt", _j({"max_tokens": 4})),
        ("prompt null", _j({"prompt": None})),
        ("prompt number", _j({"prompt": 5})),
        ("prompt object", _j({"prompt": {"text": "hi"}})),
        ("prompt empty string", _j({"prompt": ""})),
        ("prompt empty list", _j({"prompt": []})),
        ("prompt list of bools", _j({"prompt": [True, False]})),
        ("prompt mixed list", _j({"prompt": [1, "a"]})),
        ("prompt float ids", _j({"prompt": [1.5, 2.0]})),
        ("two prompts", _j({"prompt": ["a", "b"]})),
        ("negative token id", _j({"prompt": [1, -1], "max_tokens": 4})),
        ("token id out of vocabulary", _j({"prompt": [1, OUT_OF_VOCAB], "max_tokens": 4})),
        ("token id past int64", _j({"prompt": [2**70], "max_tokens": 4})),
        ("nested token id out of vocabulary", _j({"prompt": [[OUT_OF_VOCAB]], "max_tokens": 4})),
        ("max_tokens string", _j({"prompt": "hi", "max_tokens": "4"})),
        ("max_tokens float", _j({"prompt": "hi", "max_tokens": 4.5})),
        ("max_tokens bool", _j({"prompt": "hi", "max_tokens": True})),
        ("max_tokens zero", _j({"prompt": "hi", "max_tokens": 0})),
        ("max_tokens negative", _j({"prompt": "hi", "max_tokens": -3})),
        ("max_tokens past the model length", _j({"prompt": "hi", "max_tokens": 10**7})),
        ("max_tokens huge", _j({"prompt": "hi", "max_tokens": 2**80})),
        ("stream string", _j({"prompt": "hi", "max_tokens": 4, "stream": "yes"})),
        ("stream number", _j({"prompt": "hi", "max_tokens": 4, "stream": 1})),
        ("stream_options without stream", _j({"prompt": "hi", "max_tokens": 4,
                                              "stream_options": {"include_usage": True}})),
        ("stream_options not an object", _j({"prompt": "hi", "max_tokens": 4, "stream": True,
                                             "stream_options": "usage"})),
        ("n two", _j({"prompt": "hi", "max_tokens": 4, "n": 2})),
        ("n string", _j({"prompt": "hi", "max_tokens": 4, "n": "1"})),
        ("temperature string", _j({"prompt": "hi", "max_tokens": 4, "temperature": "hot"})),
        ("temperature negative", _j({"prompt": "hi", "max_tokens": 4, "temperature": -1})),
        ("temperature too high", _j({"prompt": "hi", "max_tokens": 4, "temperature": 7})),
        ("top_p zero", _j({"prompt": "hi", "max_tokens": 4, "top_p": 0})),
        ("stop number", _j({"prompt": "hi", "max_tokens": 4, "stop": 5})),
        ("stop list of numbers", _j({"prompt": "hi", "max_tokens": 4, "stop": [1, 2]})),
        ("min_tokens above max_tokens", _j({"prompt": "hi", "max_tokens": 4, "min_tokens": 9})),
        ("min_tokens negative", _j({"prompt": "hi", "max_tokens": 4, "min_tokens": -1})),
        ("ignore_eos string", _j({"prompt": "hi", "max_tokens": 4, "ignore_eos": "true"})),
        ("seed string", _j({"prompt": "hi", "max_tokens": 4, "seed": "1"})),
        ("model number", _j({"prompt": "hi", "max_tokens": 4, "model": 7})),
        ("unknown model", _j({"prompt": "hi", "max_tokens": 4, "model": "no-such-model"})),
        ("echo string", _j({"prompt": "hi", "max_tokens": 4, "echo": "no"})),
        ("logprobs string", _j({"prompt": "hi", "max_tokens": 4, "logprobs": "5"})),
        ("prompt past the model length", _j({"prompt": "word " * 50_000, "max_tokens": 4})),
    ]
    return cases


def _chat_bodies() -> list[tuple[str, bytes]]:
    """Bad bodies for ``/v1/chat/completions``."""
    user = {"role": "user", "content": "hi"}
    deep = 100_000
    return [
        ("empty body", b""),
        ("truncated JSON", b'{"messages": [{"role": "user", "content": "hi"}'),
        ("not JSON", b"messages=hi"),
        ("JSON array body", _j([user])),
        ("invalid UTF-8", b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}'),
        ("NaN literal", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'),
        ("deeply nested body", b"[" * deep + b"]" * deep),
        ("deeply nested content", b'{"messages": [{"role": "user", "content": ' + b"[" * deep + b"]" * deep
         + b"}]}"),
        ("lone surrogate in content", b'{"messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 4}'),
        ("lone surrogate in content part",
         b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udbff"}]}], "max_tokens": 4}'),
        ("lone surrogate in role", b'{"messages": [{"role": "\\ud800", "content": "hi"}], "max_tokens": 4}'),
        ("missing messages", _j({"max_tokens": 4})),
        ("messages null", _j({"messages": None})),
        ("messages empty", _j({"messages": []})),
        ("messages object", _j({"messages": user})),
        ("messages string", _j({"messages": "hi"})),
        ("message not an object", _j({"messages": ["hi"]})),
        ("message without role", _j({"messages": [{"content": "hi"}]})),
        ("role number", _j({"messages": [{"role": 1, "content": "hi"}]})),
        ("content number", _j({"messages": [{"role": "user", "content": 5}]})),
        ("content part without type", _j({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})),
        ("content part text number", _j({"messages": [{"role": "user",
                                                       "content": [{"type": "text", "text": 3}]}]})),
        ("max_completion_tokens string", _j({"messages": [user], "max_completion_tokens": "4"})),
        ("max_completion_tokens zero", _j({"messages": [user], "max_completion_tokens": 0})),
        ("max_tokens past the model length", _j({"messages": [user], "max_tokens": 10**7})),
        ("stream string", _j({"messages": [user], "stream": "true"})),
        ("n two", _j({"messages": [user], "n": 2})),
        ("logprobs number", _j({"messages": [user], "logprobs": 3})),
        ("temperature too high", _j({"messages": [user], "temperature": 9.5})),
        ("unknown model", _j({"messages": [user], "model": "no-such-model", "max_tokens": 4})),
        ("content past the model length", _j({"messages": [{"role": "user", "content": "word " * 50_000}]})),
    ]


def _routes() -> list[Case]:
    every = frozenset(TARGETS)
    cases = [
        Case("GET on /v1/completions", "GET", "/v1/completions", expect=405),
        Case("PUT on /v1/chat/completions", "PUT", "/v1/chat/completions", body=b"{}", expect=405),
        Case("DELETE on /v1/models", "DELETE", "/v1/models", expect=405),
        Case("POST on /health", "POST", "/health", body=b"{}", expect=405, auth=None),
        Case("POST on /metrics", "POST", "/metrics", body=b"{}", expect=405, auth=None),
        Case("unknown route", "GET", "/v2/completions", expect=404),
        Case("unknown route without auth", "GET", "/admin", expect=404, auth=None),
        Case("embeddings route", "POST", "/v1/embeddings", body=_j({"input": "hi"}), expect=404),
        Case("model route", "GET", "/v1/models/emulated/x", expect=404),
        Case("root", "GET", "/", expect=404),
    ]
    agent = frozenset({"agent"})
    cases += [
        Case("GET on /predict", "GET", "/predict", expect=405, targets=agent),
        Case("PUT on /load", "PUT", "/load", body=b"{}", expect=405, targets=agent),
        Case("POST on /state", "POST", "/state", body=b"{}", expect=405, targets=agent),
    ]
    emulator = frozenset({"emulator"})
    cases += [Case("GET on /tokenize", "GET", "/tokenize", expect=405, targets=emulator)]
    assert all(c.targets <= every for c in cases)
    return cases


def _load_bodies() -> list[tuple[str, bytes]]:
    """POST /load (prefix-aware load policies ask how much of a prompt an instance caches)."""
    return [
        ("empty body", b""),
        ("not JSON", b"prompt_tokens=1"),
        ("JSON array", _j([1, 2])),
        ("no prompt_tokens", _j({"block_hashes": [1, 2]})),
        ("block_hashes not a list", _j({"prompt_tokens": 10, "block_hashes": "1,2"})),
        ("block_hashes of booleans", _j({"prompt_tokens": 10, "block_hashes": [True]})),
    ]


def _predict_bodies() -> list[tuple[str, bytes]]:
    deep = 100_000
    return [
        ("empty body", b""),
        ("not JSON", b"prompt_tokens=1"),
        ("JSON array", _j([1, 2])),
        ("deeply nested", b"[" * deep + b"]" * deep),
        ("missing fields", _j({})),
        ("prompt_tokens string", _j({"prompt_tokens": "10", "predicted_output_tokens": 5})),
        ("prompt_tokens zero", _j({"prompt_tokens": 0, "predicted_output_tokens": 5})),
        ("prompt_tokens bool", _j({"prompt_tokens": True, "predicted_output_tokens": 5})),
        ("prompt_tokens float", _j({"prompt_tokens": 10.5, "predicted_output_tokens": 5})),
        ("predicted_output_tokens negative", _j({"prompt_tokens": 10, "predicted_output_tokens": -5})),
        ("prompt larger than the KV cache", _j({"prompt_tokens": 10**9, "predicted_output_tokens": 5})),
        ("prompt_tokens past int64", _j({"prompt_tokens": 2**70, "predicted_output_tokens": 5})),
        ("predicted_output_tokens huge", _j({"prompt_tokens": 10, "predicted_output_tokens": 2**70})),
        ("invalid UTF-8", b'{"prompt_tokens": 10, "predicted_output_tokens": 5, "x": "\xff"}'),
    ]


def _tokenize_bodies() -> list[tuple[str, bytes]]:
    deep = 100_000
    return [
        ("empty body", b""),
        ("not JSON", b"prompt=hi"),
        ("deeply nested", b"[" * deep + b"]" * deep),
        ("both prompt and messages", _j({"prompt": "hi", "messages": []})),
        ("prompt number", _j({"prompt": 3})),
        ("messages of strings", _j({"messages": ["hi"]})),
        ("lone surrogate", b'{"prompt": "\\ud800"}'),
        ("message content number", _j({"messages": [{"role": "user", "content": 3}]})),
    ]


def _headers_and_auth() -> list[Case]:
    body = _j({"prompt": "hi", "max_tokens": 4})
    sched, agent = frozenset({"scheduler"}), frozenset({"agent"})
    keyed = frozenset({"scheduler", "agent"})
    return [
        Case("no Authorization", "POST", "/v1/completions", body, expect=401, targets=keyed, auth=None,
             needs_auth=True),
        Case("wrong key", "POST", "/v1/completions", body, expect=401, targets=keyed, auth="Bearer wrong",
             needs_auth=True),
        Case("Basic scheme", "POST", "/v1/completions", body, expect=401, targets=keyed, auth="Basic {key}",
             needs_auth=True),
        Case("key without scheme", "POST", "/v1/completions", body, expect=401, targets=keyed, auth="{key}",
             needs_auth=True),
        Case("empty bearer", "POST", "/v1/completions", body, expect=401, targets=keyed, auth="Bearer",
             needs_auth=True),
        Case("lower-case bearer is accepted", "POST", "/v1/completions", body, expect=200, targets=keyed,
             auth="bearer {key}", needs_auth=True),
        Case("upper-case BEARER is accepted", "POST", "/v1/completions", body, expect=200, targets=keyed,
             auth="BEARER {key}", needs_auth=True),
        Case("models without auth", "GET", "/v1/models", expect=401, targets=keyed, auth=None, needs_auth=True),
        Case("predict without auth", "POST", "/predict", _j({"prompt_tokens": 1, "predicted_output_tokens": 1}),
             expect=401, targets=agent, auth=None, needs_auth=True),
        Case("length hint not a number", "POST", "/v1/completions", body, targets=sched,
             headers=(("x-blockctl-output-tokens", "many"),)),
        Case("length hint zero", "POST", "/v1/completions", body, targets=sched,
             headers=(("x-blockctl-output-tokens", "0"),)),
        Case("prompt-token header not a number", "POST", "/v1/completions", body, targets=agent,
             headers=(("x-blockctl-prompt-tokens", "ten"),)),
        Case("predicted-length header negative", "POST", "/v1/completions", body, targets=agent,
             headers=(("x-blockctl-predicted-output-tokens", "-4"),)),
    ]


def corpus(*, max_body_bytes: int = 32 << 20) -> list[Case]:
    """Every case, for every target; ``max_body_bytes`` is the servers' body limit (one byte over is sent)."""
    cases: list[Case] = []
    for path, bodies in (("/v1/completions", _completion_bodies()), ("/v1/chat/completions", _chat_bodies())):
        cases += [Case(f"{path}: {name}", "POST", path, body) for name, body in bodies]
        for stream in (False, True):  # a bad prompt must fail the same way streamed or not
            cases.append(Case(f"{path}: lone surrogate, stream={stream}", "POST", path,
                              _stream_body(path, "\\ud800", stream)))
    cases += [Case(f"/predict: {n}", "POST", "/predict", b, targets=frozenset({"agent"}))
              for n, b in _predict_bodies()]
    cases += [Case(f"/load: {n}", "POST", "/load", b, targets=frozenset({"agent"})) for n, b in _load_bodies()]
    cases += [Case(f"/tokenize: {n}", "POST", "/tokenize", b, targets=frozenset({"emulator"}))
              for n, b in _tokenize_bodies()]
    cases += _routes() + _headers_and_auth()
    big = b'{"prompt": "' + b"a" * max_body_bytes + b'"}'
    cases.append(Case("body over the size limit", "POST", "/v1/completions", big, expect=413))
    cases.append(Case("streamed token id out of vocabulary", "POST", "/v1/completions",
                      _j({"prompt": [OUT_OF_VOCAB], "max_tokens": 4, "stream": True})))
    return cases


def _stream_body(path: str, escaped: str, stream: bool) -> bytes:
    s = "true" if stream else "false"
    if path == "/v1/completions":
        return f'{{"prompt": "x{escaped}", "max_tokens": 4, "stream": {s}}}'.encode()
    return f'{{"messages": [{{"role": "user", "content": "x{escaped}"}}], "max_tokens": 4, "stream": {s}}}'.encode()


def cases_for(target: Target, cases: Iterable[Case], *, has_key: bool) -> list[Case]:
    return [c for c in cases if target in c.targets and (has_key or not c.needs_auth)]


def judge(case: Case, status: int | None, content_type: str, body: bytes) -> str:
    """"" when the answer is right, else what is wrong with it."""
    if status is None:
        return "no answer"
    if case.expect == 200:
        return "" if status == 200 else f"refused ({status})"
    if status >= 500:
        return "5xx"
    if status < 400:
        return "accepted"
    if not content_type.startswith("application/json"):
        return "plain-text 4xx"
    try:
        err = json.loads(body)["error"]
        shaped = (isinstance(err["message"], str) and isinstance(err["type"], str) and "param" in err
                  and "code" in err)
    except (ValueError, KeyError, TypeError):
        shaped = False
    if not shaped:
        return "4xx without OpenAI error JSON"
    if case.expect is not None and status != case.expect:
        return f"status {status}, expected {case.expect}"
    return ""


async def run_case(http: httpx.AsyncClient, case: Case, key: str | None) -> Result:
    headers = dict(case.headers)
    if case.body is not None:
        headers["content-type"] = "application/json"
    if case.auth == AUTH_GOOD:
        if key:
            headers["authorization"] = f"Bearer {key}"
    elif case.auth is not None:
        headers["authorization"] = case.auth.replace("{key}", key or "")
    status: int | None = None
    ctype, body = "", b""
    try:
        async with http.stream(case.method, case.path, content=case.body, headers=headers) as resp:
            status, ctype = resp.status_code, resp.headers.get("content-type", "")
            body = await resp.aread()
    except httpx.HTTPError:
        pass
    problem = judge(case, status, ctype, body)
    return Result(case.name, status, problem == "", problem)


async def run_corpus(base_url: str, target: Target, *, key: str | None = None,
                     cases: Sequence[Case] | None = None, timeout_s: float = 60.0) -> Report:
    """Send every case for ``target`` to ``base_url`` one after the other; the report of the answers."""
    chosen = cases_for(target, corpus() if cases is None else cases, has_key=key is not None)
    report = Report(target)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as http:
        for case in chosen:
            report.results.append(await run_case(http, case, key))
    return report
