"""Remote process control for engines and agents: converge (keep, restart or start), wait for health, stop.

On the host each process has ``run/<role>-<i>.pid`` and ``run/<role>-<i>.fp`` (the fingerprint of what it
runs) and ``logs/<role>-<i>.log``. A running process is kept only when its pid is alive, its command line
still has its port, and its fingerprint matches the plan — so re-running ``up`` converges.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from blockctl.cluster.ssh import remote
from blockctl.cluster.ssh.connection import HostConn
from blockctl.cluster.ssh.hostlog import tail_text
from blockctl.cluster.ssh.plan import InstancePlan, RemotePaths
from blockctl.errors import HostError

Role = Literal["engine", "agent"]
q = shlex.quote


@dataclass(frozen=True, slots=True)
class Started:
    pid: int
    kept: bool  # True when an identical healthy-looking process was already running


def _spec(plan: InstancePlan, role: Role) -> tuple[str, dict[str, str], str]:
    if role == "engine":
        return plan.engine_command, plan.engine_env, plan.engine_needle
    return plan.agent_command, {}, plan.agent_needle


async def ensure(conn: HostConn, paths: RemotePaths, plan: InstancePlan, role: Role) -> Started:
    """Leave an identical running process alone, otherwise stop whatever is recorded and start anew."""
    command, env, needle = _spec(plan, role)
    pid_file, fp_file = plan.pid_file(paths, role), plan.pid_file(paths, role)[:-4] + ".fp"
    fingerprint = plan.fingerprint(role)
    alive_pid = remote.alive("$pid", needle)
    probe = (
        f"pid=$({remote.read_pid(pid_file)}); fp=$(cat {q(fp_file)} 2>/dev/null || true); "
        f'if [ -n "$pid" ] && {alive_pid}; then echo "alive $pid $fp"; else echo "none"; fi'
    )
    found = (await conn.run(probe, what=f"is {role}-{plan.index} running?")).stdout.split()
    if found[:1] == ["alive"]:
        pid = int(found[1])
        if found[2:] == [fingerprint]:
            conn.log.write(f"{role}-{plan.index}: pid {pid} already runs the same command; kept")
            return Started(pid, kept=True)
        conn.log.write(f"{role}-{plan.index}: pid {pid} runs an older command; restarting")
        await conn.run(remote.stop_group(pid))
    env_file = None
    if env:  # values may be secrets (HF_TOKEN...): a 0600 file by SFTP, never a command line
        env_file = pid_file[:-4] + ".env"
        await conn.write_file(env_file, remote.env_file_text(env).encode(), mode=0o600)
    start = remote.detached(
        command, env_file=env_file, log_path=plan.log(paths, role), pid_path=pid_file, cwd=paths.root
    )
    out = await conn.run(
        f"mkdir -p {q(paths.logs)} {q(paths.run)} || exit 1; {start}; echo {fingerprint} > {q(fp_file)}",
        what=f"start {role}-{plan.index}: {command}",
    )
    try:
        pid = int(out.stdout.split()[0])
    except (IndexError, ValueError):
        raise HostError(
            f"starting {role}-{plan.index} printed no pid",
            host=conn.label,
            stage=conn.log.current_stage,
            stderr_tail=tail_text(out.stderr),
        ) from None
    return Started(pid, kept=False)


async def wait_healthy(
    conn: HostConn, paths: RemotePaths, plan: InstancePlan, role: Role, pid: int, timeout_s: float
) -> None:
    """Poll the process's /health from the host; on failure stop it and raise with its log's tail."""
    port = plan.engine_port if role == "engine" else plan.agent_port
    url = f"http://127.0.0.1:{port}/health"
    result = await conn.run(
        remote.wait_http(paths.python, url, pid, timeout_s),
        check=False,
        timeout=timeout_s + 30,
        what=f"wait for {role}-{plan.index} at {url}",
    )
    if result.exit_status == 0:
        return
    log = await conn.run(remote.tail(plan.log(paths, role), 30), check=False)
    await conn.run(remote.stop_group(pid), check=False)
    if result.exit_status == remote.WAIT_DIED:
        why = f"{role}-{plan.index} exited before {url} answered"
    elif result.exit_status == remote.WAIT_TIMEOUT:
        why = f"{role}-{plan.index} was not healthy at {url} within {timeout_s:g}s"
    else:
        why = f"waiting for {role}-{plan.index} failed: {tail_text(result.stderr, 3)}"
    raise HostError(
        why + f"; its log {plan.log(paths, role)} ends:",
        host=conn.label,
        stage=conn.log.current_stage,
        exit_status=result.exit_status,
        stderr_tail=log.stdout,
        hint=f"blockctl logs {conn.label} --{role}",
    )


async def stop_recorded(conn: HostConn, pid: int, needle: str) -> bool:
    """Stop ``pid``'s group if it still is the process we started (its command line has ``needle``)."""
    check = await conn.run(remote.alive(pid, needle), check=False, what=f"is pid {pid} ours?")
    if check.exit_status != 0:
        return False
    await conn.run(remote.stop_group(pid))
    return True


async def stop_all(conn: HostConn, paths: RemotePaths) -> None:
    """Stop every process with a pid file under ``paths.run`` (agents first) and remove the pid files."""
    stop = remote.stop_group("$pid")
    script = (
        f"cd {q(paths.run)} 2>/dev/null || exit 0; "
        'for f in agent-*.pid engine-*.pid; do [ -f "$f" ] || continue; pid=$(cat "$f"); '
        f'if [ -n "$pid" ]; then ( {stop} ); fi; rm -f "$f" "${{f%.pid}}.fp" "${{f%.pid}}.env"; done'
    )
    await conn.run(script, what=f"stop every engine and agent under {paths.run}")
