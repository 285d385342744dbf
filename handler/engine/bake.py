"""Bake a model's weights into a container image, and find them again at start.

The Dockerfile runs, at build time:

    python -m handler.engine.bake --model ORG/NAME [--revision REV] --to /opt/llm-jobs/model

which downloads the weights into a plain directory and writes a marker naming the model. At
start, `baked_model(dir, model_name)` returns that directory when it holds the model asked
for, and the engine loads it with the hub offline: no download, no network at boot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MARKER = ".llm-jobs-baked.json"
#: what vLLM needs to load a model; everything else in a repo (other formats, images) is skipped
PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja", "tokenizer*"]


def baked_model(directory: Path | None, model_name: str | None) -> Path | None:
    """The baked directory if it holds `model_name` (or any model, when none is named)."""
    if directory is None or not (directory / MARKER).is_file():
        return None
    baked = json.loads((directory / MARKER).read_text())
    if model_name and baked.get("model") != model_name:
        return None
    return directory


def bake(model: str, dest: Path, revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download

    dest.mkdir(parents=True, exist_ok=True)
    snapshot_download(model, revision=revision or None, local_dir=dest, allow_patterns=PATTERNS)
    (dest / MARKER).write_text(json.dumps({"model": model, "revision": revision or None}))
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face repo id")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (pin it)")
    parser.add_argument("--to", type=Path, required=True, help="directory to write the weights to")
    args = parser.parse_args(argv)
    print(f"baked {args.model} into {bake(args.model, args.to, args.revision)}")


if __name__ == "__main__":
    main()
