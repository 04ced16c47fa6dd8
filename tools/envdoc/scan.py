"""Find every environment variable the project reads, by reading the source (ast), so the
documented list cannot drift from the code: a variable read anywhere shows up here."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Readers of meshkit/settings.py, and the type each one parses.
READERS = {
    "env_str": "string",
    "env_int": "integer",
    "env_float": "number",
    "env_bool": "boolean",
    "env_list": "list (comma-separated)",
}

# Where the mesh and its tools live; tests set variables, they do not define them.
SCANNED = ("meshkit", "account_svc", "withdraw_svc", "payout_svc", "recon_svc", "gateway_mock",
           "campaign", "edge", "tools", "bench")

# f"{service.upper()}_PORT" and the like: one variable per service.
SERVICE_PLACEHOLDER = "<SVC>"


@dataclass
class Variable:
    name: str
    kind: str
    defaults: set[str] = field(default_factory=set)
    readers: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Read:
    name: str
    kind: str
    default: str
    where: str


def scan(root: Path, packages: Iterable[str] = SCANNED) -> dict[str, Variable]:
    found: dict[str, Variable] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            constants = _constants_seen_by(tree, root)
            # A service is named by its package; a tool or bench by its module.
            where = package
            if package in {"tools", "bench"}:
                where = str(path.relative_to(root).with_suffix("")).replace("/", ".")
            for read in reads_in(tree, where):
                var = found.setdefault(read.name, Variable(read.name, read.kind))
                if var.kind == "string" and read.kind != "string":
                    var.kind = read.kind
                default = constants.get(read.default, read.default)
                if default and (not default.isidentifier() or default in {"True", "False"}):
                    var.defaults.add(default)
                var.readers.add(read.where)
    return found


def _constants_seen_by(tree: ast.Module, root: Path) -> dict[str, str]:
    """Module-level literal constants of this module and of the project modules it imports
    names from, rendered as a default would be: DEFAULT_RATES -> 'bank:2000,...'."""
    seen = _literal_constants(tree)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            source = root / (node.module.replace(".", "/") + ".py")
            if source.is_file():
                theirs = _literal_constants(ast.parse(source.read_text(encoding="utf-8")))
                for alias in node.names:
                    if alias.name in theirs:
                        seen[alias.asname or alias.name] = theirs[alias.name]
    return seen


def _literal_constants(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                text = _text(node.value)
                if text and not text.isidentifier():
                    out[node.targets[0].id] = text
                continue
            if isinstance(value, str):
                out[node.targets[0].id] = repr(value)
            elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                out[node.targets[0].id] = repr(",".join(value))
    return out


def reads_in(tree: ast.AST, where: str) -> Iterator[Read]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield from _call(node, where)
        elif isinstance(node, ast.Assign) and _declares_variable(node):
            # EXPORTER_VAR = "OTEL_TRACES_EXPORTER": a module names the variable it reads once.
            yield Read(_name_of(node.value), "string", "", where)
        elif isinstance(node, ast.For) and isinstance(node.target, ast.Name) and _reads_loop_var(node):
            # for var in ("<SVC>_METRICS_HOST", "METRICS_HOST"): environ.get(var) — each one.
            assert isinstance(node.iter, ast.Tuple | ast.List)
            for element in node.iter.elts:
                if name := _name_of(element):
                    yield Read(name, "string", "", where)
        elif isinstance(node, ast.Subscript) and (_is_environ(node.value) or _is_env_mapping(node.value)):
            name = _name_of(node.slice)
            if name and isinstance(node.ctx, ast.Load):
                yield Read(name, "string", "(required)", where)


def _declares_variable(node: ast.Assign) -> bool:
    target = node.targets[0] if len(node.targets) == 1 else None
    return isinstance(target, ast.Name) and target.id.endswith("_VAR") and bool(_name_of(node.value))


def _reads_loop_var(node: ast.For) -> bool:
    if not isinstance(node.iter, ast.Tuple | ast.List) or not isinstance(node.target, ast.Name):
        return False
    loop_var = node.target.id
    for inner in ast.walk(node):
        is_get = isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) \
            and inner.func.attr == "get" and _is_environ_like(inner.func.value)
        if is_get and isinstance(inner, ast.Call) and inner.args \
                and isinstance(inner.args[0], ast.Name) and inner.args[0].id == loop_var:
            return True
    return False


def _is_environ_like(node: ast.AST) -> bool:
    """os.environ, a mapping named env/environ, or `(os.environ if x is None else x)`."""
    if isinstance(node, ast.IfExp):
        return _is_environ_like(node.body) or _is_environ_like(node.orelse)
    return _is_environ(node) or _is_env_mapping(node)


def _call(node: ast.Call, where: str) -> Iterator[Read]:
    func = node.func
    fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if fname in READERS and node.args:
        name = _name_of(node.args[0])
        if name:
            default = _text(node.args[1]) if len(node.args) > 1 else ""
            yield Read(name, READERS[fname], default, where)
        return
    if len(node.args) >= 2 and _is_env_mapping(node.args[0]):
        # A helper over a mapping of the environment: _get(env, "NAME", default).
        name = _name_of(node.args[1])
        if name:
            default = _text(node.args[2]) if len(node.args) > 2 else ""
            yield Read(name, "string", default, where)
            return
    is_get = isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ_like(func.value)
    is_getenv = isinstance(func, ast.Attribute) and func.attr == "getenv" and _is_os(func.value)
    if (is_get or is_getenv) and node.args:
        name = _name_of(node.args[0])
        if name:
            default = _text(node.args[1]) if len(node.args) > 1 else ""
            yield Read(name, "string", default, where)


def _is_os(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "os"


# Names the code gives a mapping of the environment (os.environ passed in, or a copy).
ENV_MAPPINGS = frozenset({"env", "environ", "environment"})


def _is_env_mapping(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ENV_MAPPINGS


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ" and _is_os(node.value)) or (
        isinstance(node, ast.Name) and node.id == "environ")


def _name_of(node: ast.AST) -> str:
    """A literal variable name, or an f-string over a service name rendered with <SVC>;
    anything else (a parameter, a computed name) is not a definition and is skipped."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if _looks_like_variable(node.value) else ""
    if isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            else:
                parts.append(SERVICE_PLACEHOLDER)
        name = "".join(parts)
        return name if _looks_like_variable(name.replace(SERVICE_PLACEHOLDER, "SVC")) else ""
    return ""


def _looks_like_variable(name: str) -> bool:
    return bool(name) and name.replace("_", "").isalnum() and name.upper() == name


def _text(node: ast.AST) -> str:
    """A default as a reader sees it: a literal, a constant's name (resolved by the caller),
    or arithmetic on literals (4 * 3600 -> 14400). A default computed at run time (a port
    plus 1000, a host name) is left to the meaning's words."""
    if isinstance(node, ast.Constant):
        return repr(node.value) if isinstance(node.value, str) else str(node.value)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.List | ast.Tuple) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return repr(",".join(str(e.value) for e in node.elts if isinstance(e, ast.Constant)))
    arithmetic = ast.Constant | ast.BinOp | ast.UnaryOp | ast.operator | ast.unaryop
    if isinstance(node, ast.expr) and all(isinstance(n, arithmetic) for n in ast.walk(node)):
        # Only literals and operators reach here: nothing to call, nothing to look up.
        value = eval(compile(ast.Expression(body=node), "<default>", "eval"), {"__builtins__": {}})
        return str(value)
    return ""
