"""Request and response models of the job API (Comfy API v2 plus sakuga's extra fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatusName = Literal[
    "queued", "running", "canceling", "succeeded", "failed", "canceled", "expired"
]


class ExtraData(BaseModel):
    """Per-prompt data forwarded to the backend; a closed object (Comfy API v2)."""

    model_config = ConfigDict(extra="forbid")

    api_key_comfy_org: str | None = Field(
        default=None, max_length=1024, description="Partner-node key; never stored or echoed."
    )


class SubmitBody(BaseModel):
    """Either an API-format ``workflow`` or a built-in ``template`` with ``params``."""

    model_config = ConfigDict(extra="forbid")

    workflow: dict[str, Any] | None = Field(
        default=None, description="API-format ComfyUI graph, run verbatim."
    )
    template: str | None = Field(default=None, description="Built-in template name (sakuga).")
    params: dict[str, Any] | None = Field(default=None, description="Template parameters.")
    extra_data: ExtraData | None = Field(
        default=None, description="Only `api_key_comfy_org`; forwarded, never stored."
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description=(
            "String labels: at most 16, names of 1-40 characters from A-Z a-z 0-9 _ . -, "
            "values of at most 256 UTF-8 bytes without control characters."
        ),
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description=(
            "sakuga extension (not in Comfy API v2): an http(s) URL that receives signed "
            "job.running / job.succeeded / job.failed / job.canceled events (Standard "
            "Webhooks). Must resolve to public addresses unless SAKUGA_WEBHOOK_ALLOW "
            "permits it. Defaults to the API key's webhook URL, if any."
        ),
    )


class ProgressOut(BaseModel):
    value: float
    nodes_done: int
    nodes_total: int
    current_node: str | None = None
    current_node_class: str | None = None
    message: str | None = None
    step: int | None = None
    steps: int | None = None


class OutputOut(BaseModel):
    id: str
    node_id: str
    name: str
    type: str
    content_type: str
    size_bytes: int
    hash: str | None
    url: str
    url_expires_at: datetime
    job_id: str | None = None


class JobErrorOut(BaseModel):
    code: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    traceback: str | None = None


class JobUrls(BaseModel):
    self: str
    events: str
    cancel: str


class AttemptOut(BaseModel):
    number: int
    backend: str
    prompt_id: str
    worker_id: str
    started_at: datetime
    finished_at: datetime | None
    error: dict[str, Any] | None
    telemetry: dict[str, Any] | None = Field(
        None,
        description="Backend /system_stats around the attempt: device, before/after VRAM bytes.",
    )


class JobOut(BaseModel):
    id: str
    status: JobStatusName
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime
    queue_position: int | None
    progress: ProgressOut | None
    outputs: list[OutputOut]
    error: JobErrorOut | None
    urls: JobUrls
    metrics: dict[str, int | None] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    # sakuga's extensions beside the v2 fields.
    eta_s: float | None = None
    attempts: list[AttemptOut] = Field(default_factory=list)
    backend: str | None = None
    template: str | None = None
    params: dict[str, Any] | None = None


class JobSummary(BaseModel):
    id: str
    status: JobStatusName
    created_at: datetime
    create_time: datetime
    update_time: datetime
    completed_at: datetime | None
    metadata: dict[str, str] = Field(default_factory=dict)
    template: str | None = None


class JobPage(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = None


class WorkflowOut(BaseModel):
    workflow: dict[str, Any]
    format: Literal["api", "save"] = "api"


class AssetOut(BaseModel):
    id: str
    hash: str | None
    size_bytes: int
    content_type: str
    created_at: datetime
    url: str
    url_expires_at: datetime
    file_path: str | None = None
    created_new: bool | None = None
    expires_at: datetime | None = None
    job_id: str | None = None
    tags: list[str] = Field(default_factory=list)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody
