"""Signing keys from the environment, with one set of rules for every key ring (reward
tokens now, session tokens later):

- unset: refused at start, unless `MESH_ENV=dev`, where the built-in development key is
  used and a WARNING says so (a forgotten variable must not silently mean a public key);
- every key at least MIN_KEY_BYTES long (HMAC-SHA256 keys shorter than its output are
  guessable sooner), except the built-in development key itself under `MESH_ENV=dev`;
- errors name the variable and the key id, never the key.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

MIN_KEY_BYTES = 32
DEV = "dev"


# A key id: what a token names its key by (kid), so short and plain.
KID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def parse_key_list(raw: str, noun: str, min_bytes: int = 0) -> dict[str, bytes]:
    """`k1:secret1,k2:secret2` -> {"k1": b"secret1", ...}, for any key ring; `noun` names
    the keys in errors ("reward token key"), which never quote a secret."""
    keys: dict[str, bytes] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        kid, sep, secret = part.partition(":")
        kid = kid.strip()
        if not sep or not KID_RE.fullmatch(kid) or not secret:
            raise ValueError(f"{noun} {kid[:32]!r} is not of the form <kid>:<secret>")
        if kid in keys:
            raise ValueError(f"{noun} id {kid!r} is listed twice")
        size = len(secret.encode())
        if size < min_bytes:
            raise ValueError(f"{noun} {kid!r} is {size} bytes; at least {min_bytes} are required")
        keys[kid] = secret.encode()
    if not keys:
        raise ValueError(f"no {noun}s listed")
    return keys


def mesh_env(environ: Mapping[str, str] | None = None) -> str:
    """MESH_ENV: `dev` relaxes the key rules; anything else (or unset) does not."""
    env = os.environ if environ is None else environ
    return env.get("MESH_ENV", "").strip()


def is_dev(environ: Mapping[str, str] | None = None) -> bool:
    return mesh_env(environ) == DEV


def key_ring(
    variable: str,
    raw: str,
    parse: Callable[[str], dict[str, bytes]],
    dev_default: str,
    environ: Mapping[str, str] | None = None,
) -> dict[str, bytes]:
    """The keys `raw` (the value of `variable`) lists, parsed by `parse`, judged by the rules
    above. Raises SystemExit with a message fit for a start-up failure."""
    dev = is_dev(environ)
    defaults = parse(dev_default)
    if not raw.strip():
        if not dev:
            raise SystemExit(
                f"{variable} is not set: set it (every key at least {MIN_KEY_BYTES} bytes), "
                "or MESH_ENV=dev to use the built-in development key"
            )
        log.warning("%s is not set: using the built-in development key (MESH_ENV=dev); "
                    "anyone can sign with it", variable)
        return defaults
    try:
        keys = parse(raw)
    except ValueError as exc:
        raise SystemExit(f"{variable}: {exc}") from exc
    for kid, secret in keys.items():
        if dev and defaults.get(kid) == secret:
            log.warning("%s: key %s is the built-in development key (MESH_ENV=dev)", variable, kid)
            continue
        if len(secret) < MIN_KEY_BYTES:
            raise SystemExit(
                f"{variable}: key {kid!r} is {len(secret)} bytes; at least {MIN_KEY_BYTES} are required"
            )
    return keys
