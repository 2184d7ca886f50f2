"""What ``blockctl bench faults`` watches while it injects faults, and its connection-reset relay.

- Executions: every engine's own ``vllm:request_success_total`` (finished_reason stop or length), kept per
  engine process (by PID), so a killed engine's count is not lost: the bench scrapes right before a kill.
- Rotation: every scheduler's ``/health`` lists the instances it keeps out of rotation; the timeline of
  that union gives the time until a sick instance left rotation and until it came back.
- ``ResetRelay``: a TCP relay the bench puts between the schedulers and one agent; ``reset`` kills every
  connection through it with an RST on both sides, as a network fault would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from pathlib import Path

import httpx

from blockctl.cluster.state import load_state

_SUCCESS = "vllm:request_success_total{"


def executions(metrics_text: str) -> float:
    """Requests the engine ran to the end (stop or length), from its Prometheus text."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(_SUCCESS) and ('finished_reason="stop"' in line or 'finished_reason="length"' in line):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
    return total


class Watch:
    def __init__(self, state_dir: Path, http: httpx.AsyncClient) -> None:
        self.state_dir = state_dir
        self.http = http
        self.executions: dict[int, float] = {}  # engine PID -> its request_success_total (stop + length)
        self.timeline: list[tuple[float, frozenset[str]]] = []  # (monotonic time, instances out of rotation)

    async def scrape_engines(self) -> None:
        state = load_state(self.state_dir)
        if state is None:
            return

        async def one(url: str, pid: int) -> None:
            with contextlib.suppress(httpx.HTTPError):
                resp = await self.http.get(f"{url}/metrics", timeout=0.5)
                if resp.status_code == 200:
                    self.executions[pid] = max(self.executions.get(pid, 0.0), executions(resp.text))

        await asyncio.gather(*(one(i.engine_url, i.pids["engine"]) for i in state.instances if "engine" in i.pids))

    async def quiet(self, timeout_s: float = 15.0) -> bool:
        """Wait until no engine runs or queues a request (their own gauges); False at the timeout."""
        state = load_state(self.state_dir)
        if state is None:
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            busy = 0.0
            for inst in state.instances:
                with contextlib.suppress(httpx.HTTPError):
                    text = (await self.http.get(f"{inst.engine_url}/metrics", timeout=1.0)).text
                    busy += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")))
            if busy == 0:
                return True
            await asyncio.sleep(0.1)
        return False

    def runs(self) -> float:
        return sum(self.executions.values())

    async def poll_rotation(self, urls: list[str]) -> None:
        async def one(url: str) -> set[str]:
            try:
                resp = await self.http.get(f"{url}/health", timeout=0.5)
                return set(resp.json().get("out_of_rotation") or ())
            except (httpx.HTTPError, ValueError):
                return set()

        outs = await asyncio.gather(*(one(u) for u in urls))
        self.timeline.append((time.monotonic(), frozenset().union(*outs)))

    async def run(self, urls: list[str], stop: asyncio.Event, *, every_s: float = 0.1) -> None:
        n = 0
        while not stop.is_set():
            await self.poll_rotation(urls)
            if n % 3 == 0:
                await self.scrape_engines()
            n += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await stop.wait()

    def first_out(self, name: str, after: float) -> float | None:
        return next((t - after for t, out in self.timeline if t >= after and name in out), None)

    def first_back(self, name: str, after: float) -> float | None:
        return next((t - after for t, out in self.timeline if t >= after and name not in out), None)


class ResetRelay:
    """Listens on ``port`` and relays every connection to ``target_port`` on loopback."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port, self.target_port = port, target_port
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self.resets = 0
        self.accepted = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        self.accepted += 1
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer), return_exceptions=True)
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.close()

    def reset(self) -> int:
        """RST every connection through the relay (both sides); returns how many were cut."""
        pairs, self._pairs = list(self._pairs), set()
        for pair in pairs:
            for w in pair:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
        self.resets += len(pairs)
        return len(pairs)

    async def stop(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
