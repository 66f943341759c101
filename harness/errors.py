"""The harness's exception tree.

Two branches, so callers can tell "you misconfigured" from "the judge failed"::

    HarnessError
    ├── ConfigError            the user's input is wrong (YAML, references, options, missing env
    var)
    │   ├── ValidationFailed   a file did not match its schema; carries file:line:column issues
    │   └── MissingSecret      an environment variable named by a judge config is unset
    ├── RunError               a run folder is missing, unreadable or inconsistent
    └── JudgeError             talking to a judge failed (never a user mistake)
        └── TransientJudgeError  worth retrying: 429, 5xx, timeouts, dropped connections

The CLI prints ``ConfigError`` and ``RunError`` as one short message and exits 2, with no traceback.
``JudgeError`` never escapes the engine: it becomes an unscored or error verdict with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class ConfigError(HarnessError):
    """The user's configuration or input is wrong; the message says where and what was expected."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a file: where it is and what was expected."""

    file: str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


class ValidationFailed(ConfigError):
    """A file did not validate; ``issues`` lists every problem with its location."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class MissingSecret(ConfigError):
    """A judge config names an environment variable for its API key, and it is unset."""


class RunError(HarnessError):
    """A run folder is missing, unreadable or does not match what was asked."""


class JudgeError(HarnessError):
    """Talking to a judge failed; recorded on the verdict, never raised to the user."""


class TransientJudgeError(JudgeError):
    """A failure worth retrying (rate limit, server error, timeout, dropped connection)."""

    def __init__(self, message: str, cause: str, retry_after: float | None = None):
        super().__init__(message)
        self.cause = cause
        self.retry_after = retry_after
