"""CPU time of processes over one measured window, from /proc (Linux).

A process's utime + stime (/proc/<pid>/stat, all its threads) only grows, so the CPU it
used in a window is its last reading minus its reading at the window's start. Processes
come and go during a window (a pool opens a connection, PostgreSQL forks a backend), so a
`CpuWindow` is fed observations: each `observe()` reads every process it is given, a
process first seen after the start counts from zero if it was born inside the window, and
a process that has gone keeps its last reading (what it used after that is lost: sample
often enough that this stays small; `lost` says how many went). A pid is told apart from a
reused one by its start time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_s: float        # utime + stime of all threads
    start_ticks: int    # clock ticks after boot when it started


def parse_stat(text: str) -> ProcStat:
    """One /proc/<pid>/stat line. The command name sits in parentheses and may itself hold
    spaces and ')' ("postgres: 15/main: walwriter" is cut to 15 characters, but a thread
    name can be anything), so fields are counted from the last ')'."""
    head, _, tail = text.rpartition(")")
    pid = int(head.partition("(")[0])
    rest = tail.split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15, starttime 22.
    return ProcStat(pid=pid, ppid=int(rest[1]), cpu_s=(int(rest[11]) + int(rest[12])) / CLK_TCK,
                    start_ticks=int(rest[19]))


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """None when the process is gone (or never was)."""
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid: int, proc: Path = PROC) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def children(ppid: int, proc: Path = PROC) -> list[int]:
    """Pids whose parent is `ppid` (one scan of /proc)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name), proc)
        if stat is not None and stat.ppid == ppid:
            found.append(stat.pid)
    return found


def thread_cpu(pid: int, proc: Path = PROC) -> dict[int, tuple[str, float]]:
    """tid -> (thread name, CPU seconds) of every thread of `pid` (names are what the thread
    set: gRPC's C++ threads name themselves, Python threads stay "python")."""
    found: dict[int, tuple[str, float]] = {}
    with contextlib.suppress(OSError):
        for entry in (proc / str(pid) / "task").iterdir():
            try:
                name = (entry / "comm").read_text().strip()
                stat = parse_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue
            found[stat.pid] = (name, stat.cpu_s)
    return found


def uptime_ticks(proc: Path = PROC) -> int:
    return int(float((proc / "uptime").read_text().split()[0]) * CLK_TCK)


def host_busy_s(proc: Path = PROC) -> float:
    """CPU seconds the whole host spent not idle since boot, all cores (/proc/stat)."""
    first = (proc / "stat").read_text().splitlines()[0].split()
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    values = [int(v) for v in first[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def own_cpu_s() -> float:
    """This process, all threads (its reaped children not included)."""
    t = os.times()
    return t.user + t.system


@dataclass
class Tracked:
    pid: int
    group: str
    start_ticks: int
    baseline_s: float
    last_s: float
    # Still running at the last observation.
    alive: bool = True
    # First seen after the window started, yet born before it: what it used between the
    # start and its first sighting is missing.
    late: bool = False

    @property
    def used_s(self) -> float:
        return self.last_s - self.baseline_s


@dataclass
class CpuWindow:
    """CPU of groups of processes between start() and stop()."""

    proc: Path = PROC
    tracked: dict[tuple[int, int], Tracked] = field(default_factory=dict)
    started_ticks: int = 0
    host_busy_start_s: float = 0.0
    host_busy_used_s: float = 0.0
    running: bool = False

    def start(self, pids: Mapping[int, str]) -> None:
        self.tracked.clear()
        self.started_ticks = uptime_ticks(self.proc)
        self.host_busy_start_s = host_busy_s(self.proc)
        self.running = True
        self._observe(pids, at_start=True)

    def observe(self, pids: Mapping[int, str]) -> None:
        """Read the processes given (pid -> group; a later group replaces an earlier one);
        those not given keep their last reading."""
        if self.running:
            self._observe(pids, at_start=False)

    def stop(self, pids: Mapping[int, str]) -> None:
        self._observe(pids, at_start=False)
        for item in self.tracked.values():
            if item.alive and read_stat(item.pid, self.proc) is None:
                item.alive = False
        self.host_busy_used_s = host_busy_s(self.proc) - self.host_busy_start_s
        self.running = False

    def _observe(self, pids: Mapping[int, str], at_start: bool) -> None:
        seen: set[tuple[int, int]] = set()
        for pid, group in pids.items():
            stat = read_stat(pid, self.proc)
            if stat is None:
                continue
            key = (pid, stat.start_ticks)
            seen.add(key)
            item = self.tracked.get(key)
            if item is None:
                born_inside = not at_start and stat.start_ticks >= self.started_ticks
                item = Tracked(pid, group, stat.start_ticks,
                               baseline_s=0.0 if born_inside else stat.cpu_s, last_s=stat.cpu_s,
                               late=not at_start and not born_inside)
                self.tracked[key] = item
            item.group, item.last_s = group, stat.cpu_s
        # A pid now owned by a new process: the old one is gone.
        current = {pid for pid, _ in seen}
        for key, item in self.tracked.items():
            if key not in seen and item.pid in current:
                item.alive = False

    def by_group(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for item in self.tracked.values():
            totals[item.group] = totals.get(item.group, 0.0) + item.used_s
        return totals

    def lost(self) -> dict[str, int]:
        """Processes that ended inside the window, by group: their last moments are not counted."""
        gone: dict[str, int] = {}
        for item in self.tracked.values():
            if not item.alive:
                gone[item.group] = gone.get(item.group, 0) + 1
        return gone

    def late(self) -> dict[str, int]:
        """Processes first seen after the start though born before it, by group."""
        seen: dict[str, int] = {}
        for item in self.tracked.values():
            if item.late:
                seen[item.group] = seen.get(item.group, 0) + 1
        return seen


@dataclass
class CpuSampler:
    """Feeds a CpuWindow every `interval_s` from `discover()` (pid -> group), in a task of
    its own, so that short-lived processes are seen and gone ones lose at most one interval."""

    discover: Callable[[], Awaitable[dict[int, str]]]
    interval_s: float = 0.5
    window: CpuWindow = field(default_factory=CpuWindow)
    samples: int = 0
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.window.start(await self.discover())
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> CpuWindow:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.window.stop(await self.discover())
        return self.window

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.window.observe(await self.discover())
            self.samples += 1
