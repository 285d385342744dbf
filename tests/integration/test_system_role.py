"""A model whose chat template refuses the system role (Gemma-2's), on the real vLLM CPU engine.

The model is SmolLM2 with Gemma-2's chat template in its files, as a Gemma-2 fine-tune (the seed's
grading model) brings it; the engine loads it like any other model directory. vLLM's tokenizer
renders through private copies, so the template has to come from the files, not an attribute set
on a running engine.
"""

from __future__ import annotations

import pytest_asyncio

from handler.runner import run_job
from shared.contracts.events import ChunkEvent, FinalEvent
from shared.contracts.models import Item, Job, JobStatus, ResultStatus, Sampling
from tests.integration.conftest import engine_settings, model_copy
from tests.unit.test_chat_roles import GEMMA2

SYSTEM = "You are a terse assistant. Answer in at most five words."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gemma_engine(tmp_path_factory):
    """Its own engine, for this module only, serving SmolLM2 with Gemma-2's chat template."""
    from handler.engine.vllm_engine import VLLMEngine

    model = model_copy(tmp_path_factory.mktemp("gemma-template") / "smol-gemma-template")
    (model / "chat_template.jinja").write_text(GEMMA2)
    eng = await VLLMEngine.start(engine_settings(model_name=str(model), hf_hub_offline=True))
    yield eng
    await eng.close()


@pytest_asyncio.fixture(loop_scope="session")
async def gemma_template(gemma_engine):
    tokenizer = gemma_engine._tokenizer
    assert tokenizer.chat_template == GEMMA2
    return tokenizer


async def test_a_job_with_a_system_text_succeeds_under_a_template_without_the_system_role(gemma_engine, gemma_template):
    job = Job(items=[Item(custom_id=f"q{i}", prompt=f"Name a colour number {i}.") for i in range(6)],
              system=SYSTEM, sampling=Sampling(max_tokens=16, temperature=0))
    events = [e async for e in run_job(job, gemma_engine)]
    final = events[-1]
    results = {r.custom_id: r for e in events if isinstance(e, ChunkEvent) for r in e.results}
    assert isinstance(final, FinalEvent)
    errors = {cid: r.error for cid, r in results.items() if r.status != ResultStatus.ok}
    assert len(results) == 6 and not errors, errors
    assert final.status == JobStatus.completed and final.summary.completed == 6
    for i in range(6):
        # the prompt vLLM ran is Gemma's, with the system text opening the first (and only) user turn
        expected = (f"{gemma_template.bos_token}<start_of_turn>user\n{SYSTEM}\n\nName a colour number {i}."
                    "<end_of_turn>\n<start_of_turn>model\n")
        assert results[f"q{i}"].usage.prompt_tokens == len(gemma_template.encode(expected, add_special_tokens=False))


async def test_the_rendered_prompt_holds_the_system_text_in_the_first_user_turn(gemma_engine, gemma_template):
    from shared.contracts.prepare import Limits, RequestBuilder

    job = Job(items=[Item(custom_id="a", messages=[
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye."}])])
    request = RequestBuilder(job, Limits()).build(job.items[0])
    text = gemma_template.decode(gemma_engine._prompt_ids(request))
    assert text == (f"{gemma_template.bos_token}<start_of_turn>user\n{SYSTEM}\n\nHi.<end_of_turn>\n"
                    "<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye.<end_of_turn>\n"
                    "<start_of_turn>model\n")
