"""Secrets generated once and kept in the data folder (URL signing key, webhook secret)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def load_or_create(path: Path, make: Callable[[], str]) -> str:
    """The secret stored at ``path``; on first use ``make()`` one and store it (mode 0600).

    The file is written aside and published with an atomic link, so processes sharing the
    data folder all read the same complete secret, whoever wins the race to create it.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(make() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its secret
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    secret = path.read_text(encoding="ascii").strip()
    if not secret:
        raise RuntimeError(f"{path} is empty; delete it and a new secret is generated")
    return secret
