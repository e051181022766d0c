"""Memory planner (rairl/plan.py): counts against real modules, monotonicity, presets, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from rairl.plan import (
    LINEAR_NAMES,
    PlanConfig,
    estimate,
    format_plan,
    lora_param_count,
    param_counts,
    qwen25_0p5b_config,
    qwen25_1p5b_config,
    read_shape,
    write_config,
)

TINY_QWEN2 = {
    "model_type": "qwen2",
    "hidden_size": 48,
    "intermediate_size": 80,  # not a multiple of hidden
    "num_hidden_layers": 3,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "vocab_size": 101,
}
TINY_LLAMA = {**TINY_QWEN2, "model_type": "llama", "num_key_value_heads": 6}


def _tiny_model(config: dict, tied: bool) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.AutoConfig.for_model(**config, tie_word_embeddings=tied)
    return transformers.AutoModelForCausalLM.from_config(hf_config)


@pytest.mark.parametrize("config", [TINY_QWEN2, TINY_LLAMA], ids=["qwen2", "llama"])
@pytest.mark.parametrize("tied", [True, False])
def test_param_count_matches_transformers(tmp_path: Path, config: dict, tied: bool) -> None:
    model = _tiny_model(config, tied)
    write_config({**config, "tie_word_embeddings": tied}, tmp_path)
    expected = sum(p.numel() for p in model.parameters())  # tied weights counted once
    assert param_counts(read_shape(tmp_path))["total"] == expected


def test_llama_attention_bias_counted(tmp_path: Path) -> None:
    config = {**TINY_LLAMA, "attention_bias": True, "mlp_bias": True}
    model = _tiny_model(config, tied=True)
    write_config({**config, "tie_word_embeddings": True}, tmp_path)
    assert param_counts(read_shape(tmp_path))["total"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("targets", [LINEAR_NAMES, ("q_proj", "v_proj")])
def test_lora_count_matches_peft(tmp_path: Path, targets: tuple[str, ...]) -> None:
    peft = pytest.importorskip("peft")
    model = _tiny_model(TINY_QWEN2, tied=True)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(targets))
    peft_model = peft.get_peft_model(model, lora)
    expected = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    write_config(TINY_QWEN2, tmp_path)
    assert lora_param_count(read_shape(tmp_path), 4, targets) == expected


@pytest.fixture(scope="module")
def qwen15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(qwen25_1p5b_config(), tmp_path_factory.mktemp("qwen15"))


def test_published_param_counts(tmp_path: Path, qwen15: Path) -> None:
    # Totals from the Qwen2.5 model cards' safetensors metadata.
    write_config(qwen25_0p5b_config(), tmp_path)
    assert param_counts(read_shape(tmp_path))["total"] == 494_032_768
    assert param_counts(read_shape(qwen15))["total"] == 1_543_714_304


def test_more_new_tokens_more_memory(qwen15: Path) -> None:
    short = estimate(PlanConfig(model=qwen15, max_new_tokens=256))
    long = estimate(PlanConfig(model=qwen15, max_new_tokens=1024))
    for key in ("activations", "kv_cache", "total"):
        assert long[key] > short[key], key


def test_nf4_weights_below_bf16_below_fp32(qwen15: Path) -> None:
    weights = [
        estimate(PlanConfig(model=qwen15, quantization=q))["weights"]
        for q in ("nf4", "bf16", "fp32")
    ]
    assert weights[0] < weights[1] < weights[2]


def test_checkpointing_and_reward_adapter_cost_memory(qwen15: Path) -> None:
    base = estimate(PlanConfig(model=qwen15))
    no_ckpt = estimate(PlanConfig(model=qwen15, gradient_checkpointing=False))
    no_reward = estimate(PlanConfig(model=qwen15, reward_adapter=False))
    assert no_ckpt["activations"] > base["activations"]
    assert no_reward["adapters_and_optimizer"] < base["adapters_and_optimizer"]


def test_total_is_peak_of_phases(qwen15: Path) -> None:
    est = estimate(PlanConfig(model=qwen15))
    shared = est["weights"] + est["adapters_and_optimizer"] + est["cuda_overhead"]
    generation = est["kv_cache"] + est["generation_transient"]
    update = est["activations"] + est["logprob_chunks"]
    assert est["total"] == pytest.approx(shared + max(generation, update))
    assert est["total"] < sum(v for k, v in est.items() if k != "total")


def test_1p5b_preset_fits_24gb(qwen15: Path) -> None:
    cfg = PlanConfig(model=qwen15)
    text = format_plan(cfg, estimate(cfg))
    assert text.splitlines()[-1] == "fits in 24 GB"


def test_does_not_fit_when_tiny_gpu(qwen15: Path) -> None:
    cfg = PlanConfig(model=qwen15, gpu_gb=1)
    assert format_plan(cfg, estimate(cfg)).splitlines()[-1] == "does not fit in 1 GB"


def test_accepts_config_json_file(qwen15: Path) -> None:
    assert estimate(PlanConfig(model=qwen15)) == estimate(PlanConfig(model=qwen15.parent))


def test_missing_field_named(tmp_path: Path) -> None:
    config = qwen25_0p5b_config()
    del config["intermediate_size"]
    path = write_config(config, tmp_path)
    with pytest.raises(ValueError, match="intermediate_size") as info:
        estimate(PlanConfig(model=tmp_path))
    assert str(path) in str(info.value)


def test_kv_heads_default_to_heads(tmp_path: Path) -> None:
    config = {k: v for k, v in TINY_QWEN2.items() if k != "num_key_value_heads"}
    write_config(config, tmp_path)
    assert read_shape(tmp_path).kv_heads == TINY_QWEN2["num_attention_heads"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("gpu_gb", 0),
        ("group_size", 0),
        ("max_new_tokens", -1),
        ("minibatch_size", 1.5),
        ("quantization", "int8"),
        ("target_modules", ("q_proj", "lm_head")),
        ("target_modules", ()),
    ],
)
def test_invalid_field_named(qwen15: Path, field: str, value: object) -> None:
    cfg = PlanConfig(model=qwen15)
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(cfg, **{field: value})


def test_missing_model_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model"):
        PlanConfig(model=tmp_path / "nowhere")


def test_write_config_roundtrip(tmp_path: Path) -> None:
    path = write_config(qwen25_0p5b_config(), tmp_path / "new")
    assert json.loads(path.read_text()) == qwen25_0p5b_config()


def test_rollout_engines_add_their_merged_copy(qwen15: Path) -> None:
    hf = estimate(PlanConfig(model=str(qwen15)))
    merged = estimate(PlanConfig(model=str(qwen15), engine="hf_merged"))
    vllm_cfg = PlanConfig(model=str(qwen15), engine="vllm", gpu_memory_share=0.3)
    vllm = estimate(vllm_cfg)
    copy = param_counts(read_shape(str(qwen15)))["total"] * 2 / 2**30  # bf16
    assert hf["engine_weights"] == 0 and merged["engine_weights"] == pytest.approx(copy) == vllm["engine_weights"]
    assert merged["total"] == pytest.approx(hf["total"] + copy)  # kept for the whole run
    # vllm sleeps through the update: its weights and reserved KV cache count in the generation phase only
    assert vllm["kv_cache"] == pytest.approx(max(hf["kv_cache"], 0.3 * 24 - copy))
    assert vllm["engine_share_needed"] == pytest.approx((copy + hf["kv_cache"]) / 24)
    assert "rollout engine vllm" in format_plan(vllm_cfg, vllm) and "rollout engine" not in format_plan(PlanConfig(model=str(qwen15)), hf)
    with pytest.raises(ValueError, match="engine must be one of"):
        PlanConfig(model=str(qwen15), engine="tgi")
