"""Training jobs without training (issue 16): the config is checked up front, examples are checked as
items are, a training job is one shard in the queue's `train` lane that only a training worker takes,
tokenization marks the assistant's tokens, and an adapter name is its owner's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from handler.service import JobService
from handler.training.run import last_checkpoint
from handler.training.tokenize import encode
from handler.worker import Worker
from shared.contracts.adapters import AdapterRecord
from shared.contracts.errors import InputError
from shared.contracts.inputs import parse_job_document, parse_job_text
from shared.contracts.models import Job, JobOptions
from shared.contracts.settings import Settings
from shared.contracts.shards import plan_shards
from shared.contracts.training import TrainConfig, held_out
from shared.sdk._training import training_document
from shared.server.dispatch import QueueDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.sqlite import SQLiteStore
from tests.fakes import FakeEngine

CHAT = [{"role": "user", "content": "Quina nota?"}, {"role": "assistant", "content": '{"nota": 4}'}]


def training(**config) -> dict:
    return {"adapter": "a1", **config}


def test_the_config_is_checked_up_front_naming_the_field():
    assert TrainConfig(adapter="a").planned_steps(100) == 25  # 1 epoch of batches of 4
    # 13 batches of 8, 6 optimizer steps of 2 batches per epoch (as transformers counts them), 2 epochs
    assert TrainConfig(adapter="a", epochs=2, batch_size=8, grad_accum=2).planned_steps(100) == 12
    assert TrainConfig(adapter="a", max_steps=30).planned_steps(100) == 30
    bad = [({"lora": {"r": 0}}, "lora.r"), ({"lora": {"target_modules": ["q_proj; rm -rf"]}}, "lora.target_modules"),
           ({"learning_rate": 0}, "learning_rate"), ({"lr_scheduler": "wild"}, "lr_scheduler"),
           ({"adapter": "../etc"}, "adapter"), ({"quantize": "2bit"}, "quantize"), ({"epochs": 0}, "epochs"),
           ({"unknown": 1}, "unknown")]
    for given, field in bad:
        with pytest.raises(ValidationError) as e:
            TrainConfig.model_validate({"adapter": "a", **given})
        assert field in {".".join(map(str, err["loc"])) for err in e.value.errors()}, (given, e.value)
    assert TrainConfig(adapter="a", lora={"target_modules": "all-linear"}).lora.target_modules == "all-linear"


def test_a_bad_example_is_a_rejection_naming_its_line_and_field_and_the_job_goes_on():
    lines = [{"custom_id": "train-1", "messages": CHAT},
             {"custom_id": "train-2", "messages": CHAT[:1]},  # no answer to learn
             {"custom_id": "train-3", "prompt": "not a chat"},
             {"custom_id": "eval-1", "messages": CHAT}]
    text = "\n".join(json.dumps(x) for x in lines)
    job = parse_job_text(text, options={"training": training()})
    assert [i.custom_id for i in job.items] == ["train-1", "eval-1"]
    assert [(r.line, r.field) for r in job.rejected] == [(2, "messages"), (3, "messages")]
    assert "assistant" in job.rejected[0].message
    with pytest.raises(InputError) as e:
        parse_job_document({"items": lines[:1], "training": training(), "template": "{{ x }}"})
    assert [i.field for i in e.value.issues] == ["template"]


def test_a_training_job_is_one_shard_whatever_its_size_in_the_train_lane():
    options = JobOptions(id="t", training=TrainConfig(adapter="a"))
    (ref,) = plan_shards(options, total=25_000, shard_size=1000)
    assert (ref.start, ref.end, ref.shards) == (0, 25_000, 1)
    assert QueueDispatcher(queue=None)._priority(ref) == "train"  # type: ignore[arg-type]
    assert len(plan_shards(JobOptions(id="i"), total=25_000, shard_size=1000)) == 25


async def test_only_a_worker_with_a_trainer_takes_the_train_lane(queue, tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    jobs = JobLifecycle(store, QueueDispatcher(queue), Settings(_env_file=None))
    await jobs.submit(parse_job_document({"id": "tj", "training": training(), "items": [{"messages": CHAT}]}))
    await jobs.submit(parse_job_document({"id": "ij", "items": [{"prompt": "hi"}]}))
    assert (await queue.stats())["queued_train"] == 1
    inference = Worker(FakeEngine(), queue, store)
    assert inference.lanes == ("high", "default")
    lease = await queue.reserve("w", 30, lanes=inference.lanes)
    assert lease.job_id == "ij" and await queue.reserve("w", 30, lanes=inference.lanes) is None
    trainer_only = Worker(None, queue, store, trainer=object())  # type: ignore[arg-type]
    assert trainer_only.lanes == ("train",)
    assert (await queue.reserve("t", 30, lanes=trainer_only.lanes)).job_id == "tj"
    with pytest.raises(ValueError, match="engine, a trainer"):
        Worker(None, queue, store)
    await store.close()


async def test_a_training_only_worker_boots_no_engine_and_refuses_inference_jobs(tmp_path):
    settings = Settings(_env_file=None, inference_jobs=False, sqlite_path=tmp_path / "jobs.db")
    JobService.adopt(None)
    try:
        service = JobService.boot(settings)  # would boot vLLM otherwise
        assert service.engine is None
        job = service.parse({"id": "ij", "model": "any", "items": [{"custom_id": "a", "prompt": "hi"}]})
        assert await service.store.accept(job)
        events = [e async for e in service.events(job)]
        assert [e.type for e in events] == ["final"] and "INFERENCE_JOBS" in events[0].summary.reason
        assert (await service.store.get_job("ij")).status == "failed"
        await service.close()
    finally:
        JobService.adopt(None)


async def test_a_worker_with_train_jobs_off_refuses_a_training_job_and_records_why(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    service = JobService(FakeEngine(), Settings(_env_file=None, train_jobs=False), store=store)
    job = parse_job_document({"id": "tj", "training": training(), "items": [{"messages": CHAT}]})
    assert await store.accept(job)
    events = [e async for e in service.events(job)]
    assert [e.type for e in events] == ["final"] and events[0].outcome == "failed"
    assert "TRAIN_JOBS" in (await store.get_job("tj")).summary.reason
    await store.close()


async def test_an_adapter_name_is_its_owners(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    jobs = JobLifecycle(store, QueueDispatcher(queue=None), Settings(_env_file=None))  # type: ignore[arg-type]
    made = Job(id="ana-job", owner="ana", training=TrainConfig(adapter="a1"))
    assert await store.accept(made)
    await store.put_adapter(AdapterRecord(name="a1", path="/x", job_id="ana-job"))
    await store.put_adapter(AdapterRecord(name="by-hand", path="/y"))
    for owner, name in (("bob", "a1"), ("ana", "by-hand")):
        job = Job(id=f"{owner}-2", owner=owner, training=TrainConfig(adapter=name),
                  items=[{"custom_id": "train-1", "messages": CHAT}])
        with pytest.raises(InputError, match="not yours") as e:
            await jobs.submit(job)
        assert e.value.issues[0].field == "training.adapter"
    await jobs._check_adapter_name(Job(id="ana-2", owner="ana", training=TrainConfig(adapter="a1")))  # hers
    await jobs._check_adapter_name(Job(id="admin", training=TrainConfig(adapter="by-hand")))  # an admin's
    await store.close()


def test_the_sdk_builds_the_job_from_a_prepared_directory_files_or_lists(tmp_path):
    d = tmp_path / "prepared"
    d.mkdir()
    (d / "train.jsonl").write_text("".join(json.dumps({"custom_id": f"train-{k}", "messages": CHAT}) + "\n"
                                           for k in range(3)))
    (d / "eval.jsonl").write_text(json.dumps({"custom_id": "eval-1", "messages": CHAT}) + "\n")
    doc = training_document(d, adapter="a1", max_steps=5, id="t1")
    assert doc["training"] == {"adapter": "a1", "max_steps": 5} and doc["id"] == "t1"
    assert [i["custom_id"] for i in doc["items"]] == ["train-0", "train-1", "train-2", "eval-1"]
    listed = training_document([{"messages": CHAT}] * 2, held_out=[{"custom_id": "x", "messages": CHAT}],
                               adapter="a1")
    assert [i["custom_id"] for i in listed["items"]] == ["train-000001", "train-000002", "eval-000001"]
    assert [held_out(i["custom_id"]) for i in listed["items"]] == [False, False, True]
    assert parse_job_document(listed).training.adapter == "a1"
    (tmp_path / "bad.jsonl").write_text('{"messages": []}\nnot json\n')
    with pytest.raises(InputError, match="line 2"):
        training_document(tmp_path / "bad.jsonl", adapter="a1")
    with pytest.raises(InputError, match=r"train\.jsonl"):
        training_document(tmp_path, adapter="a1")


def test_the_assistant_mask_covers_every_assistant_turn_and_nothing_else(tokenizer):
    chat = [{"role": "system", "content": "Sigues breu."}, {"role": "user", "content": "Hola"},
            {"role": "assistant", "content": "Bon dia!"}, {"role": "user", "content": "I ara?"},
            {"role": "assistant", "content": "Adéu."}]
    enc = encode(tokenizer, chat)
    assert enc.input_ids == tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
    marked = tokenizer.decode([t for t, m in zip(enc.input_ids, enc.assistant_masks, strict=True) if m])
    assert marked == "Bon dia!<|im_end|>\nAdéu.<|im_end|>\n"
    everything = encode(tokenizer, chat, assistant_only=False)
    assert everything.assistant_tokens == everything.tokens == enc.tokens


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from handler.engine.default_model import ensure_default_model

    return AutoTokenizer.from_pretrained(ensure_default_model(Settings(_env_file=None).cache_dir))


def test_a_checkpoint_cut_short_by_a_kill_is_passed_over(tmp_path: Path):
    assert last_checkpoint(tmp_path / "none") is None
    for step, complete in ((5, True), (10, True), (15, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_a_base_model_other_than_the_deployments_must_be_allowed(tmp_path):
    from handler.training.run import Trainer

    settings = Settings(_env_file=None, train_base_models="org/Allowed-8B, /models/local", hf_hub_offline=False)
    trainer = Trainer(settings)
    assert trainer.base(TrainConfig(adapter="a", base_model="org/Allowed-8B")) == ("org/Allowed-8B",
                                                                                     "org/Allowed-8B", True)
    for hostile in ("/etc", "someone/Huge-405B", "../../root"):
        with pytest.raises(ValueError, match="TRAIN_BASE_MODELS"):
            trainer.base(TrainConfig(adapter="a", base_model=hostile))


async def test_a_training_job_naming_a_base_not_allowed_fails_before_loading_anything(tmp_path):
    from handler.training.run import Trainer

    store = SQLiteStore(tmp_path / "jobs.db")
    job = parse_job_document({"id": "hostile", "training": training(base_model="/etc"),
                              "items": [{"custom_id": "train-1", "messages": CHAT}]})
    assert await store.accept(job)
    events = [e async for e in Trainer(Settings(_env_file=None, training_dir=tmp_path)).run(job, store)]
    assert [e.type for e in events] == ["final"] and events[0].outcome == "failed"
    assert "TRAIN_BASE_MODELS" in (await store.get_job("hostile")).summary.reason
    await store.close()
