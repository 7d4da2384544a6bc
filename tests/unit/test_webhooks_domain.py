"""Webhooks, pure parts: SSRF address classes, the allow-list, URL shapes, backoff, payloads."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest

from sakuga.domain.jobs import JobStatus
from sakuga.domain.webhooks import (
    AllowList,
    backoff_s,
    classify,
    event_for,
    exhausted,
    job_payload,
    parse_webhook_url,
    refusal,
)
from sakuga.errors import InvalidRequest

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("100.64.0.1", "shared"),
        ("100.127.255.255", "shared"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "private"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "reserved"),
        ("198.18.0.1", "reserved"),
        ("2001:db8::1", "reserved"),
        ("100::1", "reserved"),
        # IPv6 spellings of IPv4 addresses are judged by the IPv4 address inside.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.1.2.3", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("2002:7f00:1::", "loopback"),
        # Public.
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("172.32.0.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_classes(address: str, kind: str | None) -> None:
    assert classify(ip(address)) == kind


@pytest.mark.parametrize(
    ("entries", "host", "address", "permitted"),
    [
        (["127.0.0.1"], "127.0.0.1", "127.0.0.1", True),
        (["127.0.0.1"], "127.0.0.1", "127.0.0.2", False),
        (["127.0.0.0/8"], "localhost", "127.0.0.2", True),
        (["127.0.0.1"], "x", "::ffff:127.0.0.1", True),
        (["10.0.0.0/8"], "hooks", "10.9.8.7", True),
        (["10.0.0.0/8"], "hooks", "192.168.0.1", False),
        (["[::1]"], "::1", "::1", True),
        (["fd00::/8"], "x", "fd00::5", True),
        (["hooks.internal"], "HOOKS.internal.", "10.0.0.1", True),
        (["hooks.internal"], "other.internal", "10.0.0.1", False),
        (["*.internal"], "a.b.internal", "10.0.0.1", True),
        (["*.internal"], "internal", "10.0.0.1", False),
        ([], "127.0.0.1", "127.0.0.1", False),
    ],
)
def test_allow_list_matches_hosts_addresses_and_networks(
    entries: list[str], host: str, address: str, permitted: bool
) -> None:
    assert AllowList.parse(entries).permits(host, ip(address)) is permitted


@pytest.mark.parametrize("entry", ["bad entry", "http://x/", "10.0.0.0/33", "*.", "2130706433"])
def test_allow_list_rejects_entries_that_are_no_host_address_or_network(entry: str) -> None:
    with pytest.raises(ValueError, match="allow-list entry"):
        AllowList.parse([entry])


def test_refusal_checks_every_resolved_address() -> None:
    none = AllowList()
    assert refusal("example.com", [ip("93.184.216.34")], none) is None
    mixed = [ip("93.184.216.34"), ip("10.0.0.1")]
    reason = refusal("example.com", mixed, none)
    assert reason is not None and "10.0.0.1" in reason and "private" in reason
    assert refusal("example.com", [], none) is not None
    assert refusal("example.com", mixed, AllowList.parse(["10.0.0.0/8"])) is None
    assert "metadata" in (refusal("169.254.169.254", [ip("169.254.169.254")], none) or "")


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("https://example.com/hook", "example.com", 443),
        ("http://EXAMPLE.com.:8080/a?b=c", "example.com", 8080),
        ("http://127.0.0.1:9/x", "127.0.0.1", 9),
        ("http://[::1]/", "::1", 80),
        ("https://bücher.example/h", "xn--bcher-kva.example", 443),
    ],
)
def test_webhook_urls_accepted_in_shape(url: str, host: str, port: int) -> None:
    target = parse_webhook_url(url)
    assert (target.host, target.port) == (host, port)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:6379/_", "scheme"),
        ("example.com/hook", "scheme"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http://example.com@10.0.0.1/", "credentials"),
        ("http:///path", "no host"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://example.com:0/", "port 0"),
        ("http://[example.com]/", "not a valid URL"),
        ("http://2130706433/", "numeric"),
        ("http://0x7f000001/", "numeric"),
        ("http://0177.0.0.1/", "numeric"),
        ("http://127.1/", "numeric"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\r\nX-Injected: 1", "whitespace"),
        ("http://exa_mple..com/", "not a valid name"),
        ("", "empty"),
        ("http://x/" + "a" * 3000, "longer than"),
    ],
)
def test_webhook_urls_refused_by_shape_name_the_field(url: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_webhook_url(url)
    assert reason in caught.value.message
    assert caught.value.details is not None
    assert caught.value.details["field"] == "webhook_url"
    assert "http" in caught.value.details["accepted"]


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    assert backoff_s(1, 5.0, 3600.0, rand=lambda: 0.999999) == pytest.approx(5.0, rel=1e-5)
    assert backoff_s(3, 5.0, 3600.0, rand=lambda: 0.5) == pytest.approx(10.0)
    assert backoff_s(40, 5.0, 3600.0, rand=lambda: 0.999999) <= 3600.0
    assert backoff_s(10_000, 5.0, 60.0, rand=lambda: 0.5) == pytest.approx(30.0)
    assert backoff_s(4, 5.0, 3600.0, rand=lambda: 0.0) == 0.0
    assert backoff_s(0, 5.0, 3600.0) == 0.0
    assert backoff_s(5, 0.0, 3600.0) == 0.0  # base 0 removes every wait (tests)
    for failures in range(1, 12):
        delay = backoff_s(failures, 2.0, 100.0)
        assert 0.0 <= delay <= min(100.0, 2.0 * 2 ** (failures - 1))


def test_exhausted_after_the_configured_attempts() -> None:
    assert not exhausted(7, 8)
    assert exhausted(8, 8)
    assert exhausted(1, 1)


def test_events_for_states() -> None:
    assert event_for(JobStatus.RUNNING) == "job.running"
    assert event_for(JobStatus.SUCCEEDED) == "job.succeeded"
    assert event_for(JobStatus.FAILED) == "job.failed"
    assert event_for(JobStatus.CANCELED) == "job.canceled"
    assert event_for(JobStatus.QUEUED) is None
    assert event_for(JobStatus.CANCELING) is None


def test_payload_carries_the_job_summary_without_links_or_secrets() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5)  # naive, as SQLite returns it
    job = {
        "id": "j1",
        "owner": "tenant-a",
        "status": "failed",
        "created_at": created,
        "started_at": created,
        "completed_at": datetime(2026, 1, 2, 3, 5, tzinfo=UTC),
        "updated_at": datetime(2026, 1, 2, 3, 5, tzinfo=UTC),
        "error": {"code": "oom", "message": "out of memory", "traceback": "secret paths"},
        "metadata": {"book": "7"},
        "template": "txt2img",
        "attempt_count": 2,
        "webhook_url": "https://hooks.example/x",
        "workflow": {"1": {}},
    }
    outputs = [
        {
            "id": "a1",
            "node_id": "9",
            "file_path": "out.png",
            "kind": "output",
            "content_type": "image/png",
            "size_bytes": 10,
            "hash": "blake3:ab",
            "owner": "tenant-a",
        }
    ]
    at = datetime(2026, 1, 2, 3, 5, 1, tzinfo=UTC)
    payload = job_payload("job.failed", job, outputs, at)
    assert payload["type"] == "job.failed"
    assert payload["timestamp"] == "2026-01-02T03:05:01Z"
    data = payload["data"]
    assert data["id"] == "j1" and data["status"] == "failed"
    assert data["created_at"] == "2026-01-02T03:04:05Z"
    assert data["error"] == {
        "code": "oom",
        "message": "out of memory",
        "node_id": None,
        "class_type": None,
    }
    assert data["attempts"] == 2 and data["metadata"] == {"book": "7"}
    assert data["outputs"] == [
        {
            "id": "a1",
            "node_id": "9",
            "name": "out.png",
            "type": "output",
            "content_type": "image/png",
            "size_bytes": 10,
            "hash": "blake3:ab",
        }
    ]
    text = repr(payload)
    for private in ("tenant-a", "hooks.example", "secret paths", "workflow", "url"):
        assert private not in text
    with pytest.raises(ValueError, match="unknown webhook event"):
        job_payload("job.exploded", job, [], at)
