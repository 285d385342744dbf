"""Perplexity of the held-out split: how surprised a model is by the assistant's tokens.

exp(mean negative log-likelihood) over every assistant token of the examples (token-weighted, the
prompt's tokens are context only), the same tokens the loss trains on. Measured on the base before
training and on base + adapter after it, with the same examples, so the two compare.

Blocking torch work: call it in a thread.
"""

from __future__ import annotations

import math
from typing import Any

from handler.training.tokenize import Encoded

#: the most held-out examples measured (the first ones): enough for a stable figure, bounded in time
MAX_EXAMPLES = 1000


def perplexity(model: Any, rows: list[Encoded], *, max_len: int, batch_size: int = 8, pad_id: int = 0) -> float:
    """exp of the mean NLL of `rows`' assistant tokens (each example cut at `max_len` tokens)."""
    import torch

    rows = [r for r in rows[:MAX_EXAMPLES] if any(r.assistant_masks[1:max_len])]
    if not rows:
        raise ValueError("no held-out example has assistant tokens to measure")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    try:
        with torch.no_grad():
            for k in range(0, len(rows), batch_size):
                batch = rows[k:k + batch_size]
                width = max(min(len(r.input_ids), max_len) for r in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attn = torch.zeros((len(batch), width), dtype=torch.long)
                target = torch.zeros((len(batch), width), dtype=torch.bool)
                for i, r in enumerate(batch):
                    n = min(len(r.input_ids), max_len)
                    ids[i, :n] = torch.tensor(r.input_ids[:n])
                    attn[i, :n] = 1
                    target[i, :n] = torch.tensor(r.assistant_masks[:n], dtype=torch.bool)
                ids, attn, target = ids.to(device), attn.to(device), target.to(device)
                logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
                logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                keep = target[:, 1:]
                nll -= float(logp[keep].sum())
                count += int(keep.sum())
    finally:
        model.train(was_training)
    return math.exp(nll / count)
