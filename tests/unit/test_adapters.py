"""LoRA adapters without an engine (issue 15): the contract (`adapter` on jobs and items, the request it
builds), reading an adapter's directory, which base it fits, the settings and engine arguments, the runner
loading what a job names before any item runs (the fake engine), and the CPU kernels' fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from handler.runner import run_job
from shared.contracts.adapters import (
    AdapterRecord,
    find_adapters,
    fits_base,
    model_list,
    model_names,
    read_adapter,
)
from shared.contracts.errors import ErrorCode
from shared.contracts.events import ErrorEvent, FinalEvent, Outcome
from shared.contracts.models import Item, Job, JobOptions
from shared.contracts.prepare import Limits, RequestBuilder
from shared.contracts.settings import Settings
from shared.contracts.shards import plan_shards
from shared.stores.sqlite import SQLiteStore
from tests.fakes import FakeEngine


def adapter_dir(root: Path, name: str, *, base: str | None = "org/Base-1B", r: int = 8, weights: bool = True,
                **extra) -> Path:
    """A PEFT adapter's files (the weights are not read here: only there)."""
    d = root / name
    d.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], **extra}
    if base is not None:
        config["base_model_name_or_path"] = base
    (d / "adapter_config.json").write_text(json.dumps(config))
    if weights:
        (d / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    return d


# ## The contract


def test_a_job_and_an_item_name_an_adapter_and_the_items_wins():
    builder = RequestBuilder(JobOptions(adapter="job-lora"), Limits())
    assert builder.build(Item(custom_id="a", prompt="hi")).adapter == "job-lora"
    assert builder.build(Item(custom_id="b", prompt="hi", adapter="item-lora")).adapter == "item-lora"
    body = Item(custom_id="c", body={"messages": [{"role": "user", "content": "hi"}]}, adapter="line-lora")
    assert builder.build(body).adapter == "line-lora"
    assert RequestBuilder(JobOptions(), Limits()).build(Item(custom_id="d", prompt="hi")).adapter is None
    assert Job.model_validate(Job(adapter="x", items=[Item(custom_id="a", prompt="p", adapter="y")]).wire()
                              ).items[0].adapter == "y"


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a/b", "x" * 129])
def test_an_adapter_name_is_an_id(bad):
    with pytest.raises(ValidationError):
        JobOptions(adapter=bad)
    with pytest.raises(ValidationError):
        Item(custom_id="a", prompt="p", adapter=bad)


def test_read_adapter_says_what_is_missing(tmp_path):
    d = adapter_dir(tmp_path, "ok", r=8, rank_pattern={"q_proj": 32})
    files = read_adapter(d)
    assert (files.base_model, files.rank) == ("org/Base-1B", 32)
    assert read_adapter(adapter_dir(tmp_path, "nobase", base=None)).base_model is None
    with pytest.raises(ValueError, match="not a directory"):
        read_adapter(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no adapter_config\.json"):
        read_adapter(tmp_path / "empty")
    with pytest.raises(ValueError, match="no weights"):
        read_adapter(adapter_dir(tmp_path, "noweights", weights=False))
    bad = adapter_dir(tmp_path, "badjson")
    (bad / "adapter_config.json").write_text("{oops")
    with pytest.raises(ValueError, match="cannot read"):
        read_adapter(bad)


def test_find_adapters_takes_subdirectories_with_a_config_and_a_valid_name(tmp_path):
    adapter_dir(tmp_path, "grader")
    adapter_dir(tmp_path, "summarizer", weights=False)  # listed: the engine says what is wrong when it loads it
    (tmp_path / "notes").mkdir()
    adapter_dir(tmp_path, "bad name")
    assert sorted(find_adapters(tmp_path)) == ["grader", "summarizer"]
    assert find_adapters(tmp_path / "missing") == {}


def test_fits_base_by_path_id_or_last_part():
    names = model_names("/cache/models/SmolLM2-135M-Instruct-98362432", None, "SmolLM2-135M-Instruct")
    assert fits_base("/cache/models/SmolLM2-135M-Instruct-98362432/", names)
    assert fits_base("HuggingFaceTB/SmolLM2-135M-Instruct", names)
    assert fits_base("/elsewhere/smollm2-135m-instruct", names)
    assert fits_base(None, names) and fits_base("", names)  # an adapter that does not say fits any
    assert not fits_base("meta-llama/Llama-3.2-1B", names)
    assert not fits_base("/other/SmolLM2-360M-Instruct", names)
    hub = model_names("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "llama")
    assert fits_base("meta-llama/Llama-3.1-8B-Instruct", hub) and fits_base("/ckpt/Llama-3.1-8B-Instruct", hub)
    assert not fits_base("/opt/llm-jobs/model", model_names("/opt/llm-jobs/model2", "org/m", "m"))


def test_the_model_list_is_openais():
    listed = model_list("base", [AdapterRecord(name="a1", path="/a"), "a2"])
    assert listed["object"] == "list"
    assert [(m["id"], m["parent"], m["object"], m["owned_by"]) for m in listed["data"]] == [
        ("base", None, "model", "llm-jobs"), ("a1", "base", "model", "llm-jobs"), ("a2", "base", "model", "llm-jobs")]


# ## Settings and the engine's arguments


def test_lora_is_on_with_enable_lora_or_an_adapters_dir(tmp_path):
    from handler.engine.vllm_engine import engine_args

    off = Settings(_env_file=None)
    assert not off.lora_enabled and "enable_lora" not in engine_args(off, "m", "m", True)
    by_dir = Settings(_env_file=None, adapters_dir=tmp_path)
    assert by_dir.lora_enabled
    args = engine_args(by_dir, "m", "m", True)
    assert (args["enable_lora"], args["max_loras"], args["max_lora_rank"]) == (True, 4, 16)
    assert "max_cpu_loras" not in args
    on = Settings(_env_file=None, enable_lora=True, max_loras=2, max_lora_rank=64, max_cpu_loras=8)
    assert {k: v for k, v in engine_args(on, "m", "m", False).items() if "lora" in k} == {
        "enable_lora": True, "max_loras": 2, "max_lora_rank": 64, "max_cpu_loras": 8}
    assert not Settings(_env_file=None, adapters_dir=tmp_path, enable_lora=False).lora_enabled
    with pytest.raises(ValidationError, match="max_lora_rank"):
        Settings(_env_file=None, max_lora_rank=12)


# ## The runner: what a job names is loaded before any item runs


async def events_of(job, engine, **kw) -> list:
    return [e async for e in run_job(job, engine, **kw)]


def items(n: int, **extra) -> list[Item]:
    return [Item(custom_id=f"c{i}", prompt=f"p{i}", **extra) for i in range(n)]


async def test_a_job_runs_base_and_adapters_together(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.put_adapter(AdapterRecord(name="tuned", base_model="org/b", path="/vol/tuned"))
    engine = FakeEngine(lora=True, found_adapters={"local": tmp_path / "local"},
                        text=lambda r: f"{r.adapter or 'base'}:{r.custom_id}")
    adapter_dir(tmp_path, "local")
    job = Job(id="mix", adapter="tuned", items=[Item(custom_id="a", prompt="p"),
                                                Item(custom_id="b", prompt="p", adapter="local")])
    got = await events_of(job, engine, store=store)
    assert isinstance(got[-1], FinalEvent) and got[-1].outcome is Outcome.completed
    assert sorted(r.text for r in await store.results("mix")) == ["local:b", "tuned:a"]
    assert sorted(engine.adapter_calls) == [("local", str(tmp_path / "local"), None),
                                            ("tuned", "/vol/tuned", "org/b")]
    # the engine's ADAPTERS_DIR adapters went in the store
    assert (await store.get_adapter("local")).base_model == "org/Base-1B"
    # loaded once: a second job asks nothing again
    await events_of(job.model_copy(update={"id": "mix2"}), engine, store=store)
    assert len(engine.adapter_calls) == 2
    await store.close()


@pytest.mark.parametrize(("adapter", "why"), [
    ("nowhere", "adapter 'nowhere': no adapter of that name (known: tuned)"),
    ("tuned", "adapter 'tuned': it was made for 'org/other', and this engine serves 'fake-model'"),
])
async def test_an_adapter_no_engine_here_can_serve_fails_the_job_before_any_item(tmp_path, adapter, why):
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.put_adapter(AdapterRecord(name="tuned", base_model="org/other", path="/vol/tuned"))
    engine = FakeEngine(lora=True, refuse_adapters={"tuned": "it was made for 'org/other', and this engine "
                                                             "serves 'fake-model'"})
    job = Job(id="bad", items=[*items(3), Item(custom_id="z", prompt="p", adapter=adapter)])
    assert await store.accept(job)
    got = await events_of(job, engine, store=store)
    assert [type(e) for e in got] == [ErrorEvent, FinalEvent]
    assert why in got[0].error and got[-1].outcome is Outcome.failed and why in got[-1].summary.reason
    assert engine.started == []  # no item ran
    record = await store.get_job("bad")
    assert record.status.value == "failed" and why in record.error
    await store.close()


async def test_an_engine_without_lora_refuses_a_jobs_adapter(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.put_adapter(AdapterRecord(name="x", path="/vol/x"))
    engine = FakeEngine()
    got = await events_of(Job(id="off", adapter="x", items=items(2)), engine, store=store)
    assert "adapter 'x': this engine serves no adapters" in got[0].error and engine.started == []
    got = await events_of(Job(id="off2", adapter="y", items=items(2)), engine, store=store)
    assert "adapter 'y': no adapter of that name (known: x)" in got[0].error
    await store.close()


async def test_a_shards_items_are_read_ahead_for_their_adapters(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.put_adapter(AdapterRecord(name="good", path="/vol/good"))
    job = Job(id="sh", items=[*items(5), Item(custom_id="z9", prompt="p", adapter="missing")])
    assert await store.accept(job)
    await store.stage_items(job.id, 0, job.items)
    ref = next(iter(plan_shards(job, job.total, 100)))
    engine = FakeEngine(lora=True)
    got = await events_of(ref, engine, store=store, page_items=2)
    assert isinstance(got[0], ErrorEvent) and "adapter 'missing'" in got[0].error
    assert engine.started == []
    # an engine that serves none: the page that names one fails the job, before its items reach the engine
    job2 = Job(id="sh2", items=[*items(2), Item(custom_id="z9", prompt="p", adapter="good")])
    assert await store.accept(job2)
    await store.stage_items(job2.id, 0, job2.items)
    ref2 = next(iter(plan_shards(job2, job2.total, 100)))
    plain = FakeEngine()
    got = await events_of(ref2, plain, store=store, page_items=2)
    assert isinstance(got[-2], ErrorEvent) and "serves no adapters" in got[-2].error
    assert got[-1].outcome is Outcome.failed and "z9" not in plain.started
    await store.close()


async def test_an_adapter_the_engine_did_not_load_in_time_fails_the_job_for_a_retry(tmp_path):
    from shared.contracts.errors import EngineError

    class Slow(FakeEngine):
        async def add_adapter(self, name: str, path: str, base_model: str | None = None) -> None:
            raise EngineError(f"adapter '{name}': vLLM did not load it within ITEM_TIMEOUT_S=1 s")

    store = SQLiteStore(tmp_path / "jobs.db")
    await store.put_adapter(AdapterRecord(name="big", path="/vol/big"))
    job = Job(id="slow", adapter="big", items=items(2))
    assert await store.accept(job)
    engine = Slow(lora=True)
    got = await events_of(job, engine, store=store)
    assert [type(e) for e in got] == [FinalEvent]  # no ErrorEvent: not an invalid job, a worker retries it
    assert "did not load it" in got[0].summary.reason and engine.started == []
    assert (await store.get_job("slow")).status.value == "failed"
    await store.close()


def test_an_unknown_adapter_is_model_not_found():
    from shared.contracts.adapters import refused

    issue = refused("x", "no adapter of that name", unknown=True).issues[0]
    assert (issue.field, issue.code) == ("adapter", ErrorCode.model_not_found)


# ## The CPU kernels' fix (handler/engine/lora_cpu.py)


def test_rows_without_an_adapter_keep_the_base_output():
    torch = pytest.importorskip("torch")
    from vllm.lora.ops.torch_ops import lora_ops

    from handler.engine.lora_cpu import keep_unadapted_rows, register

    # vLLM's own kernels, whether or not the plugin has patched them in this process already (it has once
    # an engine booted here: vLLM loads its plugins then)
    shrink = getattr(lora_ops.bgmv_shrink, "__wrapped__", lora_ops.bgmv_shrink)
    expand = getattr(lora_ops.bgmv_expand, "__wrapped__", lora_ops.bgmv_expand)
    weights = torch.ones(2, 1, 4, 3)  # two slots, rank 4, hidden 3
    x = torch.ones(3, 3)
    indices = torch.tensor([-1, 0, -1])
    plain = torch.zeros(3, 4)
    shrink(x, weights, plain, indices, 1.0)
    assert plain[0].abs().sum() > 0  # vLLM's own kernel: -1 is the last slot
    fixed = torch.zeros(3, 4)
    keep_unadapted_rows(shrink)(x, weights, fixed, indices, 1.0)
    assert fixed[0].abs().sum() == 0 and fixed[2].abs().sum() == 0 and torch.equal(fixed[1], plain[1])
    y = torch.full((3, 4), 7.0)
    keep_unadapted_rows(expand)(torch.ones(3, 3), torch.ones(2, 1, 4, 3), y, indices, True)
    assert y[0].tolist() == [7.0] * 4 and y[1].tolist() == [10.0] * 4
    wrapped = keep_unadapted_rows(shrink)
    assert keep_unadapted_rows(wrapped) is wrapped  # patched once, however often vLLM loads the plugin
    register()
    register()
    assert lora_ops.bgmv_shrink.__wrapped__ is shrink
