"""Connection URLs made safe to print: passwords never reach a terminal, a log or a report."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# libpq and asyncpg also take the password as a query parameter or a key=value DSN word.
_SECRET_KEYS = {"password", "sslpassword"}
_DSN_SECRET = re.compile(r"\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with every password replaced by ***; user, host, port, database and the other
    parameters are kept so the printed line still says which server it is."""
    if "://" not in url:  # a key=value DSN ("host=... password=...")
        return _DSN_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_KEYS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in _SECRET_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
