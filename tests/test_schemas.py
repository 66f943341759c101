"""Committed JSON Schemas are current, and the committed YAML files satisfy them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness import schema_export

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "harness" / "schemas"


def test_committed_schemas_are_current() -> None:
    assert schema_export.stale() == [], "run `harness schemas` and commit the result"


@pytest.mark.parametrize(
    ("folder", "schema"),
    [
        ("constitutions", "constitution"),
        ("judges", "judge"),
        ("suites", "suite"),
    ],
)
def test_yaml_files_match_committed_schema(folder: str, schema: str) -> None:
    validator = jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / f"{schema}.schema.json").read_text())
    )
    files = sorted((ROOT / folder).glob("*.yaml"))
    assert files
    for path in files:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert (
            first == f"# yaml-language-server: $schema=../harness/schemas/{schema}.schema.json"
        ), path
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text(encoding="utf-8"))))
        assert not errors, f"{path}: {errors[0].message}"
