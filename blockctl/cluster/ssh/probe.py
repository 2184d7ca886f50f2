"""The probe stage: a remote script reports Python, GPUs (nvidia-smi), disk, home; a pure parser reads it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from blockctl.cluster.ssh.connection import HostConn
from blockctl.errors import HostError


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int
    memory_free_mib: int


@dataclass(frozen=True, slots=True)
class ProbeResult:
    home: str
    python_version: str | None  # of install.python; None when it is missing
    gpus: tuple[Gpu, ...]
    disk_free_mib: int | None  # on the filesystem of the home directory
    cpus: int | None


# Without nvidia-smi on PATH: the same rows from nvidia-ml-py (`pip install blockctl[host]`), if importable.
_NVML_PY = """
import pynvml as n
n.nvmlInit()
for i in range(n.nvmlDeviceGetCount()):
    h = n.nvmlDeviceGetHandleByIndex(i)
    name = n.nvmlDeviceGetName(h)
    name = name.decode() if isinstance(name, bytes) else name
    m = n.nvmlDeviceGetMemoryInfo(h)
    print(f"gpu={i}, {name}, {m.total >> 20}, {m.free >> 20}")
""".strip()


def probe_script(python: str) -> str:
    """One ``sh`` command printing ``key=value`` lines; GPUs from nvidia-smi, else from nvidia-ml-py."""
    py = shlex.quote(python)
    return "; ".join(
        [
            'echo "home=$HOME"',
            f'echo "python=$({py} -c \'import sys; print("%d.%d.%d" % sys.version_info[:3])\' 2>/dev/null)"',
            "if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi "
            "--query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits 2>/dev/null "
            f"| sed 's/^/gpu=/'; else {py} -c {shlex.quote(_NVML_PY)} 2>/dev/null; fi",
            'echo "disk_free_kib=$(df -Pk "$HOME" 2>/dev/null | awk \'NR==2 {print $4}\')"',
            'echo "cpus=$(nproc 2>/dev/null)"',
        ]
    )


def _int(value: str) -> int | None:
    try:
        return int(value.strip())
    except ValueError:
        return None


def parse_probe(text: str) -> ProbeResult:
    """Parse ``key=value`` lines of ``probe_script``; ``gpu=`` lines are nvidia-smi CSV rows."""
    home, python, disk, cpus = "", None, None, None
    gpus: list[Gpu] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "home":
            home = value.strip()
        elif key == "python":
            python = value.strip() or None
        elif key == "disk_free_kib":
            kib = _int(value)
            disk = None if kib is None else kib // 1024
        elif key == "cpus":
            cpus = _int(value)
        elif key == "gpu":
            parts = [p.strip() for p in value.split(",")]
            if len(parts) == 4 and _int(parts[0]) is not None:
                gpus.append(Gpu(int(parts[0]), parts[1], _int(parts[2]) or 0, _int(parts[3]) or 0))
    return ProbeResult(home=home, python_version=python, gpus=tuple(gpus), disk_free_mib=disk, cpus=cpus)


async def probe(conn: HostConn, python: str) -> ProbeResult:
    result = await conn.run(probe_script(python), what="probe: python, nvidia-smi, df, nproc")
    found = parse_probe(result.stdout)
    if not found.home:
        raise HostError(
            "the host did not report $HOME", host=conn.label, stage="probe", stderr_tail=result.stderr
        )
    conn.log.write(
        f"python {found.python_version or 'missing'}; {len(found.gpus)} GPU(s) "
        + ", ".join(
            f"{g.index}:{g.name} {g.memory_free_mib}/{g.memory_total_mib} MiB free" for g in found.gpus
        )
        + f"; disk free {found.disk_free_mib} MiB; cpus {found.cpus}"
    )
    return found
