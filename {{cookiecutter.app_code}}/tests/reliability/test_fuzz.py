"""Schemathesis fuzzes every operation of the OpenAPI document: no 500s, and every answer is
one the document describes (status code, content type, body schema).

Driven through schemathesis' Python API (one Hypothesis run per operation) rather than its
pytest plugin, whose lazy loader does not work with pytest 9.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.reliability

# Per operation and mode; bounded so the suite stays quick on two cores (about 10 s).
MAX_EXAMPLES = 100
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(base_url: str) -> Any:
    try:
        return schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    except Exception as exc:
        pytest.fail(f"cannot load {base_url}/openapi.json ({exc}): is the stack up (make up)?")


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_openapi_fuzz(api_schema: Any, auth: dict[str, str], mode: GenerationMode) -> None:
    """Positive: data the document allows. Negative: data it does not (a 4xx, never a 500)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 5, [op.label for op in operations]
    failures: dict[str, str] = {}
    sent = 0
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,  # the same cases every run: a failure reproduces
            suppress_health_check=list(hypothesis.HealthCheck),
            database=None,
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        def fuzz(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            case.call_and_validate(headers=auth, checks=CHECKS, timeout=10)

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:
            # Negative mode, an operation that takes nothing that could be wrong (no params,
            # or a path parameter that is any string): no case to send.
            assert mode == GenerationMode.NEGATIVE, operation.label
        except Exception as exc:
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{error}" for label, error in failures.items())
    print(f"\nschemathesis ({mode}): {sent} requests over {len(operations)} operations")
