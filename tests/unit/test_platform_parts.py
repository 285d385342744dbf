"""Small parts the platforms rely on: baked weights, the health file, worker-vllm inputs."""

from __future__ import annotations

import json
import os
import time

import pytest

from handler.engine.bake import MARKER, baked_model
from handler.health import HealthBeat, healthy
from shared.contracts.compat import from_worker_vllm, is_worker_vllm
from shared.contracts.errors import InputError
from shared.contracts.settings import Settings


def test_baked_model_is_found_only_for_the_model_it_holds(tmp_path):
    assert baked_model(tmp_path, "org/model") is None  # no marker: nothing baked
    (tmp_path / MARKER).write_text(json.dumps({"model": "org/model", "revision": "abc"}))
    assert baked_model(tmp_path, "org/model") == tmp_path
    assert baked_model(tmp_path, None) == tmp_path
    assert baked_model(tmp_path, "org/other") is None
    assert baked_model(None, "org/model") is None


def test_resolve_model_prefers_baked_weights_offline(tmp_path, monkeypatch):
    from handler.engine.vllm_engine import resolve_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / MARKER).write_text(json.dumps({"model": "org/model"}))
    settings = Settings(_env_file=None, model_name="org/model", baked_model_dir=tmp_path)
    assert resolve_model(settings) == (str(tmp_path), "org/model")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    other = Settings(_env_file=None, model_name="org/other", baked_model_dir=tmp_path)
    assert resolve_model(other) == ("org/other", "org/other")
    assert "HF_HUB_OFFLINE" not in os.environ


def test_health_file_beats_while_alive(tmp_path):
    path = tmp_path / "health"
    assert not healthy(path, 60)
    alive = {"ok": True}
    beat = HealthBeat(path, lambda: alive["ok"], every_s=0.05).start()
    try:
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert healthy(path, 60)
        alive["ok"] = False  # a dead engine stops the beat: the file goes stale
        assert not healthy(path, 60, now=time.time() + 120)
    finally:
        beat.stop()


def test_worker_vllm_input_becomes_a_one_item_job():
    payload = {"prompt": "hi", "sampling_params": {"max_tokens": 20, "temperature": 0.2}, "stream": False}
    assert is_worker_vllm(payload) and not is_worker_vllm({"items": [], "prompt": "x"})
    doc = from_worker_vllm(payload)
    assert doc["items"] == [{"custom_id": "request", "prompt": "hi"}]
    assert doc["sampling"] == {"max_tokens": 20, "temperature": 0.2}
    with pytest.raises(InputError) as e:
        from_worker_vllm({"prompt": "hi", "sampling_params": {"top_k": 3, "n": 2}, "best_of": 2})
    fields = {i.field for i in e.value.issues}
    assert fields == {"sampling_params.top_k", "sampling_params.n", "best_of"}


async def test_memory_events_resume_by_id_and_forget_the_oldest_jobs():
    from shared.contracts.events import ChunkEvent, FinalEvent, Outcome
    from shared.contracts.models import Progress, Summary
    from shared.server.events import MemoryEvents

    progress = Progress(completed=0, failed=0, total=3, percentage=0, elapsed_s=0, eta_s=None, items_per_s=0,
                        tokens_per_s=0)
    events = MemoryEvents(keep_jobs=2)
    for i in range(3):
        events.publish("a", ChunkEvent(job_id="a", seq=i, results=[], progress=progress))
    assert [e.id for e in await events.after("a", None)] == ["1", "2", "3"]
    assert [e.event.seq for e in await events.after("a", "2")] == [2]
    assert await events.after("a", "3") == []
    events.publish("b", FinalEvent(job_id="b", outcome=Outcome.completed, summary=Summary.empty(0)))
    events.publish("c", FinalEvent(job_id="c", outcome=Outcome.completed, summary=Summary.empty(0)))
    assert await events.after("a", None) == []  # forgotten: the store still answers for it
    assert len(await events.after("c", None)) == 1
