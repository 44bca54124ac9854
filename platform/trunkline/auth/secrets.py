"""High-entropy bearer secrets, stored only as HMAC-SHA256 keyed hashes.

A secret reads ``<prefix>_<id>_<secret>``: the id is public and indexes the
lookup, the secret part has 240 bits of entropy. The hash covers the whole
string, keyed with the server secret, so a leaked database cannot be replayed
against the gateway without that server secret.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Sequence
from typing import NamedTuple

_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 12
SECRET_LENGTH = 40
API_KEY_PREFIX = "tlk"
ACCESS_TOKEN_PREFIX = "tlu"  # noqa: S105 - a prefix, not a secret


SHOWN_SECRET_LENGTH = 20
"""From how many characters of a secret on :func:`redacted` cuts them: a shorter piece leaves
120 bits or more to guess, and a name such as ``tlk_experiment12_v2`` stays as written."""
_WHOLE_SECRET = re.compile(
    rf"((?:{API_KEY_PREFIX}|{ACCESS_TOKEN_PREFIX})_[A-Za-z0-9]{{{ID_LENGTH}}}_)"
    rf"[A-Za-z0-9]{{{SHOWN_SECRET_LENGTH},{SECRET_LENGTH}}}"
)
"""A key's or token's secret part after its id, whatever stands around it: a key pasted twice
(``…secret1tlk_…``), beside a letter or cut short by a character was written out whole."""


_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#@]*@")


class IssuedSecret(NamedTuple):
    public_id: str
    plaintext: str
    digest: str


class ParsedSecret(NamedTuple):
    public_id: str
    plaintext: str


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def keyed_hash(server_secret: bytes, plaintext: str) -> str:
    return hmac.new(server_secret, plaintext.encode(), hashlib.sha256).hexdigest()


def tenant_cache_salt(secret: bytes, tenant_id: str) -> str:
    """The tenant's prefix-cache salt: a keyed HMAC of its id, never the secret itself.

    Stable across publishes (a tenant keeps its cached prefixes); rotating the secret
    changes every salt at once, which costs one cold cache and leaks nothing. A gateway
    recomputes one to tell whether it was given the control plane's secret.
    """
    message = b"trunkline/cache-salt/v1:" + tenant_id.encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def issue(server_secret: bytes, prefix: str) -> IssuedSecret:
    public_id = _random(ID_LENGTH)
    plaintext = f"{prefix}_{public_id}_{_random(SECRET_LENGTH)}"
    return IssuedSecret(public_id, plaintext, keyed_hash(server_secret, plaintext))


def parse(plaintext: str, prefix: str) -> ParsedSecret | None:
    """Split a presented secret; ``None`` when it cannot be one of ours."""
    parts = plaintext.split("_")
    if len(parts) != 3 or parts[0] != prefix:
        return None
    public_id, secret = parts[1], parts[2]
    if len(public_id) != ID_LENGTH or len(secret) != SECRET_LENGTH:
        return None
    if not (public_id.isalnum() and secret.isalnum() and public_id.isascii() and secret.isascii()):
        return None
    return ParsedSecret(public_id, plaintext)


def verify(
    server_secret: bytes, plaintext: str, digest: str, previous: Sequence[bytes] = ()
) -> bool:
    """Whether ``digest`` is ``plaintext``'s under the server secret or one of the ``previous``
    ones an operator still accepts while rotating it (keys and tokens issued before keep their
    hash). Every secret is tried, so the time taken does not say which one matched."""
    matched = hmac.compare_digest(keyed_hash(server_secret, plaintext), digest)
    for secret in previous:
        matched |= hmac.compare_digest(keyed_hash(secret, plaintext), digest)
    return matched


def redacted(text: str) -> str:
    """``text`` with the secret part of every key or token in it replaced (from
    ``SHOWN_SECRET_LENGTH`` of its characters on), its public id kept (``tlk_<id>_…``): for what
    is written out, a log line or a problem's ``instance``, when a caller pasted a whole key
    where its id goes."""
    return _WHOLE_SECRET.sub(r"\1…", text)


STAND_IN = "…"
"""What stands for a URL's password wherever the URL is shown."""


@functools.lru_cache(maxsize=4096)
def without_password(url: str) -> str:
    """``url`` with the password of its user information replaced (``http://user:…@host``):
    for what is written out (a log line, the usage ledger, an API answer, a change report)
    about a URL an operator may have given credentials in, such as an engine endpoint behind
    a proxy that asks for them."""
    return _URL_PASSWORD.sub(rf"\1:{STAND_IN}@", url)


def password_as_shown(url: str) -> bool:
    """Whether ``url`` carries the stand-in :func:`without_password` shows, not a password
    (a URL copied from an answer and sent back)."""
    match = _URL_PASSWORD.match(url)
    return match is not None and match.group(0).endswith(f":{STAND_IN}@")
