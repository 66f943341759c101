"""Secrets in URLs and messages: redact them for anything written, scrub them from any text.

A judge's ``base_url`` may carry credentials: ``https://user:password@host/v1`` or a query such as
``?api-key=...`` (Azure Functions use ``?code=...``). Whatever the harness writes (manifest,
verdicts, report, terminal) shows the URL through :func:`redact_url`: the user-info becomes ``***``
and every query value becomes ``***`` except those known to be harmless (``api-version``). Text that
came back from a server is passed through :func:`scrub` with every secret the backend holds, so a
key the server echoes never reaches the cache, the verdicts or the report.

:func:`endpoint` builds request URLs from a base URL, keeping its query string after the new path
(an Azure-style ``?api-version=`` stays a query, not part of the path).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from harness.errors import RunError

REDACTED = "***"
#: Query parameters whose values are never secret, so they stay readable in what the harness writes.
HARMLESS_QUERY = frozenset({"api-version", "api_version", "version"})
#: Secrets shorter than this are not scrubbed from free text (they would mangle ordinary words).
MIN_SCRUB = 4


def _netloc(host: str | None, port: int | None) -> str:
    host = host or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}" if port is not None else host


def redact_url(url: str) -> str:
    """``url`` with its user-info and query values (harmless ones apart) replaced by ``***``."""
    parts = urlsplit(url)
    if not (parts.username or parts.password or parts.query or parts.fragment):
        return url
    try:
        netloc = _netloc(parts.hostname, parts.port)
    except ValueError:  # a port that is not a number: keep nothing that could be a secret
        return f"{parts.scheme}://{REDACTED}"
    if parts.username or parts.password:
        netloc = f"{REDACTED}@{netloc}"
    query = [
        (k, v if k.lower() in HARMLESS_QUERY else REDACTED)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            urlencode(query, safe="*"),
            REDACTED if parts.fragment else "",
        )
    )


def url_secrets(url: str) -> list[str]:
    """The secret strings a URL carries: the password and non-harmless query values."""
    parts = urlsplit(url)
    found = [
        parts.password or ""
    ]  # a user name is not a secret (and scrubbing it would mangle text)
    found += [v for k, v in parse_qsl(parts.query) if k.lower() not in HARMLESS_QUERY]
    found.append(parts.fragment)
    return [s for s in found if s]


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` removed (sent as a header instead)."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def endpoint(base_url: str, path: str) -> str:
    """``base_url`` with ``path`` appended to its path, its query string kept after it."""
    parts = urlsplit(base_url)
    joined = parts.path.rstrip("/") + "/" + path.lstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, joined, parts.query, ""))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (as written, percent-encoded or decoded) replaced by ``***``."""
    forms = {f for s in secrets if s for f in (s, quote(s, safe=""), unquote(s))}
    for secret in sorted(forms, key=len, reverse=True):  # longest first: no partial leftovers
        if len(secret) >= MIN_SCRUB and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_config(value: Any) -> Any:
    """A copy of JSON-like config data with every URL in it redacted."""
    if isinstance(value, dict):
        return {k: redact_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_config(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (``localhost`` or a loopback address)."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SecretUse:
    """A secret a judge will send, and where: an environment variable, or credentials in its URL."""

    judge: str
    url: str
    variable: str | None = None  # the environment variable read; None: credentials in the URL

    @property
    def host(self) -> str:
        """The host the secret is sent to."""
        return urlsplit(self.url).hostname or "?"

    @property
    def what(self) -> str:
        """What is sent, in words (the variable name, never its value)."""
        return f"${self.variable}" if self.variable else "the credentials in its base_url"

    def exposed(self) -> bool:
        """Sent in clear text (plain http) to another machine."""
        return urlsplit(self.url).scheme == "http" and not is_loopback(self.host)


def vet(uses: list[SecretUse], where: str, trusted: bool) -> list[SecretUse]:
    """``uses``, unless an untrusted judge would read an environment variable.

    An untrusted judge is one a suite named itself: it gets a :class:`RunError` naming the file,
    the variable, the host and the way out.
    """
    read = [u for u in uses if u.variable]
    if read and not trusted:
        use = read[0]
        raise RunError(
            f"{where}: judge {use.judge!r}, listed in the suite's own judges:, would read the "
            f"environment variable {use.variable} and send it to {use.host}. A suite's judges may "
            f"not read secrets: name the judge yourself (--judge {where}) or, if you trust this "
            "suite, pass --trust-suite-judges"
        )
    return uses


def announce(uses: Iterable[SecretUse]) -> None:
    """Say on stderr, before any call, which secret goes to which host; warn about plain http."""
    for use in uses:
        scheme = urlsplit(use.url).scheme
        print(f"judge {use.judge!r} sends {use.what} to {use.host} ({scheme})", file=sys.stderr)
        if use.exposed():
            print(
                f"warning: judge {use.judge!r} sends {use.what} over plain http to {use.host}, "
                "a host that is not this machine: anyone on the way can read it; use https",
                file=sys.stderr,
            )
