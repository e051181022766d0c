"""Prompt templates: plain, or the tokenizer's own chat template, in every encoding and in the TRL adapter."""

from __future__ import annotations

import pytest

from rairl.models.batch import encode_prompts
from rairl.models.reward import RewardModel
from rairl.models.tokenizer import format_prompt, set_template
from rairl.score import RewardScorer, ScorerSettings

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture()
def chat_tiny(tiny):
    tokenizer, lm = tiny
    tokenizer.chat_template = CHAT
    return tokenizer, lm


def test_chat_template_formats_every_prompt_and_plain_stays_the_default(chat_tiny):
    tokenizer, _ = chat_tiny
    plain = encode_prompts(tokenizer, ["Tom has 3 pens."], 512)[0]
    assert tokenizer.decode(plain) == "Question: Tom has 3 pens.\nAnswer:\n"
    set_template(tokenizer, "chat")
    assert format_prompt(" Tom has 3 pens. ", tokenizer) == "<|user|>Tom has 3 pens.\n<|assistant|>\n"
    chat = encode_prompts(tokenizer, ["Tom has 3 pens."], 512)[0]
    assert tokenizer.decode(chat) == "<|user|>Tom has 3 pens.\n<|assistant|>\n"
    set_template(tokenizer, "plain")
    assert encode_prompts(tokenizer, ["Tom has 3 pens."], 512)[0] == plain


def test_chat_is_refused_for_a_tokenizer_without_a_template(tiny):
    tokenizer, _ = tiny
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        set_template(tokenizer, "chat")
    with pytest.raises(ValueError, match="template 'chatml'"):
        set_template(tokenizer, "chatml")


def test_scorer_keeps_its_template_through_save_and_load(chat_tiny, tmp_path):
    tokenizer, lm = chat_tiny
    scorer = RewardScorer(RewardModel(lm), tokenizer, ScorerSettings(template="chat"))
    want = scorer.score(["Tom has 3 pens."], ["3 + 2 = 5\n#### 5"])[0]
    scorer.save_pretrained(tmp_path / "r")
    loaded = RewardScorer.from_pretrained(tmp_path / "r", device="cpu", dtype="fp32")
    assert loaded.settings.template == "chat"
    assert loaded.score(["Tom has 3 pens."], ["3 + 2 = 5\n#### 5"])[0] == pytest.approx(want, rel=1e-5, abs=1e-6)
    plain = RewardScorer(RewardModel(lm), tokenizer, ScorerSettings(template="plain"))
    assert plain.score(["Tom has 3 pens."], ["3 + 2 = 5\n#### 5"])[0] != pytest.approx(want, rel=1e-3)  # a different prompt


def test_trl_adapter_scores_conversational_prompts_through_the_chat_template(chat_tiny):
    pytest.importorskip("trl")
    from rairl.integrations.trl import RAIRLReward

    tokenizer, lm = chat_tiny
    scorer = RewardScorer(RewardModel(lm), tokenizer, ScorerSettings(template="chat"))
    reward = RAIRLReward(scorer, selector="sum")
    messages = [{"role": "user", "content": "Tom has 3 pens."}]
    completion = [{"role": "assistant", "content": "3 + 2 = 5\n#### 5"}]
    got = reward(prompts=[messages], completions=[completion])
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    want = reward(prompts=[text], completions=["3 + 2 = 5\n#### 5"])
    assert got == pytest.approx(want)
    with pytest.raises(TypeError, match="messages"):
        reward(prompts=[[{"text": "x"}]], completions=["y"])


def test_grpo_trainer_steps_on_conversational_prompts_with_the_reward(chat_tiny, tmp_path):
    """TRL formats conversational prompts with the policy's chat template; the reward reads the same turns."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    import torch

    from rairl.integrations.trl import RAIRLReward

    tokenizer, lm = chat_tiny
    reward = RAIRLReward(RewardScorer(RewardModel(lm), tokenizer, ScorerSettings(template="chat")), selector="sum")
    policy = type(lm).from_pretrained(lm.name_or_path)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    questions = ["Tom has 3 pens. Tom gets 2 more.", "Mia has 8 coins. Mia gives away 5."]
    dataset = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in questions]})
    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=8,
                          max_steps=1, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                          bf16=False, disable_tqdm=True)
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    logged = [row for row in trainer.state.log_history if "reward" in row]
    assert len(logged) == 1 and torch.isfinite(torch.tensor(logged[0]["reward"]))
    assert any(not torch.equal(v, before[k]) for k, v in policy.state_dict().items())
