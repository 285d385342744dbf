"""Every llm-jobs metric, defined once (README, "Metrics").

Counters and histograms are observed by the process that does the work: a worker's runner counts the
items it ran, the API's streams time the chunks they send. Gauges about jobs and the queue
(`JOBS`, `QUEUE_DEPTH`, `DEAD_LETTERS`, `LEASE_EXPIRIES`) are set when `/metrics` is scraped, from the
store and the queue: on serverless platforms nobody can scrape the workers, and these figures hold
there too. vLLM's own `vllm:*` metrics sit in the same default registry where the engine runs.

Labels are few and bounded: a status, a priority, a shard. `SHARD_PROGRESS` is labelled by job and
shard while the shard runs, and its series are removed when it ends (`shard_done`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: latency buckets in seconds: from a fast item on a GPU to a long generation on a CPU
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: buckets for a store write or a chunk's trip to SSE, in seconds
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# ## Jobs and the queue: set from the store and the queue at each scrape

JOBS = Gauge("llm_jobs_jobs", "Jobs in the store, by state.", ["state"])
QUEUE_DEPTH = Gauge("llm_jobs_queue_depth", "Shards waiting in the queue, by priority lane.", ["priority"])
QUEUE_RUNNING = Gauge("llm_jobs_queue_running", "Shards leased to a worker now.")
QUEUE_RETRYING = Gauge("llm_jobs_queue_retrying", "Shards waiting out a retry backoff.")
DEAD_LETTERS = Gauge("llm_jobs_queue_dead_letters", "Shards in the dead-letter list.")
LEASE_EXPIRIES = Gauge("llm_jobs_queue_lease_expiries", "Leases that expired (their worker died or hung) and "
                       "were reaped, since the queue was created.")

# ## Items: observed by the runner that ran them

ITEMS = Counter("llm_jobs_items", "Items this process ran, by result status (ok, error).", ["status"])
PROMPT_TOKENS = Counter("llm_jobs_prompt_tokens", "Prompt tokens of the items this process ran.")
COMPLETION_TOKENS = Counter("llm_jobs_completion_tokens", "Completion tokens of the items this process ran.")
ITEM_LATENCY = Histogram("llm_jobs_item_latency_seconds", "Time from an item's start to its result.",
                         buckets=LATENCY_BUCKETS)
STORE_WRITE = Histogram("llm_jobs_store_write_seconds", "Time to store one chunk of results (retries included).",
                        buckets=FAST_BUCKETS)
SHARD_PROGRESS = Gauge("llm_jobs_shard_progress", "Fraction (0..1) of a running shard's items done.",
                       ["job", "shard"])

# ## Streams: observed by the API

CHUNK_TO_SSE = Histogram("llm_jobs_chunk_to_sse_seconds", "Time from a chunk's results being stored to its "
                         "event being sent over SSE.", buckets=FAST_BUCKETS)


def shard_done(job: str, shard: int | str) -> None:
    """Drop a finished shard's progress series (labels must not grow with every job ever run)."""
    try:
        SHARD_PROGRESS.remove(job, str(shard))
    except KeyError:
        pass
