"""A submit's `estimated_time_s`: ESTIMATE_ITEMS_PER_S until the model has a completed job, then that model's
measured throughput (the API on uvicorn, SQLite, the local dispatcher on the fake engine)."""

from __future__ import annotations

from tests.api.test_owners import ADMIN, job, serve, submit, wait_ended
from tests.fakes import FakeEngine


def test_the_estimate_comes_from_the_models_last_jobs(tmp_path):
    engine = FakeEngine(capacity=2, delay=lambda r: 0.05)  # 2 at a time, 50 ms each: about 40 items/s
    with serve(tmp_path, engine, estimate_items_per_s=2.0, estimate_cache_s=0,
               served_model_name="fake-model") as api, api.as_(ADMIN) as admin:
        cold = submit(admin, job("first", n=20)).json()
        assert (cold["estimated_time_s"], cold["estimate_from_jobs"]) == (10.0, 0)  # 20 / 2.0
        done = wait_ended(admin, "first")
        measured = done["summary"]["completed"] / done["summary"]["elapsed_s"]
        warm = submit(admin, job("second", n=200)).json()
        assert warm["estimate_from_jobs"] == 1
        assert abs(warm["estimated_time_s"] - 200 / measured) <= 0.1
        assert 2.0 < warm["estimated_time_s"] < 10.0  # about 5 s at 40 items/s, far from the default's 100 s
        # another model has measured nothing yet
        other = submit(admin, job("third", n=20, model="another-model")).json()
        assert other["estimate_from_jobs"] == 0
