"""Where a measured stretch's CPU went on this machine, per role, read from /proc (Linux).

On two shared cores a process that takes CPU slows the others, so a ratio alone does not
say why it moved; the breakdown does. Processes that exit inside the stretch are missed
(the worker is read before it is stopped); PostgreSQL backends that start inside it count
from zero.
"""

import os
from dataclasses import dataclass
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
ROLES_BY_MODULE = {"worker": "worker", "notifier": "notifier", "api": "api", "bench.run": "bench"}
RABBITMQ = {"beam.smp", "erl_child_setup", "epmd", "inet_gethost"}


@dataclass(frozen=True)
class Reading:
    by_pid: dict[int, tuple[str, float]]  # role and CPU seconds so far
    busy_s: float  # the machine's, every core
    steal_s: float  # time the hypervisor gave another guest


def read() -> Reading:
    by_pid = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # it exited meanwhile
        comm, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) * TICK_S
        by_pid[int(entry.name)] = (_role(comm, cmdline), cpu_s)
    busy_s, steal_s = _machine()
    return Reading(by_pid, busy_s, steal_s)


def used_ms(before: Reading, after: Reading, per: int) -> dict[str, float]:
    """CPU milliseconds per unit (`per` units done in between), per role, and the machine's."""
    totals: dict[str, float] = {}
    for pid, (role, cpu_s) in after.by_pid.items():
        earlier = before.by_pid.get(pid)
        start_s = earlier[1] if earlier is not None and earlier[0] == role else 0.0
        totals[role] = totals.get(role, 0.0) + cpu_s - start_s
    totals["machine"] = after.busy_s - before.busy_s
    totals["steal"] = after.steal_s - before.steal_s
    return {role: round(1000 * s / per, 3) for role, s in sorted(totals.items()) if s > 0}


def _role(comm: str, cmdline: list[bytes]) -> str:
    if comm.startswith("postgres"):
        return "postgres"
    if comm in RABBITMQ:
        return "rabbitmq"
    if b"-m" in cmdline:
        module = cmdline[cmdline.index(b"-m") + 1].decode(errors="replace")
        return ROLES_BY_MODULE.get(module, "other")
    return "other"


def _machine() -> tuple[float, float]:
    """Busy and stolen seconds over all cores since boot, from the first line of /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) * TICK_S, steal * TICK_S
