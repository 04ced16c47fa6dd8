"""The profile summary splits main-thread samples by where they are and ranks project
functions by inclusive share; other threads are left out."""

from __future__ import annotations

from tools.pyspy_summary import IDLE_LOOP, PROJECT, summarize

ROOT = "/repo/"
LOOP = ("_run_module_as_main (<frozen runpy>:198);<module> (/repo/withdraw_svc/__main__.py:5);"
        "main (/repo/meshkit/server.py:137);run (/venv/lib/python3.11/site-packages/uvloop/__init__.py:92);"
        "Runner.run (/py/lib/python3.11/asyncio/runners.py:118)")
HANDLER = "handle (/repo/meshkit/interceptors.py:38);confirm (/repo/withdraw_svc/service.py:99)"
SQL = "Connection._do_execute (/venv/lib/python3.11/site-packages/asyncpg/connection.py:2066)"


def test_summary_by_kind_and_project_function() -> None:
    lines = [
        f"{LOOP} 6",                                  # in C under the loop
        f"{LOOP};{HANDLER};{SQL} 3",
        f"{LOOP};{HANDLER} 1",
        "Thread._bootstrap (/py/lib/python3.11/threading.py:1002);"
        "BaseServer.serve_forever (/py/lib/python3.11/socketserver.py:233) 50",
        "not a profile line",
    ]
    s = summarize("withdraw_svc", lines, ROOT)
    assert (s.samples, s.main_samples) == (60, 10)
    assert s.self_kind[IDLE_LOOP] == 6
    assert s.self_kind["asyncpg (SQL client)"] == 3
    assert s.self_kind[PROJECT] == 1
    assert s.through_kind[PROJECT] == 4
    assert s.project_inclusive["confirm (withdraw_svc/service.py)"] == 4
    # The process entry (__main__, server.main) sits above the loop: not a handler's time.
    assert not any("__main__" in name or "server.py" in name for name in s.project_inclusive)
