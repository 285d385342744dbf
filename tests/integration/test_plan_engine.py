"""The planner's token counts against the real engine: `count_tokens` (the embedded model's tokenizer loaded
with transformers) gives the prompt tokens the engine itself reports, and `sample_output` (`llm-jobs plan
--sample`) measures what items really write."""

from __future__ import annotations

from handler.engine.tokens import count_tokens, sample_output
from handler.runner import run_job
from shared.contracts.events import ChunkEvent
from shared.contracts.models import Item, Job, Message, Sampling


def job() -> Job:
    return Job(system="Answer briefly.", template="Summarise: {{ text }}",
               sampling=Sampling(max_tokens=12, temperature=0.0),
               items=[Item(custom_id="prompt", prompt="Name a colour."),
                      Item(custom_id="chat", messages=[Message(role="user", content="Hi."),
                                                       Message(role="assistant", content="Hello!"),
                                                       Message(role="user", content="Count to three.")]),
                      Item(custom_id="fields", fields={"text": "The sea was calm and grey all morning."}),
                      Item(custom_id="no-fields-template", fields={"missing": 1})])


async def test_counts_equal_the_engines_own(engine, model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    counts = count_tokens(job(), tokenizer)
    results = [r async for e in run_job(job(), engine) if isinstance(e, ChunkEvent) for r in e.results]
    used = {r.custom_id: r.usage.prompt_tokens for r in results if r.usage is not None}
    # the item whose template needs a value it lacks is rejected by both
    assert set(used) == {"prompt", "chat", "fields"} and counts.rejected == 1
    assert counts.prompt_tokens == sum(used.values()) and counts.prompt_tokens_max == max(used.values())


async def test_sample_output_measures_the_mean_output(engine, model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    counts = count_tokens(job(), tokenizer)
    sampled = await sample_output(job(), engine, 2, counts)
    assert sampled.sampled == 2 and 0 < sampled.output_tokens_mean <= 12
    assert sampled.model_copy(update={"sampled": 0, "output_tokens_mean": None}) == counts
