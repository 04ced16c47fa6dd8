#!/usr/bin/env python3
"""Where a service's time goes, from py-spy's raw (collapsed) output.

    python tools/pyspy_summary.py .run/profiles/<run>/*.txt [--top 10]

Expects profiles recorded with `--format raw --full-filenames` (bench/cost_per_order.py
--profile-dir does so): library and project code are told apart by path. Only the main
thread's samples are counted (the event loop, where every handler runs): py-spy also
reports the metrics HTTP thread and gRPC's poller as busy while they wait in a system call,
and cannot see gRPC's C++ threads at all; bench/cost_per_order.py writes the real CPU per
thread next to the profiles (cpu-by-thread.log).

For each profile it prints the share of samples by where the innermost frame is (self time:
C code under the event loop, gRPC's Python layer, asyncpg, Redis client, protobuf,
telemetry, asyncio, project code, other), the inclusive share of stacks that pass through
each of them, and the top project functions by inclusive share.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Checked in order: the first match names the frame's kind.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gRPC (Python layer)", ("/site-packages/grpc/", "/site-packages/grpc_")),
    ("asyncpg (SQL client)", ("/site-packages/asyncpg/",)),
    ("Redis client", ("/site-packages/redis/", "/site-packages/hiredis")),
    ("protobuf", ("/site-packages/google/protobuf/",)),
    ("telemetry (OpenTelemetry, Prometheus)",
     ("/site-packages/opentelemetry/", "/site-packages/prometheus_client/")),
    ("asyncio / uvloop", ("/asyncio/", "/site-packages/uvloop/", "/uvloop/")),
    ("logging, json", ("/logging/", "/json/", "/site-packages/orjson")),
    # Native frames (py-spy --native only).
    ("CPython interpreter", ("libpython", "/Python-3.", "/cpython-3.")),
    ("libc (system calls, allocator)", ("/libc.so",)),
)
IDLE_LOOP = "C under the event loop (uvloop, gRPC Cython, system calls)"
PROJECT = "project code"
OTHER = "other (stdlib, dataclasses, ...)"


@dataclass(frozen=True)
class Frame:
    func: str
    file: str

    @classmethod
    def parse(cls, text: str) -> Frame:
        match = FRAME.match(text.strip())
        if not match:
            return cls(text.strip(), "")
        return cls(match["func"], match["file"])


def kind_of(frame: Frame, root: str) -> str:
    if frame.file.startswith(root) and "/site-packages/" not in frame.file and "/.venv/" not in frame.file:
        return PROJECT
    for kind, needles in KINDS:
        if any(n in frame.file for n in needles):
            return kind
    return OTHER


def project_name(frame: Frame, root: str) -> str:
    return f"{frame.func} ({frame.file.removeprefix(root)})"


@dataclass
class Summary:
    name: str
    samples: int = 0
    main_samples: int = 0
    self_kind: Counter[str] = field(default_factory=Counter)
    through_kind: Counter[str] = field(default_factory=Counter)
    project_inclusive: Counter[str] = field(default_factory=Counter)


def parse_line(line: str) -> tuple[list[Frame], int] | None:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack or not count.isdigit():
        return None
    return [Frame.parse(f) for f in stack.split(";")], int(count)


def is_main_thread(frames: list[Frame]) -> bool:
    return any(f.func == "_run_module_as_main" for f in frames)


def is_loop_run(frame: Frame) -> bool:
    return frame.func in ("Runner.run", "run") and frame.file.endswith(("asyncio/runners.py",
                                                                         "uvloop/__init__.py"))


def below_loop(frames: list[Frame]) -> list[Frame]:
    """The frames of one callback: those inside the event loop's run()."""
    for i in range(len(frames) - 1, -1, -1):
        if is_loop_run(frames[i]):
            return frames[i + 1:]
    return frames


def summarize(name: str, lines: Iterable[str], root: str) -> Summary:
    out = Summary(name)
    for line in lines:
        parsed = parse_line(line)
        if parsed is None:
            continue
        frames, count = parsed
        out.samples += count
        if not is_main_thread(frames):
            continue
        out.main_samples += count
        inner = below_loop(frames)
        # The loop's own run() as innermost Python frame: the sample was in C below it.
        out.self_kind[kind_of(inner[-1], root) if inner else IDLE_LOOP] += count
        for kind in {kind_of(f, root) for f in inner}:
            out.through_kind[kind] += count
        for project in {project_name(f, root) for f in inner if kind_of(f, root) == PROJECT}:
            out.project_inclusive[project] += count
    return out


def render(s: Summary, top: int) -> str:
    main = s.main_samples or 1

    def pct(n: int) -> str:
        return f"{100.0 * n / main:5.1f}%"

    lines = [f"{s.name}: {s.main_samples} main-thread samples (of {s.samples})",
             "  self time by kind of innermost frame:"]
    lines += [f"    {pct(n)}  {kind}" for kind, n in s.self_kind.most_common()]
    lines.append("  inclusive (stacks that pass through):")
    lines += [f"    {pct(n)}  {kind}" for kind, n in s.through_kind.most_common()]
    lines.append(f"  top {top} project functions, inclusive:")
    lines += [f"    {pct(n)}  {name}" for name, n in s.project_inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profiles", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--root", default=str(ROOT), help="the checkout the services ran from (default: this one)")
    args = p.parse_args(argv)
    root = args.root.rstrip("/") + "/"
    for path in args.profiles:
        with path.open() as f:
            print(render(summarize(path.stem, f, root), args.top))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
