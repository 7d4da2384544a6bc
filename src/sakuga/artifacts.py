"""Blob files keyed by blake3 under the artifact folder (object storage fits behind this face)."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

import blake3

from sakuga.errors import NotFound


class OutsideArtifactRoot(NotFound):
    """A blob path that is malformed or resolves outside the artifact root (a stray symlink)."""


def content_hash(data: bytes) -> str:
    """``blake3:<hex>`` of the bytes, the form Comfy API v2 uses."""
    return "blake3:" + blake3.blake3(data).hexdigest()


class Artifacts:
    """Content-addressed blobs: write once, read by hash, never escape the root."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, digest: str) -> Path:
        """Where the blob for ``blake3:<hex>`` lives, symlinks resolved.

        Raises ``OutsideArtifactRoot`` (a 404 ``not_found``) for anything but a hex digest and
        for a path that resolves outside the root, e.g. a symlink in ``blobs/`` pointing out.
        """
        hexpart = digest.removeprefix("blake3:")
        if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
            raise OutsideArtifactRoot(
                f"not a blake3 digest: {digest!r}; expected blake3:<64 lowercase hex digits>"
            )
        resolved = (self.root / "blobs" / hexpart[:2] / hexpart).resolve()
        if not resolved.is_relative_to(self.root):
            raise OutsideArtifactRoot(f"blob {digest} is not in the artifact store")
        return resolved

    def put(self, data: bytes) -> str:
        """Store the bytes (atomically, once) and return their digest."""
        digest = content_hash(data)
        target = self.path(digest)
        if target.exists():
            # Used again, so young again: the retention sweep spares it (``retire``).
            os.utime(target)
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def retire(self, digest: str, unused_for_s: float) -> Path | None:
        """Move the blob aside, unless it was written or reused in the last ``unused_for_s``
        seconds; the moved file (delete it, or ``restore`` it), or None when it stays."""
        target = self.path(digest)
        try:
            if time.time() - target.stat().st_mtime < unused_for_s:
                return None
            retired = target.with_name(f".retired-{uuid.uuid4().hex[:8]}-{target.name}")
            os.rename(target, retired)
        except FileNotFoundError:  # another sweep took it first
            return None
        return retired

    def restore(self, retired: Path, digest: str) -> None:
        """Put a retired blob back (an asset started using it meanwhile)."""
        os.replace(retired, self.path(digest))

    def exists(self, digest: str) -> bool:
        try:
            return self.path(digest).is_file()
        except OutsideArtifactRoot:
            return False

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()
