"""Audits on record, cached by judge identity (like verdicts), and their summary in a run folder.

A judge's identity hash covers exactly what decides its answers: the backend's identity (name,
output-changing options, a student's content hash) and whether it writes a rationale. A card is kept
under ``<cache>/audits/<identity>/<inputs>.json``, where ``<inputs>`` hashes the audit's suite,
constitution and protocol; the same audit of the same judge is then never paid for twice, and
``harness run`` can tell whether a judge was audited at all.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from harness.paths import cache_dir

AUDITS = "audits"
RUN_FILE = (
    "judge_audits.json"  # in a run folder: each judge's identity hash and its latest card summary
)


def digest(payload: Any) -> str:
    """SHA-256 of JSON-able data (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def judge_identity(backend_identity: dict[str, Any], rationale: bool) -> str:
    """The identity hash of a judge (16 hex digits)."""
    return digest({"backend": backend_identity, "rationale": rationale})[:16]


def audit_root(root: Path | None = None) -> Path:
    """Where cards are kept: ``<cache>/audits``."""
    return (root or cache_dir()) / AUDITS


def card_path(identity: str, inputs: str, root: Path | None = None) -> Path:
    """The cached card of one judge identity and one audit input hash."""
    return audit_root(root) / identity / f"{inputs}.json"


def load_card(identity: str, inputs: str, root: Path | None = None) -> dict[str, Any] | None:
    """A cached card, or None."""
    path = card_path(identity, inputs, root)
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def save_card(card: dict[str, Any], root: Path | None = None) -> Path:
    """Cache a card under its judge identity and inputs hash (written whole, then renamed)."""
    path = card_path(card["judge"]["identity"], card["inputs"], root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def latest_card(identity: str, root: Path | None = None) -> dict[str, Any] | None:
    """The most recent card on record for a judge identity, or None."""
    folder = audit_root(root) / identity
    files = (
        sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    )
    for path in reversed(files):
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return None


def summary(card: dict[str, Any]) -> dict[str, Any]:
    """What a run report shows of a card: the headline figures and the verdict."""
    keys = ("created", "inputs", "suites", "verdict", "headline")
    return {k: card.get(k) for k in keys} | {"identity": card["judge"]["identity"]}


def record_audits(judges: list[tuple[str, str]], run_dir: Path, quiet: bool = False) -> None:
    """Write each judge's latest card summary into the run folder; warn about judges never audited.

    ``judges`` holds (judge id, identity hash) pairs.
    """
    found: dict[str, Any] = {}
    for judge_id, identity in judges:
        card = latest_card(identity)
        found[judge_id] = {"identity": identity, "card": summary(card) if card else None}
        if card is None and not quiet:
            print(
                f"warning: judge {judge_id!r} has no audit on record for its identity {identity}; "
                f"run `harness audit --judge {judge_id}` to see whether it can be trusted or gamed",
                file=sys.stderr,
            )
    path = Path(run_dir) / RUN_FILE
    path.write_text(json.dumps(found, indent=1, default=str), encoding="utf-8")


def read_run_audits(run_dir: Path) -> dict[str, Any]:
    """The judge audit summaries a run recorded ({} when none)."""
    try:
        return dict(json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}
