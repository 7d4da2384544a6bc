"""The /api/jobs view, checked against ComfyUI's recorded answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sakuga.engine import jobs
from sakuga.engine.queue import QueueItem


def recorded(shared_dir: Path, name: str) -> Any:
    return json.loads((shared_dir / "comfyui" / "http" / f"{name}.json").read_text())["body"]


@pytest.mark.parametrize(
    ("history", "job"),
    [
        ("history_prompt_success_no_model", "api_jobs_one_completed"),
        ("history_prompt_execution_error", "api_jobs_one_failed"),
    ],
)
def test_finished_jobs_match_the_recording(shared_dir: Path, history: str, job: str) -> None:
    ((prompt_id, entry),) = recorded(shared_dir, history).items()
    assert jobs.finished_job(prompt_id, entry, full=True) == recorded(shared_dir, job)


def test_interrupted_job_is_failed_without_execution_error(shared_dir: Path) -> None:
    ((prompt_id, entry),) = recorded(shared_dir, "history_prompt_interrupted").items()
    job = jobs.finished_job(prompt_id, entry, full=False)
    assert job["status"] == "failed" and "execution_error" not in job
    assert job["outputs_count"] == 0 and "preview_output" not in job


def test_queued_jobs_have_the_short_form() -> None:
    item = QueueItem(27, "p", {}, {"create_time": 5}, ["3"])
    assert jobs.queued_job(item, "pending") == {
        "id": "p",
        "status": "pending",
        "priority": 27,
        "create_time": 5,
        "outputs_count": 0,
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"status": "bogus"},
            "Invalid status value(s): bogus. Valid values: pending, in_progress, completed, failed",
        ),
        ({"sort_by": "name"}, "sort_by must be 'created_at' or 'execution_duration'"),
        ({"limit": "0"}, "limit must be a positive integer"),
    ],
)
def test_bad_queries_use_comfyui_messages(params: dict[str, str], message: str) -> None:
    with pytest.raises(jobs.JobQueryError) as error:
        jobs.query_jobs([], params)
    assert str(error.value) == message


def test_query_filters_sorts_and_pages() -> None:
    listing = [
        {"id": "a", "status": "completed", "create_time": 1},
        {"id": "b", "status": "failed", "create_time": 3},
        {"id": "c", "status": "pending", "create_time": 2},
    ]
    page = jobs.query_jobs(listing, {"limit": "1"})
    assert [j["id"] for j in page["jobs"]] == ["b"]
    assert page["pagination"] == {"offset": 0, "limit": 1, "total": 3, "has_more": True}
    asc = jobs.query_jobs(listing, {"status": "completed,pending", "sort_order": "asc"})
    assert [j["id"] for j in asc["jobs"]] == ["a", "c"]
    assert asc["pagination"]["limit"] is None
