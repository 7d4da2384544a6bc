"""A small client of sakuga's own API for the CLI: submit, follow events, download outputs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REQUEST_TIMEOUT_S = 30.0
# The server sends a keepalive every 15 s; two missed ones mean the stream is dead.
STREAM_IDLE_S = 35.0


class ApiError(Exception):
    """The server answered with an error envelope."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error") or {}
        self.status = status
        self.code = error.get("code", f"http_{status}")
        self.details = error.get("details")
        super().__init__(f"{status} {self.code}: {error.get('message', body)}")


class Remote:
    """Synchronous API client (the CLI is synchronous)."""

    def __init__(self, server: str, api_key: str | None = None) -> None:
        """``api_key`` (default: ``SAKUGA_API_KEY``) is sent as ``Authorization: Bearer``."""
        self.server = server.rstrip("/")
        key = api_key or os.environ.get("SAKUGA_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.server, timeout=REQUEST_TIMEOUT_S, headers=headers)

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"error": {"code": f"http_{response.status_code}", "message": response.text}}
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json(self.http.post("/api/v2/jobs", json=body))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/api/v2/jobs/{job_id}"))

    def jobs(self, limit: int) -> dict[str, Any]:
        return self._json(self.http.get("/api/v2/jobs", params={"limit": limit}))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.post(f"/api/v2/jobs/{job_id}/cancel"))

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (event, data) from the job's SSE stream until it ends."""
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=STREAM_IDLE_S)
        with self.http.stream(
            "GET",
            f"/api/v2/jobs/{job_id}/events",
            headers={"Accept": "text/event-stream"},
            timeout=timeout,
        ) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            name, data = "message", ""
            for line in response.iter_lines():
                if not line:
                    if data:
                        yield name, json.loads(data)
                    name, data = "message", ""
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()

    def download(self, output: dict[str, Any], folder: Path) -> Path:
        """Save one output under ``folder`` (named after the job and file) and return its path."""
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(str(output.get("name") or output["id"])).name
        target = folder / f"{str(output.get('job_id', ''))[:8]}-{name}"
        with self.http.stream("GET", f"/api/v2/assets/{output['id']}/content") as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            with target.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        return target
