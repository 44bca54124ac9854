"""Who may read a server's operational detail: its ``/metrics`` and the detailed body of its
readiness probe (the gateway's ``/health``, the control plane's ``/healthz``).

That detail names pools and endpoints and counts every tier's requests and admissions: other
tenants' traffic, on the port tenants call. So it is served to a scraper holding the server's
scrape token (``Authorization: Bearer <token>``, compared in constant time), and without one
only by a server bound to loopback (``trunkline up``: nothing else can reach it). Production
settings refuse to start without a token (``Settings.check_production``). A probe without the
token still gets the readiness status, and nothing else.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from pydantic import SecretStr

from trunkline.errors import Unauthenticated

__all__ = ["ScrapeAccess", "loopback"]

log = logging.getLogger(__name__)


def loopback(host: str) -> bool:
    """``host`` is a loopback address (or ``localhost``): nothing off this machine reaches it. A
    host name may resolve to anything, so it is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ScrapeAccess:
    """The scrape token of one server (``variable`` names its setting, for the refusal)."""

    def __init__(self, token: SecretStr | None, host: str, variable: str) -> None:
        # A bearer token holds no whitespace: what surrounds it came with the setting (a
        # Secret's file ending in a newline), and the scraper sends it trimmed. Set empty (a
        # compose file's blank variable), it is no token, not "".
        value = "" if token is None else token.get_secret_value().strip()
        self._token = value.encode() or None
        self._open = self._token is None and loopback(host)
        self._variable = variable
        if self._token is None and not self._open:
            log.warning(
                "%s is unset and this server binds %s, not loopback: its /metrics and health "
                "details are served to nobody; set it and give it to the scraper",
                variable,
                host,
            )

    @classmethod
    def open(cls) -> ScrapeAccess:
        """No token, as a server on loopback is (tests building an app directly)."""
        return cls(None, "127.0.0.1", "")

    def allows(self, authorization: list[str]) -> bool:
        """The values of the request's ``Authorization`` headers carry the token (exactly one)."""
        if self._open:
            return True
        if self._token is None or len(authorization) != 1:
            return False
        scheme, _, given = authorization[0].partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    def check(self, authorization: list[str]) -> None:
        """Raise ``Unauthenticated`` (401) unless :meth:`allows`."""
        if self.allows(authorization):
            return
        how = (
            f"send the scrape token ({self._variable}) as Authorization: Bearer <token>"
            if self._token is not None
            else f"set {self._variable} on the server and send it as Authorization: Bearer <token>"
        )
        raise Unauthenticated(
            f"The metrics and health details need the scrape token: {how}.",
            reason="invalid_scrape_token",
            extra={"headers": {"www-authenticate": "Bearer"}},
        )
