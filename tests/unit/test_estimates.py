"""Estimates from measured throughput (shared/server/estimates.py): pooled over the model's last jobs,
the configured default until there are any, read from the store at most once per cache period."""

from __future__ import annotations

from shared.contracts.models import Summary
from shared.server.estimates import Estimator, Throughput, pooled


def summary(ran: int, elapsed_s: float, *, skipped: int = 0, failed: int = 0) -> Summary:
    return Summary(total=ran + skipped, completed=ran + skipped - failed, failed=failed, skipped=skipped,
                   elapsed_s=elapsed_s, items_per_s=ran / elapsed_s if elapsed_s else 0.0, prompt_tokens=0,
                   completion_tokens=0, tokens_per_s=0.0)


def test_jobs_are_pooled_by_items_over_seconds():
    # 100 items in 10 s and 20 in 10 s: 120 / 20 = 6 items/s (the mean of the rates would say 6 too, but not
    # for 100 in 10 s and 20 in 1 s: 120 / 11, not 15)
    assert pooled([summary(100, 10), summary(20, 10)], 5.0) == Throughput(6.0, 2)
    assert pooled([summary(100, 10), summary(20, 1)], 5.0).items_per_s == 120 / 11


def test_resumed_items_and_tiny_jobs_do_not_count():
    # a resumed job ran 10 of its 1,000 items here: 10 in 5 s, not 1,000; failures count (they ran)
    assert pooled([summary(10, 5, skipped=990, failed=3)], 5.0) == Throughput(2.0, 1)
    assert pooled([summary(3, 0.1)], 5.0) == Throughput(5.0, 0)  # under MIN_ITEMS: its start is all there is
    assert pooled([summary(50, 0.0)], 5.0) == Throughput(5.0, 0)
    assert pooled([], 7.5) == Throughput(7.5, 0)


def test_an_estimate_is_total_over_the_rate():
    assert Throughput(4.0, 3).seconds(1000) == 250.0


class Store:
    def __init__(self):
        self.reads: list[str | None] = []
        self.summaries = {"m": [summary(40, 10)]}

    async def finished_summaries(self, model, task=None, *, limit=20):
        self.reads.append(model)
        return self.summaries.get(model, [])[:limit]


async def test_the_store_is_read_once_per_cache_period_and_model():
    store, now = Store(), [0.0]
    est = Estimator(store, default_items_per_s=5.0, sample_jobs=20, cache_s=60, clock=lambda: now[0])
    assert await est.throughput("m") == Throughput(4.0, 1)
    assert await est.throughput("n") == Throughput(5.0, 0)
    store.summaries["m"].append(summary(60, 10))
    now[0] = 59.0
    assert await est.throughput("m") == Throughput(4.0, 1)  # cached
    now[0] = 61.0
    assert await est.throughput("m") == Throughput(5.0, 2)  # 100 items in 20 s
    assert store.reads == ["m", "n", "m"]
