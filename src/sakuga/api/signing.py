"""Signed download links: ``…/assets/{id}/content?expires=<epoch>&signature=<hex>``.

The signature is HMAC-SHA256 over the asset id and the expiry (epoch seconds), so a link
works without an API key until it expires and cannot be bent to another asset or a later
expiry. The key is ``settings.url_signing_key``; without one, a random key is generated once
and kept at ``<data_dir>/url-signing.key`` (mode 0600). Several servers behind one address
must share the key (set ``SAKUGA_URL_SIGNING_KEY``), or each accepts only its own links.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from sakuga.errors import Forbidden
from sakuga.keyfile import load_or_create
from sakuga.settings import Settings

KEY_FILE = "url-signing.key"


def load_or_create_key(path: Path) -> bytes:
    """The key kept at ``path``; created (0600) on first use."""
    return load_or_create(path, lambda: secrets.token_hex(32)).encode()


class UrlSigner:
    """Signs and checks download links for assets; ``ttl_s`` is how long a link works."""

    def __init__(self, key: bytes, ttl_s: int) -> None:
        if not key:
            raise ValueError("the URL signing key is empty; set a non-empty key")
        self._key = key
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlSigner:
        if settings.url_signing_key:
            key = settings.url_signing_key.encode()
        else:
            key = load_or_create_key(settings.data_dir / KEY_FILE)
        return cls(key, settings.signed_url_ttl_s)

    def signature(self, asset_id: str, expires: int) -> str:
        message = f"{asset_id}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, asset_id: str, now: float | None = None) -> tuple[int, str]:
        """(expiry epoch seconds, hex signature) for a link made at ``now``."""
        expires = int((time.time() if now is None else now) + self.ttl_s)
        return expires, self.signature(asset_id, expires)

    def url(self, base: str, asset_id: str, now: float | None = None) -> tuple[str, datetime]:
        """The absolute signed content link and when it stops working."""
        expires, signature = self.sign(asset_id, now)
        query = urlencode({"expires": expires, "signature": signature})
        link = f"{base}/api/v2/assets/{asset_id}/content?{query}"
        return link, datetime.fromtimestamp(expires, UTC)

    def verify(
        self, asset_id: str, expires: str | None, signature: str | None, now: float | None = None
    ) -> None:
        """Pass, or raise 403 ``forbidden`` saying which check failed."""
        if not expires or not signature:
            raise Forbidden(
                "a signed link needs both 'expires' and 'signature' query parameters",
                details={"expires": expires, "signature": signature},
            )
        try:
            expiry = int(expires)
        except ValueError:
            raise Forbidden(
                f"expires {expires!r} is not an epoch time in seconds; use the link as issued",
                details={"expires": expires},
            ) from None
        expected = self.signature(asset_id, expiry).encode()
        # Bytes: compare_digest refuses non-ASCII str, and a query string may hold anything.
        if not hmac.compare_digest(expected, signature.strip().lower().encode()):
            raise Forbidden(
                "signature does not match; use the link exactly as issued",
                details={"asset_id": asset_id},
            )
        current = time.time() if now is None else now
        if current >= expiry:
            at = datetime.fromtimestamp(expiry, UTC).isoformat()
            raise Forbidden(
                f"this signed link expired at {at}; fetch the job or asset again for a new one",
                details={"expired_at": at},
            )
