"""Wake-ups that carry what was committed, and how a job stream folds them in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sakuga.domain.jobs import Job, JobStatus
from sakuga.notify import MAX_CHANGES, Notifier
from sakuga.store.job_queries import JobChange, JobDetail


def _detail(status: JobStatus, value: float = 0.0, position: int | None = None) -> JobDetail:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    job = Job(
        id="j1",
        owner="o",
        status=status,
        workflow={},
        created_at=at,
        updated_at=at,
        expires_at=at + timedelta(days=7),
        progress={"value": value},
    )
    return JobDetail(job, [], position)


async def test_a_subscription_keeps_the_changes_its_wake_ups_carried_in_order() -> None:
    notifier = Notifier()
    sub = notifier.subscribe("k", changes=True)
    notifier.publish("k", "first")
    notifier.publish("k", "second")
    assert sub.is_set()
    assert sub.take_changes() == ["first", "second"]
    assert sub.take_changes() == []


async def test_one_wake_up_without_a_change_means_read_the_store() -> None:
    notifier = Notifier()
    sub = notifier.subscribe("k", changes=True)
    notifier.publish("k", "first")
    notifier.deliver("k")  # from another process: the key alone
    notifier.publish("k", "third")
    assert sub.take_changes() is None
    notifier.publish("k", "fourth")
    assert sub.take_changes() == ["fourth"]


async def test_too_many_unread_changes_become_one_read() -> None:
    notifier = Notifier()
    sub = notifier.subscribe("k", changes=True)
    for i in range(MAX_CHANGES + 1):
        notifier.publish("k", i)
    assert sub.take_changes() is None


async def test_a_plain_subscription_keeps_nothing() -> None:
    notifier = Notifier()
    sub = notifier.subscribe("k")
    notifier.publish("k", "change")
    assert sub.is_set() and sub.take_changes() is None


def test_a_change_moves_the_job_on() -> None:
    queued = _detail(JobStatus.QUEUED, position=3)
    running = JobChange(status=JobStatus.RUNNING).applied(queued)
    assert running.job.status is JobStatus.RUNNING and running.queue_position is None
    row = {"id": "a1", "node_id": "9"}
    done = JobChange(output=row).applied(JobChange(progress={"value": 0.5}).applied(running))
    assert done.job.progress == {"value": 0.5} and done.outputs == [row]
    # The same output twice (a wake-up after a read that saw it) is listed once.
    assert JobChange(output=row).applied(done).outputs == [row]


def test_a_change_older_than_what_was_read_changes_nothing() -> None:
    # A wake-up can arrive after a read that already saw a later state.
    canceling = _detail(JobStatus.CANCELING, value=0.6)
    stale = JobChange(status=JobStatus.RUNNING, progress={"value": 0.3}).applied(canceling)
    assert stale.job.status is JobStatus.CANCELING
    assert stale.job.progress == {"value": 0.6}
    ended = JobChange(status=JobStatus.CANCELED).applied(canceling)
    assert ended.job.status is JobStatus.CANCELED and ended.job.terminal
