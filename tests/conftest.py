from __future__ import annotations

import pytest

from shared.models import Item, Job


def make_job(n: int, **options) -> Job:
    return Job(items=[Item(custom_id=f"c{i}", prompt=f"prompt {i}") for i in range(n)], **options)


@pytest.fixture
def job_factory():
    return make_job
