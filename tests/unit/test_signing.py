"""Signed download links: HMAC over (asset id, expiry); tamper and expiry are refused."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from sakuga.api.signing import KEY_FILE, UrlSigner, load_or_create_key
from sakuga.errors import Forbidden
from sakuga.settings import Settings

NOW = 1_800_000_000.0
ASSET = "0b5e2a4c-3f0e-4d8a-9f53-6d0e6f3c2a11"


def _query(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url).query)
    return query["expires"][0], query["signature"][0]


def test_a_signed_link_verifies_until_it_expires() -> None:
    signer = UrlSigner(b"k" * 32, ttl_s=60)
    url, expires_at = signer.url("http://h:1", ASSET, now=NOW)
    assert url.startswith(f"http://h:1/api/v2/assets/{ASSET}/content?expires=")
    expires, signature = _query(url)
    assert int(expires) == NOW + 60 == expires_at.timestamp()
    signer.verify(ASSET, expires, signature, now=NOW)
    signer.verify(ASSET, expires, signature, now=NOW + 59)
    with pytest.raises(Forbidden, match="expired at"):
        signer.verify(ASSET, expires, signature, now=NOW + 60)


@pytest.mark.parametrize(
    ("asset_id", "expires_delta", "signature_edit", "message"),
    [
        ("another-asset", 0, None, "signature does not match"),
        (ASSET, 3600, None, "signature does not match"),  # a later expiry, same signature
        (ASSET, 0, "flip", "signature does not match"),
        (ASSET, 0, "", "needs both"),
        (ASSET, 0, "é" * 64, "signature does not match"),
        ("ünïcode", 0, None, "signature does not match"),
    ],
)
def test_tampered_links_are_forbidden(
    asset_id: str, expires_delta: int, signature_edit: str | None, message: str
) -> None:
    signer = UrlSigner(b"k" * 32, ttl_s=60)
    expires, signature = signer.sign(ASSET, now=NOW)
    if signature_edit == "flip":
        signature = ("0" if signature[0] != "0" else "1") + signature[1:]
    elif signature_edit is not None:
        signature = signature_edit
    with pytest.raises(Forbidden, match=message):
        signer.verify(asset_id, str(expires + expires_delta), signature, now=NOW)


def test_malformed_expiry_is_forbidden_not_a_crash() -> None:
    signer = UrlSigner(b"k" * 32, ttl_s=60)
    with pytest.raises(Forbidden, match="not an epoch"):
        signer.verify(ASSET, "tomorrow", "ab" * 32, now=NOW)


def test_a_link_from_another_key_is_refused() -> None:
    expires, signature = UrlSigner(b"a" * 32, ttl_s=60).sign(ASSET, now=NOW)
    with pytest.raises(Forbidden, match="signature does not match"):
        UrlSigner(b"b" * 32, ttl_s=60).verify(ASSET, str(expires), signature, now=NOW)


def test_generated_key_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / KEY_FILE
    first = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64 and load_or_create_key(path) == first


def test_configured_key_wins_over_the_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, url_signing_key="configured", signed_url_ttl_s=5)
    expires, signature = UrlSigner(b"configured", 5).sign(ASSET, now=NOW)
    signer = UrlSigner.from_settings(settings)
    signer.verify(ASSET, str(expires), signature, now=NOW)
    assert signer.ttl_s == 5
    assert not (tmp_path / KEY_FILE).exists()
    generated = UrlSigner.from_settings(Settings(data_dir=tmp_path))
    with pytest.raises(Forbidden):
        generated.verify(ASSET, str(expires), signature, now=NOW)
