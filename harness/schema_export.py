"""Generate the JSON Schemas in ``harness/schemas/`` from the pydantic records.

The committed copies let editors validate YAML as it is typed (files name them in a
``# yaml-language-server: $schema=...`` line); a test keeps them equal to what this module
generates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.judging.pointwise import output_schema
from harness.records import CandidateRow, Case, Constitution, JudgeConfig, Suite, Verdict

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

MODELS: dict[str, type[BaseModel]] = {
    "constitution": Constitution,
    "suite": Suite,
    "case": Case,
    "candidate-row": CandidateRow,
    "judge": JudgeConfig,
    "verdict": Verdict,
}


def generate() -> dict[str, dict[str, Any]]:
    """File name -> schema, for every committed schema."""
    out = {
        f"{name}.schema.json": model.model_json_schema(by_alias=True)
        for name, model in MODELS.items()
    }
    judge_output = output_schema(5)
    judge_output["title"] = "JudgeOutput"
    judge_output["description"] = (
        "A judge's structured answer on a 1..5 rubric (the maximum follows the rubric)."
    )
    out["judge-output.schema.json"] = judge_output
    return out


def render(schema: dict[str, Any]) -> str:
    """A schema as the stable JSON text kept in harness/schemas/."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(folder: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in generate().items():
        path = folder / name
        path.write_text(render(schema), encoding="utf-8")
        paths.append(path)
    return paths


def stale(folder: Path = SCHEMA_DIR) -> list[str]:
    """Names of committed schemas that differ from what the records generate."""
    bad = []
    for name, schema in generate().items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(schema):
            bad.append(name)
    return bad
