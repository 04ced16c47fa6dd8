"""What a log line may show of a secret: enough to tell two apart, never enough to use one.
Logs are read by more people, kept longer and copied further than any secret store."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

TOKEN_SHOWN = 8


def account(number: str) -> str:
    """An account number as its last 4 digits (nothing of a number that short)."""
    return "****" + (number[-4:] if len(number) > 4 else "")


def token(value: str) -> str:
    """A token (reward, session) as its first 8 characters: its kid and part of its payload."""
    return value[:TOKEN_SHOWN] + "…" if len(value) > TOKEN_SHOWN else "…"


def url(value: str) -> str:
    """A URL without its password, query and fragment; a path is cut to its first segment,
    since webhook URLs often carry their secret in the path."""
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    segments = [s for s in parts.path.split("/") if s]
    path = f"/{segments[0]}/…" if len(segments) > 1 else parts.path
    return urlunsplit((parts.scheme, netloc, path, "", ""))
