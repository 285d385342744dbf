# # Batch LLM jobs on Modal
#
# This file is the whole Modal deployment of llm-jobs: `modal deploy modal_app.py`. It is wiring
# only. The engine, the runner and the stores live in `handler/` and `shared/`, and run the same
# way here as on RunPod or on a laptop.
#
# What you get:
# - `LLMJobs`, a GPU class that boots vLLM once per container (`@modal.enter()`), with
#   - `stream(job)`: a generator. Call it with `.remote_gen()` and you get every chunk event as
#     it is stored, then the final event;
#   - `run(job)`: a whole job, or one shard of a staged job (what the API spawns: one call per
#     shard, fanned out over up to MAX_CONTAINERS containers). You can `.spawn()` it, `.map()` it,
#     and it is retried if the container dies. It persists to the store as it goes, and a retry resumes;
#   - `drain()`: runs the Upstash queue dry on this container's engine.
# - `train(job)`, a GPU function for training jobs (a LoRA fine-tune: handler/training/run.py), with no vLLM:
#   what the API spawns for a training job. Checkpoints, adapters and merged models go to the training
#   volume, which `LLMJobs` mounts too, so an adapter trained there is served by its path at once.
# - `web`, the HTTP API (`@modal.asgi_app`): POST /v1/jobs spawns `run` (or `train`); status, results and
#   progress events come from the store.
# - `drain_queue`, a Cron that wakes the GPU class only when the Upstash queue has inference work, and
#   `drain_train` (a training GPU) only when training jobs wait in the queue's `train` lane.
#
# Every config value is a module constant with its reason, so tests can check them offline.

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import modal

# ## Versions
#
# Pin everything ("avoid nasty surprises"): vLLM's engine and the Python it was built for.

VLLM_VERSION = "0.32.0"
PYTHON_VERSION = "3.12"
APP_NAME = "llm-jobs"

# ## Hardware
#
# An L40S (48 GB) fits a 7-8B model in bf16 with room for a large KV cache, and it is usually
# available. An A100-80GB is the fallback: Modal tries the GPUs in order. Modal has no plain "L40".
GPU = ["L40S", "A100-80GB"]
# Training a LoRA adapter on a 7-9B base in bf16 (the default: TrainConfig) holds the frozen base (16 GB for
# 8B), the adapter with its optimizer state (well under 1 GB at r=16), and activations that grow with
# batch_size x max_seq_len: with gradient checkpointing (on by default on a GPU) the defaults, 4 x 2048, fit
# in the rest of 48 GB. So an L40S again, and the A100-80GB when none is free. Longer sequences or bigger
# batches (8k tokens, batch 8) need 80 GB: deploy with TRAIN_GPU = ["A100-80GB", "H100"] then (an H100 is
# faster too; not measured here); a 4-bit base (quantize: "4bit", QLoRA) cuts the base's share to about a
# quarter instead.
TRAIN_GPU = ["L40S", "A100-80GB"]
# Training jobs one deployment runs at once: each takes a whole GPU for hours, so this bounds the bill (more
# wait for a free slot in Modal's own queue). Per function: a deployment trains on `train` or on
# `drain_train`, as its DISPATCHER is modal or queue (see "Training").
TRAIN_MAX_CONTAINERS = 2

# Jobs one container runs at once. They share one engine, and vLLM batches their requests
# together, so a few concurrent jobs keep the GPU busy between one job's stragglers. This matches
# JOBS_PER_WORKER on RunPod.
JOBS_PER_CONTAINER = 4
# A big job is split into shards of SHARD_SIZE items, one `run` call each (shared/server/dispatch.py):
# Modal starts containers for them, at most this many at once. It bounds the GPUs one big job (or a
# burst of jobs) holds, and so the bill: 10 L40S run a 100k-item job about 10x faster than one.
MAX_CONTAINERS = 10

# ## Timeouts
#
# Booting reads the weights from the cache volume, and the first boot on a fresh volume also
# downloads them and compiles CUDA graphs: give it 20 minutes. A job may take hours (100k items),
# so a call gets up to 24 hours, Modal's maximum. A container idles 5 minutes before it scales
# down, so a burst of jobs finds the engine warm.
STARTUP_TIMEOUT_S = 20 * 60
JOB_TIMEOUT_S = 24 * 60 * 60
SCALEDOWN_WINDOW_S = 5 * 60
# `run` is retried when its container dies. A retry resumes from the store and skips the items
# already done, so it only redoes the work that was in flight.
RUN_RETRIES = 2
# A training job checkpoints every `save_steps` and may run for hours: it gets Modal's maximum too, and a
# retry (a container that died, a timeout, a store outage) resumes from its last checkpoint on the
# training volume. A short pause first, so a transient cause has passed.
TRAIN_TIMEOUT_S = 24 * 60 * 60
TRAIN_RETRIES = modal.Retries(max_retries=2, initial_delay=30.0, backoff_coefficient=2.0)
# The Cron only looks at the queue; it needs no GPU and little time.
DRAIN_SCHEDULE = "*/5 * * * *"
DRAIN_CHECK_TIMEOUT_S = 120
# The web app (the HTTP API) only validates, spawns and reads the store: many requests share one
# small CPU container. An event stream lives at most WEB_TIMEOUT_S; clients resume it with
# Last-Event-ID (the SDK does), so a long job's stream survives the cut.
WEB_TIMEOUT_S = 10 * 60
WEB_MAX_INPUTS = 100
# The API checks its own bearer keys (API_KEYS in the `llm-jobs-config` secret; it refuses to start
# without them), so a Vercel app calls it directly, with no Modal proxy token.
WEB_REQUIRES_PROXY_AUTH = False

# ## Caches on volumes
#
# Weights download once into the Hugging Face cache volume. vLLM's compile cache (torch.compile,
# CUDA graphs) lives on a second volume, so later containers skip the compile step.
HF_CACHE_PATH = "/root/.cache/huggingface"
VLLM_CACHE_PATH = "/root/.cache/vllm"
HF_CACHE_VOLUME = "llm-jobs-hf-cache"
VLLM_CACHE_VOLUME = "llm-jobs-vllm-cache"
hf_cache = modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True)
vllm_cache = modal.Volume.from_name(VLLM_CACHE_VOLUME, create_if_missing=True)
# LoRA adapters (README, "LoRA adapters"): `modal volume put llm-jobs-adapters ./my-adapter /my-adapter`, and
# ADAPTERS_DIR=/root/adapters in the `llm-jobs-config` secret serves every one there (LoRA stays off without it).
ADAPTERS_PATH = "/root/adapters"
ADAPTERS_VOLUME = "llm-jobs-adapters"
adapters = modal.Volume.from_name(ADAPTERS_VOLUME, create_if_missing=True)
# Training jobs write one directory each here (TRAINING_DIR: checkpoints, the adapter, the merged model, the
# model card). The `train` function writes and commits it; `LLMJobs` mounts it read-only and serves a
# trained adapter from the path its store record names (same path in both containers).
TRAINING_PATH = "/root/training"
TRAINING_VOLUME = "llm-jobs-training"
training = modal.Volume.from_name(TRAINING_VOLUME, create_if_missing=True)
training_read_only = training.with_mount_options(read_only=True)
VOLUMES = {HF_CACHE_PATH: hf_cache, VLLM_CACHE_PATH: vllm_cache, ADAPTERS_PATH: adapters,
           TRAINING_PATH: training_read_only}
# The training function needs the base model's weights (the same HF cache) and the training volume; vLLM's
# compile cache and the served adapters are no business of its.
TRAIN_VOLUMES = {HF_CACHE_PATH: hf_cache, TRAINING_PATH: training}

# ## Secrets
#
# Create them once with `modal secret create` (see the README):
# - `llm-jobs-supabase`: SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY (or DATABASE_URL);
# - `llm-jobs-upstash`: UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN.
# - `llm-jobs-config`: MODEL_NAME and any other Settings field (see .env.example).
SECRET_NAMES = ["llm-jobs-supabase", "llm-jobs-upstash", "llm-jobs-config"]
SECRETS = [modal.Secret.from_name(name) for name in SECRET_NAMES]

# ## The image
#
# vLLM from PyPI, then this package's server, `gpu` and `evals` extras (eval runs are scored where they run),
# and `train` and `train-gpu` (trl, peft, datasets; bitsandbytes for a 4-bit base), whose pins come from
# pyproject.toml. One image for every function: the trainer uses the torch and transformers vLLM brought.
# The environment points the caches at the volumes. Settings reads HF_HOME and VLLM_CACHE_ROOT from there
# and hands them to vLLM.
ROOT = Path(__file__).parent
IMAGE_ENV = {
    "TASKS_DIR": "/root/tasks",  # the named tasks, added below (the package runs from site-packages)
    "HF_HOME": HF_CACHE_PATH,
    "VLLM_CACHE_ROOT": VLLM_CACHE_PATH,
    "JOBS_PER_WORKER": str(JOBS_PER_CONTAINER),
    "TRAINING_DIR": TRAINING_PATH,  # where training writes, and where LLMJobs finds what it wrote
}
# The inference class never trains: vLLM holds its GPU's memory (a training job sent there is refused).
# Set on the class, after the secrets, so a TRAIN_JOBS in `llm-jobs-config` cannot turn it on.
INFERENCE_ENV = {"TRAIN_JOBS": "false"}
image = (
    modal.Image.debian_slim(python_version=PYTHON_VERSION)
    # vLLM first, in its own layer: editing pyproject.toml does not reinstall it
    .uv_pip_install(f"vllm=={VLLM_VERSION}")
    .pip_install_from_pyproject(str(ROOT / "pyproject.toml"),
                                optional_dependencies=["stores", "cli", "server", "gpu", "evals", "train", "train-gpu"])
    .env(IMAGE_ENV)
    .add_local_python_source("handler", "shared")
    .add_local_dir(ROOT / "tasks", "/root/tasks")
)

app = modal.App(APP_NAME)


# ## The GPU class


@app.cls(
    image=image,
    gpu=GPU,
    volumes=VOLUMES,
    secrets=SECRETS,
    env=INFERENCE_ENV,
    timeout=JOB_TIMEOUT_S,
    startup_timeout=STARTUP_TIMEOUT_S,
    scaledown_window=SCALEDOWN_WINDOW_S,
    retries=RUN_RETRIES,
    max_containers=MAX_CONTAINERS,
)
@modal.concurrent(max_inputs=JOBS_PER_CONTAINER)
class LLMJobs:
    @modal.enter()
    def boot(self) -> None:
        """Boot vLLM once per container, before the first input (heavy imports stay in here)."""
        from handler.logs import setup_logging
        from handler.service import JobService
        from shared.contracts.settings import get_settings

        setup_logging(get_settings())
        self.service = JobService.boot(get_settings())

    async def _service(self):
        # `.local()` calls of async methods skip @modal.enter() (Modal runs only __aenter__ there),
        # so boot on first use; in a container `boot` already ran and this returns at once.
        if getattr(self, "service", None) is None:
            from handler.service import JobService
            from shared.contracts.settings import get_settings

            self.service = await JobService.start(get_settings())
        # an adapter trained since this container mounted the training volume is there once it reloads
        from handler.platforms.modal import reload_quietly

        await reload_quietly(_in_container(training_read_only.reload), "training")
        return self.service

    @modal.method()
    async def stream(self, job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every chunk event as it is stored, then the final event (use `.remote_gen()`)."""
        from handler.platforms.modal import stream_events

        async for event in stream_events(await self._service(), job, default_id=modal.current_function_call_id()):
            yield event

    @modal.method()
    async def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run a job to its end, storing results as it goes; returns the final event.

        Invalid input returns a failed final event (retrying could not help). A job that fails
        (the engine died) raises, so Modal retries it, and the retry resumes from the store.
        """
        from handler.platforms.modal import run_to_end

        # a job with no id is named after its FunctionCall: the id a spawner holds, stable across retries
        return await run_to_end(await self._service(), job, default_id=modal.current_function_call_id())

    @modal.method()
    async def drain(self) -> dict[str, Any]:
        """Run queued jobs on this container's engine until the queue is empty."""
        from handler.platforms.modal import drain_queue as drain

        return await drain(await self._service())


# ## Training
#
# A training job (one shard, always) runs on a GPU of its own, with no vLLM: the trainer (trl's SFTTrainer
# and peft, in a thread) on TRAIN_GPU. After every checkpoint, and at the end whatever the end, the training
# volume is committed: Modal volumes show a container's writes to others only then, so a retry on a fresh
# container resumes from the last checkpoint, and LLMJobs sees the adapter. On `train`, a `failed` outcome
# raises, so Modal retries the call (TRAIN_RETRIES); a cancel records `cancelled`, its checkpoint kept.
#
# With DISPATCHER=modal a training job does not go through the Upstash queue: the API spawns `train`, and
# Modal's own queue holds the call until one of TRAIN_MAX_CONTAINERS is free. With DISPATCHER=queue (an API
# elsewhere, Modal as the GPUs) training jobs wait in the queue's `train` lane, which LLMJobs.drain never
# takes (its worker has no trainer): the Cron below spawns `drain_train` for them, a worker with a trainer
# and no engine on the same GPU and volumes, which takes that lane only. There the queue retries a failed
# job (leases, attempts, dead letters), so `drain_train` has no Modal retries of its own.


def _in_container(call):
    """`call.aio` in a Modal container; None in `.local()` runs (tests, a laptop), which mount no volume."""
    return None if modal.is_local() else call.aio


@app.function(
    image=image,
    gpu=TRAIN_GPU,
    volumes=TRAIN_VOLUMES,
    secrets=SECRETS,
    timeout=TRAIN_TIMEOUT_S,
    retries=TRAIN_RETRIES,
    max_containers=TRAIN_MAX_CONTAINERS,
)
async def train(job: dict[str, Any]) -> dict[str, Any]:
    """Run a training job to its end (checkpoints and the adapter on the training volume); returns the final
    event. Input that is no training job returns a failed final event; a job that fails raises (retried)."""
    from handler.logs import setup_logging
    from handler.platforms.modal import train_to_end
    from shared.contracts.settings import get_settings

    settings = get_settings()
    setup_logging(settings)
    return await train_to_end(settings, job, default_id=modal.current_function_call_id(),
                              commit=_in_container(training.commit), reload=_in_container(training.reload))


@app.function(
    image=image,
    gpu=TRAIN_GPU,
    volumes=TRAIN_VOLUMES,
    secrets=SECRETS,
    timeout=TRAIN_TIMEOUT_S,
    max_containers=TRAIN_MAX_CONTAINERS,
)
async def drain_train() -> dict[str, Any]:
    """Run the queue's `train` lane dry, one training job at a time (what the Cron spawns)."""
    from handler.logs import setup_logging
    from handler.platforms.modal import drain_train_lane
    from shared.contracts.settings import get_settings

    settings = get_settings()
    setup_logging(settings)
    return await drain_train_lane(settings, commit=_in_container(training.commit),
                                  reload=_in_container(training.reload))


# ## The web app
#
# The HTTP API (shared/server/api), with DISPATCHER=modal: a submitted job is spawned on `LLMJobs.run`,
# a training job on `train`; their status, results and progress events come from the store they write to.


def web_app(dispatcher=None):
    """The ASGI app; tests pass a dispatcher that runs jobs locally instead of spawning them."""
    from shared.contracts.settings import get_settings
    from shared.server.api import create_public_app

    settings = get_settings().model_copy(update={"dispatcher": "modal"})
    return create_public_app(settings, dispatcher=dispatcher or _spawner())


def _spawner():
    from shared.server.dispatch import ModalDispatcher

    return ModalDispatcher(LLMJobs, train)


@app.function(image=image, secrets=SECRETS, timeout=WEB_TIMEOUT_S)
@modal.concurrent(max_inputs=WEB_MAX_INPUTS)
@modal.asgi_app(requires_proxy_auth=WEB_REQUIRES_PROXY_AUTH)
def web():
    return web_app()


# ## The schedule
#
# Every few minutes, from a small CPU container: tick the scheduler (scheduled eval runs due now are
# submitted, once per slot however many ticks), then look at the Upstash queue. Only when it has
# inference work does the GPU class wake up to drain it, and only when training jobs wait in the `train`
# lane does `drain_train` start on a training GPU (one call waiting for a container at a time), so an idle
# queue costs no GPU time.


@app.function(image=image, secrets=SECRETS, schedule=modal.Cron(DRAIN_SCHEDULE), timeout=DRAIN_CHECK_TIMEOUT_S)
async def drain_queue() -> dict[str, Any]:
    from handler.platforms.modal import check_queue
    from shared.contracts.settings import get_settings
    from shared.server.scheduler import tick_once

    async def spawn_drain() -> str:
        return (await LLMJobs().drain.spawn.aio()).object_id

    async def spawn_drain_train() -> str:
        return (await drain_train.spawn.aio()).object_id

    async def train_backlog() -> int:  # drain_train calls waiting for a container
        return (await drain_train.get_current_stats.aio()).backlog

    settings = get_settings()
    scheduled = await tick_once(settings)  # scheduled eval runs now due go on the queue (once per slot)
    checked = await check_queue(settings, drain=spawn_drain, drain_train=spawn_drain_train,
                                train_backlog=train_backlog)
    return {"scheduled": len(scheduled), **checked}
