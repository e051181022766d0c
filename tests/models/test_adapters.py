"""SharedBaseModels: one frozen (4-bit) base, LoRA adapters "policy" and "reward", reference = adapters off."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from rairl.models.adapters import REWARD, AdapterConfig, SharedBaseModels, active_adapter, load_base  # noqa: E402
from rairl.models.batch import TokenBatch, collate  # noqa: E402
from rairl.models.lm import per_token_logprobs  # noqa: E402

torch.set_num_threads(1)
NF4 = AdapterConfig(lora_rank=4, lora_alpha=8)


def _batch(vocab: int = 100, seed: int = 0) -> TokenBatch:
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(4, vocab, (n,), generator=g).tolist() for n in (5, 3, 7)]
    completions = [torch.randint(4, vocab, (n,), generator=g).tolist() for n in (6, 9, 2)]
    return collate(prompts, completions, pad_id=0)


def _models(tiny_dir, cfg: AdapterConfig = NF4) -> SharedBaseModels:
    return SharedBaseModels(load_base(tiny_dir, cfg), cfg=cfg)


def _policy_step(models: SharedBaseModels, batch: TokenBatch, lr: float = 1e-2) -> None:
    opt = torch.optim.Adam(models.policy_parameters(), lr=lr)
    lp = models.policy_logprobs(batch.input_ids, batch.attention_mask)
    (-(lp * batch.completion_mask()).sum()).backward()
    opt.step()
    opt.zero_grad()


def _reward_loss(models: SharedBaseModels, batch: TokenBatch) -> torch.Tensor:
    terms = models.reward.token_terms(batch, batch.completion_mask())
    return -(terms.g_tok.sum() + terms.h_tok.sum())


def _reward_step(models: SharedBaseModels, batch: TokenBatch, lr: float = 1e-2) -> None:
    opt = torch.optim.Adam(models.reward_parameters(), lr=lr)
    _reward_loss(models, batch).backward()
    opt.step()
    opt.zero_grad()


@torch.no_grad()
def _outputs(models: SharedBaseModels, batch: TokenBatch) -> dict[str, torch.Tensor]:
    terms = models.reward.token_terms(batch, batch.completion_mask())
    return {
        "policy": models.policy_logprobs(batch.input_ids, batch.attention_mask),
        "reference": models.reference_logprobs(batch.input_ids, batch.attention_mask),
        "g": terms.g_tok, "h": terms.h_tok,
    }


def test_nf4_base_is_4bit_and_frozen(tiny_dir):
    import bitsandbytes as bnb

    base = load_base(tiny_dir, NF4)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in base.modules()) == 2 * 7  # 2 layers x 7 projections
    assert not any(p.requires_grad for p in base.parameters())


def test_reference_is_the_base_and_policy_moves_away(tiny_dir):
    batch, base = _batch(), load_base(tiny_dir, NF4)
    expected = per_token_logprobs(base, batch.input_ids, batch.attention_mask).detach()
    models = _models(tiny_dir)
    before = _outputs(models, batch)
    torch.testing.assert_close(before["reference"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(before["policy"], expected, rtol=0, atol=1e-6)  # LoRA B starts at zero
    _policy_step(models, batch)
    after = _outputs(models, batch)
    torch.testing.assert_close(after["reference"], expected, rtol=0, atol=1e-6)
    assert (after["policy"] - expected).abs().max() > 1e-3


def test_each_update_leaves_the_other_model_unchanged(tiny_dir):
    batch, models = _batch(), _models(tiny_dir)
    _policy_step(models, batch)  # both adapters nonzero, so every LoRA weight gets a gradient below
    _reward_step(models, batch)
    before = _outputs(models, batch)
    _policy_step(models, batch)
    mid = _outputs(models, batch)
    for key in ("g", "h", "reference"):
        torch.testing.assert_close(mid[key], before[key], rtol=0, atol=1e-6)
    assert (mid["policy"] - before["policy"]).abs().max() > 1e-3
    _reward_step(models, batch)
    after = _outputs(models, batch)
    for key in ("policy", "reference"):
        torch.testing.assert_close(after[key], mid[key], rtol=0, atol=1e-6)
    assert (after["g"] - mid["g"]).abs().max() > 1e-3


def test_every_trainable_tensor_gets_a_gradient_from_its_own_loss_only(tiny_dir):
    batch, models = _batch(), _models(tiny_dir)
    _policy_step(models, batch)
    _reward_step(models, batch)
    policy, reward = models.policy_parameters(), models.reward_parameters()
    assert len(policy) == len(reward) - 4 == 2 * 2 * 7  # A and B per target; reward adds 2 heads x (w, b)
    lp = models.policy_logprobs(batch.input_ids, batch.attention_mask)
    (-(lp * batch.completion_mask()).sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy)
    assert all(p.grad is None for p in reward)
    for p in policy:
        p.grad = None
    _reward_loss(models, batch).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in reward)
    assert all(p.grad is None for p in policy)


def test_no_grad_eval_forward_does_not_change_later_gradients(tiny_dir):
    # bitsandbytes' CPU inference repacking would route later forwards through an op
    # without autograd (see load_base); gradients must be the same before and after.
    batch, models = _batch(), _models(tiny_dir)
    _policy_step(models, batch)

    def grads() -> list[torch.Tensor]:
        lp = models.policy_logprobs(batch.input_ids, batch.attention_mask)
        (-(lp * batch.completion_mask()).sum()).backward()
        out = [p.grad.clone() for p in models.policy_parameters()]
        for p in models.policy_parameters():
            p.grad = None
        return out

    before = grads()
    models.train(False)
    _outputs(models, batch)
    for a, b in zip(before, grads(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_checkpointed_backward_recomputes_under_the_forward_adapter(tiny_dir):
    # fp32 base: the two paths then agree exactly (NF4's bf16 matmuls differ by ~1 bf16 ulp
    # between the plain and the recomputed forward); recomputing under the wrong adapter
    # gave gradient errors of the order of the gradients themselves.
    batch, cfg = _batch(), AdapterConfig(quantization="fp32", lora_rank=4, lora_alpha=8)
    plain = _models(tiny_dir, cfg)
    _policy_step(plain, batch)
    _reward_step(plain, batch)
    ckpt = _models(tiny_dir, dataclasses.replace(cfg, gradient_checkpointing=True))
    ckpt.load_state_dict({k: {n: v.clone() for n, v in d.items()} for k, d in plain.state_dict().items()})
    grads = []
    for models in (plain, ckpt):
        models.train()
        lp = models.policy_logprobs(batch.input_ids, batch.attention_mask)
        with active_adapter(models.model, REWARD):  # backward while the other adapter is active
            (-(lp * batch.completion_mask()).sum()).backward()
        grads.append([p.grad for p in models.policy_parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a)


def test_state_dict_and_save_pretrained_round_trip(tiny_dir, tmp_path):
    batch, models = _batch(), _models(tiny_dir)
    _policy_step(models, batch)
    _reward_step(models, batch)
    state = models.state_dict()
    assert all("lora_" in n for n in state["policy"])  # trainable state only, no base weights
    expected = _outputs(models, batch)
    fresh = _models(tiny_dir)
    fresh.load_state_dict({k: {n: v.clone() for n, v in d.items()} for k, d in state.items()})
    models.save_pretrained(tmp_path / "out")
    reloaded = SharedBaseModels.from_pretrained(tiny_dir, tmp_path / "out")
    for other in (fresh, reloaded):
        got = _outputs(other, batch)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="missing key"):
        fresh.load_state_dict({"policy": {}, "reward": state["reward"]})


def test_sample_uses_the_policy_adapter_and_restores(tiny_dir):
    models = _models(tiny_dir)
    models.model.set_adapter(REWARD)
    out = models.sample([[5, 6, 7], [8, 9]], n_samples=2, max_new_tokens=3, eos_id=2, pad_id=0, progress=False)
    assert [len(o) for o in out] == [2, 2] and all(0 < len(c) <= 3 for o in out for c in o)
    assert models.model.active_adapter == REWARD


def test_output_embedding_targets_refused(tiny_dir):
    with pytest.raises(ValueError, match="lm_head"):
        AdapterConfig(target_modules=("q_proj", "lm_head"))
    cfg = AdapterConfig(quantization="fp32", target_modules=("q_proj", "embed_tokens"))  # tied to the LM head
    with pytest.raises(ValueError, match="output embedding"):
        _models(tiny_dir, cfg)
    with pytest.raises(ValueError, match="quantization"):
        AdapterConfig(quantization="int8")


def test_flash_attention_without_flash_attn_names_the_extra(tiny_dir):
    try:
        import flash_attn  # noqa: F401

        pytest.skip("flash-attn is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r"rairl\[gpu\]"):
        load_base(tiny_dir, AdapterConfig(attn_implementation="flash_attention_2"))


def test_missing_lora_extra_is_named(tiny_dir, monkeypatch):
    base = load_base(tiny_dir, AdapterConfig(quantization="fp32"))
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"pip install 'rairl\[lora\]'"):
        SharedBaseModels(base)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ImportError, match=r"pip install 'rairl\[lora\]'"):
        load_base(tiny_dir, NF4)


def test_one_airl_iteration_trains_both_adapters_and_leaves_the_base(tiny_dir):
    import random

    import bitsandbytes as bnb

    from rairl.airl.negatives import discriminator_records
    from rairl.data import TaskConfig, make_splits
    from rairl.models.batch import encode_completions, encode_prompts
    from rairl.models.tokenizer import load_tokenizer
    from rairl.train.trainer import AIRLTrainer, TrainConfig

    tokenizer = load_tokenizer(tiny_dir)
    examples = [p.example() for p in make_splits(0, TaskConfig(n_train=4, n_val=1, n_test=1)).train]
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples], 512)
    completions = encode_completions(tokenizer, [e.completion for e in examples], 512)
    records, _ = discriminator_records(tokenizer, examples, prompts, completions, [], random.Random(0))
    models = _models(tiny_dir)
    # LoRA B starts at zero, which gives every A exactly zero gradient (and, with the reward LM
    # equal to the policy, every ℓ = 0 and the g bias zero gradient) on a first step; one
    # iteration has one step of each, so start both adapters away from the base.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in models.model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    cfg = TrainConfig(iterations=1, prompts_per_iter=2, group_size=2, max_new_tokens=8, n_disc=1, disc_batch_size=4,
                      minibatch_size=4, ppo_epochs=1, kl_coef=0.1, lr=1e-2, disc_lr=1e-2, checkpoint_every=0, eval_every=0)
    trainer = AIRLTrainer(models, tokenizer, prompts[:2], records, cfg, progress=False)
    state = {part: {n: v.clone() for n, v in d.items()} for part, d in models.state_dict().items()}
    quantised = next(m for m in models.model.modules() if isinstance(m, bnb.nn.Linear4bit))
    base = {"embedding": models.model.get_input_embeddings().weight, "nf4_weight": quantised.weight,
            "nf4_absmax": quantised.weight.quant_state.absmax, "norm": models.model.get_base_model().model.norm.weight}
    base_before = {k: v.detach().clone() for k, v in base.items()}

    row = trainer.iteration()

    for key in ("disc_loss", "kl", "mean_reward"):
        assert key in row and torch.isfinite(torch.tensor(row[key])), (key, row.get(key))
    after = models.state_dict()
    for part in ("policy", "reward"):
        unchanged = [n for n, v in state[part].items() if torch.equal(after[part][n], v)]
        assert not unchanged, (part, unchanged)
    assert {n for n in state["reward"] if "head" in n and "lora_" not in n} == {
        "g_head.weight", "g_head.bias", "h_head.weight", "h_head.bias"}
    for k, v in base.items():
        assert torch.equal(v.detach(), base_before[k]), k


def test_the_seed_decides_the_adapters_not_what_ran_before(tiny_dir):
    torch.manual_seed(0)
    a = _models(tiny_dir).state_dict()["policy"]
    torch.rand(1000)  # anything else drawing from the global generator in between
    b = _models(tiny_dir).state_dict()["policy"]
    c = SharedBaseModels(load_base(tiny_dir, NF4), cfg=NF4, seed=1).state_dict()["policy"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if "lora_A" in k)
