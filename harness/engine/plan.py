"""Plan: expand suite × candidates × principles × judges into independent work items.

A work item is plain, serialisable data. Its ``cache_key`` hashes exactly what decides the answer: the
backend identity (name and output-changing options), the prompt-template version and the rendered request.
Secrets, timeouts and concurrency settings never enter it. ``item_id`` adds the judge id, so two judges
with identical settings still get one verdict each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.backends.base import Backend, BackendRequest
from harness.judging.pointwise import TEMPLATE_VERSION, Style, build_request
from harness.schema import Case, Constitution, JudgeConfig


class WorkItem(BaseModel):
    """One judge call to make, with where its verdict belongs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str
    cache_key: str
    judge: str
    case_id: str
    generator: str
    principle: str
    template: str
    request: BackendRequest


def content_hash(payload: Any) -> str:
    """Stable SHA-256 of JSON-able data (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_item(judge: str, identity: dict[str, Any], case_id: str, generator: str, principle: str,
              request: BackendRequest, template: str = TEMPLATE_VERSION) -> WorkItem:
    """A work item with its hashes computed."""
    cache_key = content_hash({"backend": identity, "template": template, "request": request.model_dump(mode="json")})
    item_id = content_hash({"judge": judge, "cache_key": cache_key, "case": case_id, "generator": generator})[:32]
    return WorkItem(item_id=item_id, cache_key=cache_key, judge=judge, case_id=case_id, generator=generator,
                    principle=principle, template=template, request=request)


@dataclass
class BoundJudge:
    """A judge config with its backend instance."""

    config: JudgeConfig
    backend: Backend

    def style(self) -> Style:
        return Style(logprobs=self.backend.reads_logprobs(), structured=self.backend.structured(),
                     rationale=self.config.rationale)

    def judges(self, principle: str) -> bool:
        wanted = self.config.principles is None or principle in self.config.principles
        return wanted and self.backend.covers(principle)


def plan(cases: Iterable[Case], constitution: Constitution, judges: list[BoundJudge], seed: int = 0) -> list[WorkItem]:
    """Every pointwise work item of a run, in a stable order."""
    items = []
    for judge in judges:
        identity, style = judge.backend.identity(), judge.style()
        for case in cases:
            for cand in case.candidates:
                for principle in constitution.principles:
                    if judge.judges(principle.id):
                        req = build_request(principle, case, cand, style, seed)
                        items.append(make_item(judge.config.id, identity, case.id, cand.generator, principle.id, req))
    return items
