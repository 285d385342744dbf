"""The Python SDK: one client over every backend (our API, RunPod, Modal, a local engine)."""

from shared.sdk._client import AsyncClient, AsyncJob, Client, JobHandle

__all__ = ["AsyncClient", "AsyncJob", "Client", "JobHandle"]
