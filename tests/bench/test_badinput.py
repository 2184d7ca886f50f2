"""The bad-input corpus against a real emulator, agent and scheduler over loopback HTTP: every answer is a 4xx
with OpenAI's error JSON (or the 200 a control case expects), no request an instance answered loses its log
line, and every server still serves afterwards."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from blockctl.bench.badinput import Case, corpus, judge, run_corpus
from blockctl.bench.badinput_local import local_servers

LIMIT = 64 << 10


@pytest.mark.slow
async def test_every_bad_request_gets_openai_error_json(tmp_path: Path) -> None:
    cases = corpus(max_body_bytes=LIMIT)
    async with local_servers(tmp_path, max_body_bytes=LIMIT) as servers:
        reports = [await run_corpus(e.url, t, key=e.key, cases=cases) for t, e in servers.endpoints.items()]
        for e in servers.endpoints.values():
            async with httpx.AsyncClient(base_url=e.url, timeout=10) as http:
                assert (await http.get("/health")).status_code == 200
    failures = [(r.target, f.case, f.problem) for r in reports for f in r.results if not f.correct]
    assert failures == []
    assert {r.target: r.tried for r in reports} == {"scheduler": 118, "agent": 142, "emulator": 117}
    answered = sum(servers.scheduler.metrics.routed.values())
    lines = servers.request_log.read_text(encoding="utf-8").splitlines()
    assert answered >= 10 and len(lines) == answered  # 4xx answers of the instance are logged too


def test_judge_names_what_is_wrong() -> None:
    case = Case("x", "POST", "/v1/completions", b"{}")
    good = b'{"error": {"message": "m", "type": "invalid_request_error", "param": null, "code": null}}'
    assert judge(case, 400, "application/json", good) == ""
    assert judge(case, 500, "application/json", good) == "5xx"
    assert judge(case, 404, "text/plain; charset=utf-8", b"Not Found") == "plain-text 4xx"
    assert judge(case, 200, "application/json", b"{}") == "accepted"
    assert judge(case, None, "", b"") == "no answer"
    assert judge(case, 400, "application/json", b'{"detail": "bad"}') == "4xx without OpenAI error JSON"
    assert judge(Case("y", "GET", "/", expect=404), 405, "application/json", good) == "status 405, expected 404"
    assert judge(Case("z", "GET", "/", expect=200), 401, "application/json", good) == "refused (401)"
