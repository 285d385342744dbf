"""The job planner (`llm-jobs plan`, docs/architecture.md "Planning"): which GPU and platform to run a job on,
how long it takes and what it costs, decided before anything runs.

Layer 1: pydantic and the standard library only (no tokenizer, no engine), so the API can plan a job as cheaply
as it validates one. What needs a tokenizer (counting a job's prompt tokens) lives in the handler layer
(handler/engine/tokens.py) and hands this package a `TokenCounts`.

- `tables.py`: the dated data files beside it (`gpus.json`, `prices.json`, `calibration.json`), each row with its
  source and kind (measured here, published by a vendor, or derived by a stated formula), and their loaders.
- `specs.py`: a model's shape (`ModelSpec`) from its config.json or a small built-in table.
- `fit.py`: does it fit: weights, KV cache, tensor parallelism, concurrency.
- `roofline.py`: the formula behind the `derived` calibration rows, and the command that rewrites them.
- `plan.py`: `make_plan`: every GPU and platform, timed and priced, ranked, with a recommendation.
"""
