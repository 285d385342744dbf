"""LoRA adapters on the real vLLM CPU engine (issue 15): adapters for the embedded model made here with peft,
served by one engine beside the base model in the same job; an adapter for another base, one over
MAX_LORA_RANK, one vLLM refuses and an unknown name each fail the job before any item runs, and the engine
lives on. The engine boots once for this module, with LoRA on and its own ADAPTERS_DIR."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytest_asyncio

from handler.engine.default_model import ensure_default_model
from handler.runner import run_job
from shared.contracts.adapters import AdapterRecord, read_adapter
from shared.contracts.events import ErrorEvent, FinalEvent, Outcome
from shared.contracts.models import Item, Job, ResultStatus, Sampling
from shared.server.models import serving
from shared.stores.sqlite import SQLiteStore
from tests.integration.conftest import engine_settings

PROMPT = "Write one short sentence about the sea."
MAX_LORA_RANK = 16


def make_adapter(model_dir: Path, to: Path, *, r: int = 8, random_b: bool = False, **config) -> Path:
    """A PEFT LoRA adapter (q_proj, v_proj) for the embedded model. peft starts B at zero (the adapter then
    changes nothing); `random_b` fills it with normal(0, 0.5) noise, which surely changes a greedy answer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=16, target_modules=["q_proj", "v_proj"], **config))
    if random_b:
        noise = torch.Generator().manual_seed(15)
        with torch.no_grad():
            for name, w in model.named_parameters():
                if "lora_B" in name:
                    w.copy_(torch.randn(w.shape, generator=noise) * 0.5)
    model.save_pretrained(to)
    return to


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    model_dir = ensure_default_model(engine_settings().cache_dir)
    root = tmp_path_factory.mktemp("lora")
    served, other = root / "served", root / "elsewhere"  # ADAPTERS_DIR, and adapters only the store lists
    made = {"zero": make_adapter(model_dir, served / "zero"),
            "noisy": make_adapter(model_dir, served / "noisy", random_b=True),
            "rank32": make_adapter(model_dir, other / "rank32", r=32),
            "biased": make_adapter(model_dir, other / "biased", bias="lora_only")}
    foreign = shutil.copytree(made["zero"], other / "foreign")
    config = json.loads((foreign / "adapter_config.json").read_text())
    (foreign / "adapter_config.json").write_text(json.dumps({**config,
                                                             "base_model_name_or_path": "meta-llama/Llama-3.2-1B"}))
    return {**made, "foreign": foreign, "dir": served}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lora_engine(adapters):
    from handler.engine.vllm_engine import VLLMEngine

    eng = await VLLMEngine.start(engine_settings(adapters_dir=adapters["dir"], max_lora_rank=MAX_LORA_RANK,
                                                 max_loras=2))
    yield eng
    await eng.close()


@pytest_asyncio.fixture(loop_scope="session")
async def store(tmp_path, adapters):
    s = SQLiteStore(tmp_path / "jobs.db")
    for name in ("rank32", "biased", "foreign"):  # as `llm-jobs adapters add` records them
        base = read_adapter(adapters[name]).base_model
        await s.put_adapter(AdapterRecord(name=name, base_model=base, path=str(adapters[name])))
    yield s
    await s.close()


def greedy(custom_id: str, adapter: str | None = None) -> Item:
    return Item(custom_id=custom_id, prompt=PROMPT, adapter=adapter)


async def run(job: Job, engine, store) -> list:
    assert await store.accept(job)
    return [e async for e in run_job(job, engine, store=store)]


async def test_base_and_two_adapters_in_one_job(lora_engine, store):
    job = Job(id="mixed", sampling=Sampling(temperature=0, max_tokens=16),
              items=[greedy("base"), greedy("zero", "zero"), greedy("noisy", "noisy"), greedy("base-2")])
    events = await run(job, lora_engine, store)
    assert isinstance(events[-1], FinalEvent) and events[-1].outcome is Outcome.completed, events[-1]
    got = {r.custom_id: r for r in await store.results("mixed")}
    assert all(r.status is ResultStatus.ok and r.text for r in got.values()), got
    assert got["zero"].text == got["base"].text == got["base-2"].text  # B = 0: the base model's own answer
    assert got["noisy"].text != got["base"].text
    assert lora_engine.adapters == {"zero", "noisy"}
    # ADAPTERS_DIR's adapters went in the store when the engine ran its first job, with their base
    listed = {a.name: a for a in await store.list_adapters()}
    assert Path(listed["zero"].path) == Path(lora_engine.found_adapters["zero"])
    assert listed["noisy"].base_model == str(ensure_default_model(engine_settings().cache_dir))
    seen = await serving(engine_settings(), store, lora_engine)
    assert seen.model == "SmolLM2-135M-Instruct"
    assert {"zero", "noisy", "rank32", "biased"} <= {a.name for a in seen.adapters}
    assert "foreign" not in {a.name for a in seen.adapters}  # made for another base


@pytest.mark.parametrize(("adapter", "why"), [
    ("foreign", "adapter 'foreign': it was made for 'meta-llama/Llama-3.2-1B', and this engine serves "
                "'SmolLM2-135M-Instruct'"),
    ("rank32", f"adapter 'rank32': its rank 32 is over MAX_LORA_RANK={MAX_LORA_RANK}"),
    ("biased", "adapter 'biased': vLLM refused it: Adapter bias is not supported."),
    ("nowhere", "adapter 'nowhere': no adapter of that name (known: "),
])
async def test_an_adapter_it_cannot_serve_fails_the_job_before_any_item(lora_engine, store, adapter, why):
    job = Job(id=f"bad-{adapter}", sampling=Sampling(temperature=0, max_tokens=8),
              items=[greedy("base"), greedy("lora", adapter)])
    events = await run(job, lora_engine, store)
    assert [type(e) for e in events] == [ErrorEvent, FinalEvent]
    assert why in events[0].error and events[-1].outcome is Outcome.failed
    assert await store.results(job.id) == []  # nothing ran
    record = await store.get_job(job.id)
    assert record.status.value == "failed" and why in record.error
    assert lora_engine.alive and adapter not in lora_engine.adapters
    # the engine still serves: the same job without the adapter completes
    ok = await run(job.model_copy(update={"id": f"ok-{adapter}", "items": [greedy("base")]}), lora_engine, store)
    assert ok[-1].outcome is Outcome.completed
