"""Request and response bodies: the contract clients and tests rely on."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from ..jobs import JOBS, submittable

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_PARAMS_BYTES = 64 * 1024

Status = Literal["queued", "in_progress", "succeeded", "failed"]


class JobSubmit(BaseModel):
    job_id: str = Field(
        pattern=JOB_ID_PATTERN,
        description="Chosen by the client, unique forever: 1-128 characters, a letter or digit "
        "first, then letters, digits, '.', '_', ':' or '-'. Ids starting 'cron:' are reserved.",
        examples=["order-42-confirmation"],
    )
    function: str = Field(description="A registered job function.", examples=["hello"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"name": "Ada"}])

    @field_validator("job_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower().startswith("cron:"):
            raise ValueError("job ids starting 'cron:' are reserved for cron runs; pick another")
        return value

    @field_validator("function")
    @classmethod
    def _known_function(cls, value: str) -> str:
        if value not in submittable():
            raise ValueError(f"unknown function {value!r}; known: {', '.join(submittable())}")
        return value

    @field_validator("params")
    @classmethod
    def _params_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_PARAMS_BYTES:
            raise ValueError(f"params is {size} bytes as JSON; the limit is {MAX_PARAMS_BYTES}")
        reserved = sorted(k for k in value if k.startswith("_"))
        if reserved:
            raise ValueError(f"params keys may not start with '_' (reserved by arq): {reserved}")
        return value

    def validated_params(self) -> dict[str, Any]:
        """Params checked against the job's own model (raises pydantic's ValidationError)."""
        model = JOBS[self.function].params.model_validate(self.params)
        return model.model_dump(exclude_unset=True)


class JobRecord(BaseModel):
    job_id: str
    function: str
    params: dict[str, Any]
    status: Status
    source: Literal["api", "cron"]
    tries: int
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any | None
    error: str | None
    worker_id: str | None


class JobPage(BaseModel):
    jobs: list[JobRecord]
    next_cursor: str | None = Field(
        description="Pass as `before` to get the next (older) page; null on the last page."
    )


class Problem(BaseModel):
    """Every error body: what went wrong and what to do."""

    detail: Any
    job_id: str | None = None
    status: str | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Info(BaseModel):
    app_code: str
    version: str
    env: str
    database: Literal["connected", "unavailable"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    components: dict[str, str]
