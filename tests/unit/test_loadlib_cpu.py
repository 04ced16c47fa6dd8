"""CPU accounting from /proc: parsing a stat line, and a window over processes that start,
end and reuse pids while it is open (a fake /proc in a temporary directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.loadlib.cpu import CLK_TCK, CpuWindow, children, parse_stat, thread_cpu


def stat_line(pid: int, comm: str, ppid: int, ticks: int, start: int) -> str:
    # Fields 3..22: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice threads itrealvalue starttime.
    utime, stime = ticks - ticks // 3, ticks // 3
    return (f"{pid} ({comm}) S {ppid} 1 1 0 -1 4194304 10 0 0 0 {utime} {stime} 7 7 20 0 4 0 "
            f"{start} 1000 100 18446744073709551615\n")


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uptime(100.0)
        self.host_busy(0)

    def uptime(self, seconds: float) -> None:
        (self.root / "uptime").write_text(f"{seconds:.2f} 50.00\n")

    def host_busy(self, ticks: int) -> None:
        # user nice system idle iowait irq softirq steal
        (self.root / "stat").write_text(f"cpu  {ticks} 0 0 5000 7 0 0 0 0 0\ncpu0 1 2 3 4\n")

    def process(self, pid: int, ticks: int, start: int, ppid: int = 1, comm: str = "python") -> None:
        (self.root / str(pid)).mkdir(exist_ok=True)
        (self.root / str(pid) / "stat").write_text(stat_line(pid, comm, ppid, ticks, start))

    def gone(self, pid: int) -> None:
        (self.root / str(pid) / "stat").unlink()
        (self.root / str(pid)).rmdir()


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    # A thread may name itself anything, spaces and parentheses included.
    stat = parse_stat(stat_line(4242, "postgres: x) (y", 17, 3 * CLK_TCK, 987654))
    assert (stat.pid, stat.ppid, stat.start_ticks) == (4242, 17, 987654)
    assert stat.cpu_s == pytest.approx(3.0)


def test_window_counts_only_what_each_process_used_inside_it(proc: FakeProc) -> None:
    start_ticks = 100 * CLK_TCK
    proc.process(10, ticks=5 * CLK_TCK, start=1)             # ran long before the window
    proc.process(11, ticks=1 * CLK_TCK, start=2)
    window = CpuWindow(proc=proc.root)
    window.start({10: "a", 11: "b"})

    proc.process(10, ticks=7 * CLK_TCK, start=1)
    proc.process(12, ticks=1 * CLK_TCK, start=start_ticks + 50)   # born inside: all of it counts
    proc.process(13, ticks=9 * CLK_TCK, start=3)                  # born before, first seen now
    window.observe({10: "a", 12: "b", 13: "c"})
    proc.process(12, ticks=2 * CLK_TCK, start=start_ticks + 50)
    proc.process(13, ticks=10 * CLK_TCK, start=3)
    window.observe({12: "b", 13: "c"})
    proc.gone(11)                                                  # ended: keeps its last reading
    proc.host_busy(20 * CLK_TCK)
    window.stop({10: "a", 12: "b", 13: "c"})

    used = window.by_group()
    assert used["a"] == pytest.approx(2.0)
    assert used["b"] == pytest.approx(0.0 + 2.0)
    assert used["c"] == pytest.approx(1.0)
    assert window.lost() == {"b": 1}
    assert window.late() == {"c": 1}
    assert window.host_busy_used_s == pytest.approx(20.0)


def test_a_reused_pid_is_a_new_process(proc: FakeProc) -> None:
    proc.process(20, ticks=4 * CLK_TCK, start=5)
    window = CpuWindow(proc=proc.root)
    window.start({20: "x"})
    proc.process(20, ticks=6 * CLK_TCK, start=5)
    window.observe({20: "x"})
    # The first process 20 ended; a new one got its pid inside the window.
    proc.process(20, ticks=1 * CLK_TCK, start=100 * CLK_TCK + 10)
    window.stop({20: "x"})
    assert window.by_group()["x"] == pytest.approx(2.0 + 1.0)
    assert window.lost() == {"x": 1}


def test_children_and_threads(proc: FakeProc) -> None:
    proc.process(30, ticks=0, start=1)
    proc.process(31, ticks=0, start=2, ppid=30)
    proc.process(32, ticks=0, start=2, ppid=30)
    proc.process(33, ticks=0, start=2, ppid=31)
    assert sorted(children(30, proc.root)) == [31, 32]

    task = proc.root / "30" / "task"
    for tid, name, ticks in ((30, "python", 3), (34, "event_engine", 1)):
        (task / str(tid)).mkdir(parents=True)
        (task / str(tid) / "comm").write_text(f"{name}\n")
        (task / str(tid) / "stat").write_text(stat_line(tid, name, 1, ticks * CLK_TCK, 2))
    assert thread_cpu(30, proc.root) == {30: ("python", pytest.approx(3.0)),
                                         34: ("event_engine", pytest.approx(1.0))}
