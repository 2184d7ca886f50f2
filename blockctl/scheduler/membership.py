"""Which agents the scheduler routes to: cluster.json watched for changes, one AgentClient per agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from blockctl.cluster.state import ClusterState, load_state, read_token, state_path
from blockctl.errors import StateError
from blockctl.scheduler.agents import AgentClient

log = logging.getLogger("blockctl.scheduler")

Fingerprint = tuple[int, int, int] | None  # (mtime_ns, size, inode) of cluster.json; None when absent


class Membership:
    """The serving instances of the cluster and their clients, refreshed when cluster.json changes.

    NOTE: ``serving`` and ``clients`` are replaced, never mutated, so a request that read them keeps a
    consistent pair even if a reload happens while it waits on the network. Clients of removed agents are
    closed after ``grace_s`` so requests still streaming through them finish.
    """

    def __init__(self, state_dir: Path, *, poll_s: float = 0.25, grace_s: float = 600.0) -> None:
        self.state_dir = state_dir
        self.poll_s = poll_s
        self.grace_s = grace_s
        self._fingerprint: Fingerprint = None
        self._token: str | None = None
        self.serving: tuple[str, ...] = ()
        self.clients: dict[str, AgentClient] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # background work (warm-ups, delayed closes)
        self._retired: set[AgentClient] = set()  # removed, closed after the grace period (or at stop)

    def _stat(self) -> Fingerprint:
        try:
            st = os.stat(state_path(self.state_dir))
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> bool:
        """Reload if cluster.json changed since the last look; True when something was reloaded."""
        fp = self._stat()
        if fp == self._fingerprint:
            return False
        self._fingerprint = fp
        try:
            state = load_state(self.state_dir)
        except StateError as exc:
            log.warning("keeping the previous instance list: %s", exc.message)
            return False
        self._apply(state)
        return True

    def _apply(self, state: ClusterState | None) -> None:
        token = read_token(self.state_dir)
        old = self.clients
        new: dict[str, AgentClient] = {}
        serving: list[str] = []
        for inst in state.instances if state else ():
            if inst.status != "serving":
                # Draining instances get no new requests; their client lives on for requests in flight.
                if inst.name in old:
                    new[inst.name] = old[inst.name]
                continue
            client = old.get(inst.name)
            if client is None or client.url != inst.agent_url.rstrip("/") or token != self._token:
                client = AgentClient(inst.name, inst.agent_url, token)
                self._background(self._warm(client))
            new[inst.name] = client
            serving.append(inst.name)
        self.clients, self.serving, self._token = new, tuple(serving), token
        kept = {id(c) for c in new.values()}
        for client in old.values():
            if id(client) not in kept:
                self._close_later(client)
        log.info("routing to %d instance(s): %s", len(serving), ", ".join(serving) or "-")

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _warm(client: AgentClient) -> None:
        """Open a keep-alive connection before the first request needs one (it would cost the deadline)."""
        with contextlib.suppress(Exception):
            await client.view(1, 1, predict=False, timeout=5.0)

    def _close_later(self, client: AgentClient) -> None:
        self._retired.add(client)

        async def close() -> None:
            await asyncio.sleep(self.grace_s)
            self._retired.discard(client)
            await client.aclose()

        self._background(close())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                self.refresh()
            except Exception:  # the daemon must outlive any surprise in the state dir
                log.exception("reloading %s failed", state_path(self.state_dir))

    async def start(self) -> None:
        self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._closing) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        clients = [*self.clients.values(), *self._retired]
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
        self.clients, self._retired = {}, set()
