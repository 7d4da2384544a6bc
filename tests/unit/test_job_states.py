"""The job state machine: the edges Comfy API v2 allows, and what a cancel does."""

from __future__ import annotations

import pytest

from sakuga.domain.jobs import ACTIVE, TERMINAL, JobStatus, can_transition, cancel_target

S = JobStatus


@pytest.mark.parametrize(
    "src, dst, allowed",
    [
        (S.QUEUED, S.RUNNING, True),
        (S.QUEUED, S.CANCELED, True),
        (S.QUEUED, S.CANCELING, True),  # already handed to a backend (prefetched)
        (S.RUNNING, S.SUCCEEDED, True),
        (S.RUNNING, S.QUEUED, True),  # a transient failure waits for its retry
        (S.RUNNING, S.CANCELING, True),
        (S.CANCELING, S.CANCELED, True),
        (S.CANCELING, S.SUCCEEDED, True),  # finished before the interrupt landed
        (S.RUNNING, S.CANCELED, False),
        (S.SUCCEEDED, S.RUNNING, False),
        (S.FAILED, S.QUEUED, False),
        (S.CANCELED, S.RUNNING, False),
    ],
)
def test_transitions(src: JobStatus, dst: JobStatus, allowed: bool) -> None:
    assert can_transition(src, dst) is allowed


def test_terminal_states_never_change() -> None:
    for src in TERMINAL:
        assert not any(can_transition(src, dst) for dst in JobStatus)


@pytest.mark.parametrize(
    "status, target",
    [(S.QUEUED, S.CANCELED), (S.RUNNING, S.CANCELING), (S.SUCCEEDED, None), (S.CANCELING, None)],
)
def test_cancel_target(status: JobStatus, target: JobStatus | None) -> None:
    assert cancel_target(status) is target


def test_active_and_terminal_partition_the_states() -> None:
    assert set(JobStatus) == ACTIVE | TERMINAL and not ACTIVE & TERMINAL
