# llm-jobs on RunPod serverless: CUDA vLLM, this package, and weights from the network volume
# (or baked into the image). Build:
#   docker build -t llm-jobs .                                                   # weights at start
#   docker build -t llm-jobs --build-arg MODEL_NAME=org/model --build-arg MODEL_REVISION=<commit> .  # baked
# The base image is vLLM's own CUDA build, pinned to the vLLM release the package pins.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}

# Optional: a Hugging Face repo to bake in. Empty means "read MODEL_NAME at start" (the network
# volume, RunPod's cached models, or the hub).
ARG MODEL_NAME=""
ARG MODEL_REVISION=""
# RunPod mounts network volumes as root. If your volume is not writable by uid 1000, build with
# --build-arg RUN_AS=root (or bake the weights in, which needs no writes at start).
ARG RUN_AS=llmjobs

# Every variable here is a Settings field (see .env.example); the endpoint's env vars override them.
# HF_HOME on the volume puts the HF cache where RunPod's cached models live
# (/runpod-volume/huggingface-cache/hub); vLLM's compile cache goes to the volume too.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    HF_HOME=/runpod-volume/huggingface-cache \
    VLLM_CACHE_ROOT=/runpod-volume/vllm-cache \
    CACHE_DIR=/runpod-volume/llm-jobs \
    BAKED_MODEL_DIR=/opt/llm-jobs/model \
    HEALTH_FILE=/tmp/llm-jobs.health \
    TASKS_DIR=/app/tasks \
    TRAINING_DIR=/runpod-volume/llm-jobs/training \
    MODEL_NAME=${MODEL_NAME} \
    MODEL_REVISION=${MODEL_REVISION}
# LoRA adapters (README, "LoRA adapters") are off unless the endpoint sets them: ADAPTERS_DIR=/runpod-volume/adapters
# serves every PEFT adapter in that volume directory (one a subdirectory); ENABLE_LORA, MAX_LORAS, MAX_LORA_RANK
# and MAX_CPU_LORAS are Settings fields like the rest.
# Training jobs (README, "Fine-tuning") write checkpoints, adapters and merged models under TRAINING_DIR, on the
# network volume: a re-run resumes from its checkpoint, and an inference endpoint on the same volume serves the
# adapters by their path. A training endpoint is this same image with INFERENCE_JOBS=false (no vLLM boots: the
# GPU is the trainer's), JOBS_PER_WORKER=1, an execution timeout as long as its training, and a 48 GB GPU (L40S)
# for a 7-9B LoRA (README, "Fine-tuning"). The API sends training jobs to it when RUNPOD_TRAIN_ENDPOINT_ID names
# it. The inference endpoint sets TRAIN_JOBS=false.

WORKDIR /app

# The package with the gpu extra, and train and train-gpu for training jobs (trl, peft, datasets, bitsandbytes);
# pyproject.toml pins every dependency (hence DL3013 ignored: the versions are there), and vllm==0.32.0 is
# already in the base image, so pip keeps it.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY handler ./handler
# hadolint ignore=DL3013
RUN python3 -m pip install ".[stores,cli,server,gpu,evals,train,train-gpu]"

# Bake the weights in when MODEL_NAME is given (read at start with the hub offline). A layer of
# its own: changing the model does not reinstall the package.
# hadolint ignore=DL3059
RUN if [ -n "${MODEL_NAME}" ]; then \
        python3 -m handler.engine.bake --model "${MODEL_NAME}" --revision "${MODEL_REVISION}" --to /opt/llm-jobs/model; \
    fi

COPY runpod_worker.py ./
# the named tasks (tasks/*.yaml): read from TASKS_DIR, since the package runs from site-packages
COPY tasks ./tasks

RUN useradd --create-home --uid 1000 llmjobs \
    && mkdir -p /opt/llm-jobs \
    && chown -R llmjobs /opt/llm-jobs
USER ${RUN_AS}

# Healthy while the worker beats its health file (it stops when the engine dies). The start
# period covers the first boot on an empty volume: download plus compile.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20m --retries=3 \
    CMD ["python3", "-m", "handler.health", "--max-age", "60"]

# The base image's entrypoint is `vllm serve`; this image runs the RunPod worker instead.
ENTRYPOINT []
CMD ["python3", "-u", "runpod_worker.py"]
