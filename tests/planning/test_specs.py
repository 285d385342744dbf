"""Model shapes (shared/planning/specs.py): the built-in table, a config.json, and the parameter rule."""

from __future__ import annotations

import pytest

from shared.planning.specs import BUILTIN, UnknownModel, builtin, count_params, from_config, from_dir, resolve


@pytest.mark.parametrize(("name", "published"), [
    ("Llama-3.1-8B", 8.03e9), ("Llama-3.1-70B", 70.6e9), ("Gemma-2-9B", 9.24e9), ("Gemma-2-27B", 27.2e9),
    ("Qwen2.5-7B", 7.62e9), ("Qwen2.5-72B", 72.7e9), ("Mistral-7B", 7.25e9), ("SmolLM2-135M", 135e6)])
def test_the_parameter_rule_gives_the_published_counts(name, published):
    assert builtin(name).params == pytest.approx(published, rel=0.005)


def test_llama_8b_by_hand():
    # embeddings and output head (untied): 2 x 128256 x 4096; per layer: q and o 4096 x 4096 each, k and v
    # 4096 x 1024 each, three MLP matrices 4096 x 14336, two norms; 32 layers; the final norm
    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert builtin("Llama-3.1-8B").params == 2 * 128256 * 4096 + 32 * per_layer + 4096 == 8_030_261_248


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Meta-Llama-3.1-8B-Instruct",
                                  "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "/models/llama-3.1-8b"])
def test_hub_ids_and_paths_find_the_table(name):
    assert builtin(name) is BUILTIN["llama-3.1-8b"]


def test_an_unknown_model_is_named_with_the_known_ones():
    with pytest.raises(UnknownModel) as e:
        builtin("acme/Wonder-13B")
    assert "acme/Wonder-13B" in str(e.value) and "Llama-3.1-70B" in str(e.value)


def test_the_embedded_models_config_matches_the_table(model_dir):
    spec = from_dir(model_dir)
    table = BUILTIN["smollm2-135m"]
    assert spec.model_dump(exclude={"name", "dtype"}) == table.model_dump(exclude={"name", "dtype"})
    assert spec.params == 134_515_008
    assert resolve("SmolLM2-135M-Instruct", model_dir).name == "SmolLM2-135M"


def test_a_config_with_quantization_text_config_and_defaults():
    cfg = {"text_config": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "vocab_size": 100,
                           "max_position_embeddings": 512, "intermediate_size": 128},
           "quantization_config": {"quant_method": "awq", "bits": 4}}
    spec = from_config(cfg, "tiny")
    assert (spec.kv_heads, spec.head_dim, spec.quantization) == (4, 16, "awq")
    assert spec.params == count_params(layers=2, hidden=64, heads=4, kv_heads=4, head_dim=16, vocab=100,
                                       intermediate=128, tie_embeddings=False)
    with pytest.raises(ValueError, match="vocab_size"):
        from_config({k: v for k, v in cfg["text_config"].items() if k != "vocab_size"}, "broken")
