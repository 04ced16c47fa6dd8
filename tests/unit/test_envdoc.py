"""The documented list of environment variables is generated from the code and kept current."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from meshkit.settings import env_bool
from tools.envdoc import __main__ as envdoc
from tools.envdoc.meanings import MEANINGS
from tools.envdoc.render import fold_services, render
from tools.envdoc.scan import Variable, reads_in, scan

SOURCE = '''
import os
from meshkit.settings import env_int, env_str
LIMIT = 4 * 60
def load(service: str, name: str) -> None:
    env_int("THING_LIMIT_S", LIMIT)
    env_str(f"{service.upper()}_HOST", "127.0.0.1")
    os.environ.get("PLAIN_ONE", "x")
    os.environ["MUST_HAVE"]
def tool(env: dict[str, str]) -> None:
    env.get("TOOL_MAPPED")
    _get(env, "HELPER_READ", "7")
    env_str(name, "")  # a parameter: not a definition
'''


def test_the_scanner_finds_every_kind_of_read(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(SOURCE)
    found = scan(tmp_path, ["pkg"])
    assert set(found) == {"THING_LIMIT_S", "<SVC>_HOST", "PLAIN_ONE", "MUST_HAVE", "TOOL_MAPPED",
                          "HELPER_READ"}
    assert found["HELPER_READ"].defaults == {"'7'"}
    assert found["THING_LIMIT_S"].kind == "integer"
    assert found["THING_LIMIT_S"].defaults == {"240"}
    assert found["<SVC>_HOST"].defaults == {"'127.0.0.1'"}
    assert found["MUST_HAVE"].defaults == {"(required)"}


def test_a_read_in_a_tool_is_attributed_to_its_module() -> None:
    reads = list(reads_in(ast.parse('import os\nos.getenv("TOOL_VAR")'), "tools.thing"))
    assert [(r.name, r.where) for r in reads] == [("TOOL_VAR", "tools.thing")]


def test_a_service_instance_of_a_pattern_is_folded_into_it() -> None:
    found = {"<SVC>_ADDR": Variable("<SVC>_ADDR", "string", set(), {"meshkit"}),
             "ACCOUNT_SVC_ADDR": Variable("ACCOUNT_SVC_ADDR", "string", set(), {"bench.x"})}
    folded = fold_services(found)
    assert set(folded) == {"<SVC>_ADDR"}
    assert folded["<SVC>_ADDR"].readers == {"meshkit", "bench.x"}


def test_an_undescribed_or_stale_variable_is_named() -> None:
    found: dict[str, object] = {"NEW_ONE": object(), "KNOWN": object()}
    issues = envdoc.problems(found, {"KNOWN": "yes", "GONE": "old"})
    assert issues == [
        "NEW_ONE is read by the code but has no meaning in tools/envdoc/meanings.py",
        "GONE is described in tools/envdoc/meanings.py but nothing reads it",
    ]


def test_every_variable_the_code_reads_is_described_and_the_file_is_current() -> None:
    found = fold_services(scan(envdoc.ROOT))
    assert envdoc.problems(dict(found), MEANINGS) == []
    committed = envdoc.TARGET.read_text(encoding="utf-8")
    assert committed == render(found, MEANINGS), "ENVIRONMENT.md is stale: run `make envdoc`"
    for name in ("DATABASE_URL", "WITHDRAW_COMPENSATION_ENABLED", "<SVC>_PORT"):
        assert f"| `{name}` |" in committed


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("YES", True), (" on ", True),
                                               ("0", False), ("false", False), ("Off", False)])
def test_a_boolean_reads_its_usual_spellings(monkeypatch: pytest.MonkeyPatch, raw: str,
                                             expected: bool) -> None:
    monkeypatch.setenv("SOME_SWITCH", raw)
    assert env_bool("SOME_SWITCH", not expected) is expected


@pytest.mark.parametrize("raw", ["ture", "flase", "enabled", "2"])
def test_a_mistyped_boolean_refuses_to_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                                 raw: str) -> None:
    monkeypatch.setenv("WITHDRAW_COMPENSATION_ENABLED", raw)
    with pytest.raises(SystemExit, match=f"WITHDRAW_COMPENSATION_ENABLED={raw!r} is not a boolean"):
        env_bool("WITHDRAW_COMPENSATION_ENABLED", True)


def test_withdraw_svc_settings_refuse_a_mistyped_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from withdraw_svc.settings import Settings

    monkeypatch.setenv("MESH_ENV", "dev")  # session keys: the dev key, so the rest can start
    monkeypatch.setenv("WITHDRAW_COMPENSATION_ENABLED", "ture")
    with pytest.raises(SystemExit, match="WITHDRAW_COMPENSATION_ENABLED='ture'"):
        Settings.from_env()
    monkeypatch.setenv("WITHDRAW_COMPENSATION_ENABLED", "false")
    assert Settings.from_env().compensation_enabled is False


def test_declared_names_and_loops_over_names_count_as_reads() -> None:
    source = '''
import os
EXPORTER_VAR = "SOME_EXPORTER"
def host(service: str, environ=None) -> None:
    for var in (f"{service.upper()}_BIND_HOST", "BIND_HOST"):
        (os.environ if environ is None else environ).get(var)
'''
    names = {r.name for r in reads_in(ast.parse(source), "meshkit")}
    assert names == {"SOME_EXPORTER", "<SVC>_BIND_HOST", "BIND_HOST"}
