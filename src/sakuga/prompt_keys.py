"""Partner-node API keys (``extra_data.api_key_comfy_org``): held in memory, never stored.

Comfy API v2 forwards the key with the prompt and never persists or echoes it. sakuga keeps
it in this process until the job ends, so it reaches the backend when this process's
workers run the job; a job run by another worker process goes without it.
"""

from __future__ import annotations


class PromptKeys:
    """Job id -> partner-node key, for the jobs of this process."""

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}

    def put(self, job_id: str, key: str) -> None:
        self._keys[job_id] = key

    def extra_data(self, job_id: str) -> dict[str, str] | None:
        """The ``extra_data`` to send with the job's prompt, or None."""
        key = self._keys.get(job_id)
        return {"api_key_comfy_org": key} if key else None

    def forget(self, job_id: str) -> None:
        self._keys.pop(job_id, None)
