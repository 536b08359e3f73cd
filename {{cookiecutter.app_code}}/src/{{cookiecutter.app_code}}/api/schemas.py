"""Request and response bodies: the contract clients and tests rely on."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ..core.config import get_settings
from ..jobs import CRON_PREFIX, JOBS, Source, Status, submittable

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_PARAMS_BYTES = 64 * 1024
MAX_PARAMS_KEYS = 1000  # keys of every object in params, nested ones included
MAX_PARAMS_DEPTH = 16  # params itself is level 1
MAX_BATCH = 1000  # jobs in one POST /api/v1/batches
MAX_DELAY_S = 366 * 86400  # how far ahead a job may be scheduled
Priority = Literal["high", "default", "low"]
PRIORITY_DOC = (
    "`high`, `default` or `low`. A free worker slot takes the oldest due `high` job, else the "
    "oldest `default`, else the oldest `low` (first in, first out within a priority); every "
    "5th slot goes to the oldest due job of any priority, so `low` jobs still progress under a "
    "steady `high` load."
)


class JobSubmit(BaseModel):
    # A misspelt field ("parms") is an error, not a job run with default params.
    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(
        pattern=JOB_ID_PATTERN,
        description="Chosen by the client, unique forever: 1-128 characters, a letter or digit "
        "first, then letters, digits, '.', '_', ':' or '-'. "
        f"Ids starting {CRON_PREFIX!r} are reserved.",
        examples=["order-42-confirmation"],
    )
    function: str = Field(description="A registered job function.", examples=["hello"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"name": "Ada"}])
    delay_seconds: float | None = Field(
        None,
        ge=0,
        le=MAX_DELAY_S,
        allow_inf_nan=False,
        description="Start no earlier than this many seconds after the submission (and within "
        "a second after). Not with `run_at`.",
        examples=[30],
    )
    run_at: datetime | None = Field(
        None,
        description="Start no earlier than this time (RFC 3339 with a time zone, e.g. "
        "`2030-01-01T09:00:00Z`), within a second after; a time in the past runs at once. "
        "Not with `delay_seconds`. The job stays `queued` until it starts.",
    )
    priority: Priority = Field("default", description=PRIORITY_DOC)

    @field_validator("run_at")
    @classmethod
    def _zoned(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return value
        if info.data.get("delay_seconds") is not None:
            raise ValueError("give delay_seconds or run_at, not both: keep one")
        if value.utcoffset() is None:
            raise ValueError(
                "run_at has no time zone: add one (e.g. 2030-01-01T09:00:00Z or +02:00)"
            )
        return value

    def start_after(self) -> datetime | None:
        """The job's run_at: the one given, or now + delay_seconds (None: at once)."""
        if self.delay_seconds is not None:
            return datetime.now(UTC) + timedelta(seconds=self.delay_seconds)
        return self.run_at

    @field_validator("job_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower().startswith(CRON_PREFIX):
            raise ValueError(
                f"job ids starting {CRON_PREFIX!r} are reserved for cron runs; pick another"
            )
        return value

    @field_validator("function")
    @classmethod
    def _known_function(cls, value: str) -> str:
        known = submittable(get_settings().bench_job_enabled)
        if value not in known:
            raise ValueError(f"unknown function {value!r}; known: {', '.join(known)}")
        return value

    @field_validator("params")
    @classmethod
    def _params_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_tree(value)
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError:  # an integer beyond 64 bits: the standard library's
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


def errors_at(exc: ValidationError, *loc: str | int) -> list[dict[str, Any]]:
    """pydantic's errors as the API's 422 items, under `loc`, without echoing any input."""
    return [
        {**e, "loc": [*loc, *e["loc"]], "input": None}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


class BatchSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[Any] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1 to {MAX_BATCH} submissions, each exactly as for POST /api/v1/jobs. "
        "Each is accepted or refused on its own.",
        json_schema_extra={"items": {"$ref": "#/components/schemas/JobSubmit"}},
    )


class BatchItem(BaseModel):
    job_id: str | None = Field(description="The item's job_id (null when it had none)")
    status_code: Literal[202, 409, 422] = Field(
        description="202: accepted (committed, will run); 409: the id was used before, or "
        "earlier in this batch; 422: the item is invalid (see detail)"
    )
    detail: Any | None = Field(None, description="Why it was refused (absent when accepted)")
    status: str | None = Field(None, description="409: the status of the job holding the id")


class BatchResult(BaseModel):
    accepted: int = Field(description="How many items were accepted (202)")
    results: list[BatchItem] = Field(description="One per submitted item, in order")


def _check_tree(params: dict[str, Any]) -> None:
    """Depth, key count and text PostgreSQL can store, walked without recursion."""
    keys = 0
    todo: list[tuple[Any, int]] = [(params, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, str):
            _check_text(node)
            continue
        if isinstance(node, float) and not math.isfinite(node):
            raise ValueError("params may not hold NaN or Infinity (they are not JSON)")
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_PARAMS_DEPTH:
            raise ValueError(
                f"params nest deeper than {MAX_PARAMS_DEPTH} levels of objects and arrays: "
                "flatten them"
            )
        if isinstance(node, dict):
            keys += len(node)
            if keys > MAX_PARAMS_KEYS:
                raise ValueError(
                    f"params hold more than {MAX_PARAMS_KEYS} keys (nested objects included): "
                    "send fewer, or pass a reference to the data instead"
                )
            for key, item in node.items():
                _check_text(key)
                todo.append((item, depth + 1))
        else:
            todo.extend((item, depth + 1) for item in node)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise ValueError("params may not contain the NUL character (\\u0000): remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "params hold a string that is not valid Unicode (a lone surrogate such as "
            "\\ud800): send each character whole"
        ) from None


class Attempt(BaseModel):
    """One run of a job, as the ledger recorded it."""

    attempt: int = Field(description="The run's number: 1 for the first, counting retries.")
    started_at: datetime | None
    finished_at: datetime | None = Field(description="Null while it runs.")
    outcome: Literal["running", "succeeded", "failed", "retrying", "interrupted", "cancelled"] = (
        Field(
            description="`retrying`: it raised and its retry policy runs it again; "
            "`interrupted`: the worker stopped mid-run (arq runs it again); `cancelled`: "
            "POST .../cancel stopped it."
        )
    )
    error: str | None = Field(description="What the run raised (its traceback), if it did.")
    worker_id: str | None = Field(description="host:pid of the worker that ran it.")


class JobRecord(BaseModel):
    job_id: str
    function: str
    params: dict[str, Any]
    status: Status = Field(
        description="queued, in_progress, succeeded, failed or cancelled (POST .../cancel; "
        "POST .../retry queues a failed or cancelled job again)."
    )
    source: Source
    tries: int = Field(description="How many times the job has started (retries included).")
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any | None
    error: str | None
    worker_id: str | None
    trace_id: str | None = Field(
        None,
        description="OpenTelemetry trace id (32 hex digits) of the submission and the job's "
        "runs: the submitting request's `traceparent`, or the trace the API started",
    )
    attempts: list[Attempt] = Field(
        default_factory=list,
        description="Every run, oldest first, each with its own error (jobs recorded before "
        "the ledger kept attempts have none).",
    )
    run_at: datetime | None = Field(
        None, description="No earlier than this the job starts (null: as soon as a worker is free)"
    )
    priority: Priority = Field("default", description=PRIORITY_DOC)


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
    components: dict[str, str] = Field(
        description="`ok` or `down` without a token; with one, what is wrong with each"
    )
    detail: str | None = Field(None, description="How to see more, when the answer is terse")
