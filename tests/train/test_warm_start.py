"""The warm start on disk: `WarmStart.save` / `load_warm_start` round trips, format-1 files, and the
seed / task check of `rairl.train.run.warm_start_for`. One quick build shared by every test."""

from __future__ import annotations

import json
import random
import shutil
import warnings
from dataclasses import asdict, replace

import pytest
import torch

from rairl.airl.discriminator import DiscRecord, discriminator_batch, discriminator_terms
from rairl.airl.layout import step_rule
from rairl.data import make_splits
from rairl.data.task import quick_task_config
from rairl.models.batch import encode_completions
from rairl.models.lm import per_token_logprobs
from rairl.train import warm_start
from rairl.train.reward import RewardTrainConfig
from rairl.train.run import RunConfig, warm_start_for
from rairl.train.warm_start import (
    FORMAT_VERSION,
    WarmStart,
    WarmStartConfig,
    build_warm_start,
    load_warm_start,
    memorised_share,
    quick_warm_config,
)


def _config() -> WarmStartConfig:
    quick = quick_warm_config()
    return replace(quick, sft=replace(quick.sft, steps=4, check_every=2, check_after=2), sft_check_problems=4,
                   reward_train=RewardTrainConfig(steps=3, batch_size=8, eval_every=2),
                   disc_experts=16, negative_prompts=8, max_new_tokens=24)


TASK = replace(quick_task_config(), n_train=40, n_val=6, n_test=2)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(seed, warm start as built, its directory, the same warm start as loaded back)."""
    seed = random.randrange(1000)
    out = tmp_path_factory.mktemp("warm")
    cfg = _config()
    splits = make_splits(seed, TASK)
    warm = build_warm_start(cfg, seed, [p.example() for p in splits.train], [p.example() for p in splits.val], out,
                            random.Random(seed), {"seed": seed, "task": asdict(TASK)}, progress=False)
    warm.save(out, seconds=1.5)
    return seed, warm, out, load_warm_start(out)


def _scores(warm: WarmStart, records: list[DiscRecord]):
    """(g, f, ℓ) of the warm start's reward model, ℓ against its own policy, on `records`."""
    batch, layout, _, _ = discriminator_batch(records, warm.tokenizer.pad_token_id, step_rule(warm.reward_model.cfg, warm.tokenizer))
    with torch.no_grad():
        logp = per_token_logprobs(warm.policy.eval(), batch.input_ids, batch.attention_mask)
        return discriminator_terms(warm.reward_model.eval(), batch, layout, logp)


def _some_records(warm: WarmStart, n: int = 6) -> list[DiscRecord]:
    rng = random.Random()
    return rng.sample(warm.val_records, min(n // 2, len(warm.val_records))) + rng.sample(warm.train_records, n - n // 2)


# save -> load ----------------------------------------------------------------------------------
def test_the_build_has_every_part(built):
    seed, warm, out, _ = built
    assert warm.train_records and warm.val_records and warm.val_pools and warm.val_items
    assert {r.label for r in warm.train_records} == {0, 1} and {r.label for r in warm.val_records} == {0, 1}
    assert warm.policy_path.resolve() == (out / "policy").resolve()
    for name in ("warm.json", "records.json", "reward", "policy"):
        assert (out / name).exists(), name
    meta = json.loads((out / "warm.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["policy"] == "policy" and meta["seconds"] == 1.5


def test_save_then_load_gives_back_config_records_pools_items_and_best(built):
    seed, warm, out, loaded = built
    assert loaded.cfg == warm.cfg == _config()
    assert loaded.train_records == warm.train_records
    assert loaded.val_records == warm.val_records
    assert loaded.val_pools == warm.val_pools
    assert loaded.val_items == warm.val_items
    assert [i.source for i in loaded.val_items] == [i.source for i in warm.val_items]  # not part of LocaliseItem's ==
    assert loaded.reward_best == warm.reward_best and set(warm.reward_best) >= {"auroc", "acc", "step"}
    assert loaded.policy_path.resolve() == warm.policy_path.resolve()
    assert loaded.reward_model.cfg == warm.reward_model.cfg


def test_memorised_share_counts_negatives_that_are_an_experts_tokens_and_warns_from_nine_in_ten():
    experts = [([1, 2], [5, 6, 0]), ([3], [7, 0])]
    records = [DiscRecord([1, 2], [5, 6, 0], label=1),  # an expert is not a negative
               DiscRecord([1, 2], [5, 6, 0], label=0),  # a copy
               DiscRecord([3], [7, 8, 0], label=0),  # same prompt, another completion
               DiscRecord([1, 2], [7, 0], label=0),  # another prompt's completion
               DiscRecord([3], [7, 0], label=0, negative_from=0)]  # a copy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert memorised_share(records, [p for p, _ in experts], [c for _, c in experts], sampled=4) == 0.5  # the demo's regime
    many = records + [DiscRecord([3], [7, 0], label=0)] * 7  # 9 copies
    with pytest.warns(UserWarning, match="9 of the policy's 10 samples on training prompts are their demonstration"):
        assert memorised_share(many, [p for p, _ in experts], [c for _, c in experts], sampled=10) == 0.9


def test_a_policy_that_samples_its_demonstrations_back_is_flagged(tmp_path, monkeypatch):
    seed = random.randrange(1000)
    splits = make_splits(seed, TASK)
    sample_pools = warm_start._pools

    def parrot(cfg, policy, tokenizer, examples, n, *args, **kwargs):  # every sample is the example's demonstration
        ids = encode_completions(tokenizer, [e.completion for e in examples], cfg.max_completion_tokens)
        return [replace(p, completion_ids=[list(c)] * n)
                for p, c in zip(sample_pools(cfg, policy, tokenizer, examples, n, *args, **kwargs), ids, strict=True)]

    monkeypatch.setattr(warm_start, "_pools", parrot)
    cfg = replace(_config(), sft_target_accuracy=0.0)
    with pytest.warns(UserWarning, match="8 of the policy's 8 samples on training prompts are their demonstration"):
        warm = build_warm_start(cfg, seed, [p.example() for p in splits.train], [p.example() for p in splits.val], tmp_path,
                                random.Random(seed), {"seed": seed, "task": asdict(TASK)}, progress=False)
    assert warm.reward_best["negatives_copying_experts"] == 1.0


def test_save_then_load_gives_back_the_provenance(built):
    seed, warm, out, loaded = built
    assert warm.provenance == json.loads(json.dumps({"seed": seed, "task": asdict(TASK)}))  # JSON data, as warm.json holds it
    assert loaded.provenance == warm.provenance, f"loaded {loaded.provenance!r} != built {warm.provenance!r}"


def test_loaded_reward_model_and_policy_score_like_the_built_ones(built):
    _, warm, _, loaded = built
    records = _some_records(warm)
    want, got = _scores(warm, records), _scores(loaded, records)
    assert want.ell.abs().max() > 1e-4  # a trained reward: ℓ is not the fresh model's 0, so the heads and LM matter
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    ids = torch.tensor([records[0].prompt_ids + records[0].completion_ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded.policy(input_ids=ids).logits, warm.policy.eval()(input_ids=ids).logits)
    for (k, a), (k2, b) in zip(sorted(loaded.reward_model.state_dict().items()), sorted(warm.reward_model.state_dict().items()), strict=True):
        assert k == k2
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


# format 1 --------------------------------------------------------------------------------------
def test_a_format_1_warm_start_still_loads(built, tmp_path):
    """warm.json of rairl <= 0.1: the whole DemoConfig under "config", policy/ and reward/ beside it, records with train and val only."""
    _, warm, out, _ = built
    rng = random.Random()
    old_dir = tmp_path / "old"
    shutil.copytree(out / "policy", old_dir / "policy")
    shutil.copytree(out / "reward", old_dir / "reward")
    (old_dir / "records.json").write_text(json.dumps({"train": [asdict(r) for r in warm.train_records],
                                                      "val": [asdict(r) for r in warm.val_records]}))
    cfg = warm.cfg
    seed = rng.randrange(1000)
    task = json.loads(json.dumps(asdict(replace(TASK, n_train=rng.randint(40, 90)))))  # as a JSON file holds it
    old = {
        "seed": seed, "task": task, "model": asdict(cfg.model), "sft": asdict(cfg.sft), "reward": asdict(cfg.reward),
        "reward_train": asdict(cfg.reward_train), "sft_target_accuracy": rng.choice([0.0, 0.25, 0.5]),
        "sft_check_problems": rng.randint(1, 50), "vocab_size": rng.randint(300, 600), "n_samples": 4,
        "val_samples": rng.randint(1, 6), "disc_experts": rng.randint(10, 40), "negative_prompts": rng.randint(5, 30),
        "negative_samples": rng.randint(1, 3), "max_new_tokens": rng.randint(16, 64), "temperature": rng.choice([0.7, 1.0, 1.3]),
        "threads": 0,
    }
    auroc = rng.random()
    (old_dir / "warm.json").write_text(json.dumps({"config": old, "sft_greedy_pass1": 0.3, "reward_val_auroc": auroc, "seconds": 1.0}))

    loaded = load_warm_start(old_dir)
    known = {k: v for k, v in old.items() if k in WarmStartConfig.__dataclass_fields__}
    assert set(known) == set(old) - {"seed", "task", "n_samples", "threads"}
    expected = replace(WarmStartConfig(), model=cfg.model, sft=cfg.sft, reward=cfg.reward, reward_train=cfg.reward_train,
                       **{k: v for k, v in known.items() if k not in ("model", "sft", "reward", "reward_train")})
    assert loaded.cfg == expected
    assert loaded.provenance == {"seed": seed, "task": task}
    assert loaded.reward_best == {"auroc": auroc}
    assert loaded.policy_path == old_dir / "policy"
    assert loaded.train_records == warm.train_records and loaded.val_records == warm.val_records
    assert loaded.val_pools == [] and loaded.val_items == []
    records = _some_records(warm)
    for a, b in zip(_scores(loaded, records), _scores(warm, records), strict=True):
        torch.testing.assert_close(a, b)


# warm_start_for --------------------------------------------------------------------------------
def _run_config() -> RunConfig:
    return RunConfig(task=TASK, warm=_config())


def test_warm_start_for_reuses_a_warm_start_of_the_same_seed_and_task(built):
    seed, warm, out, _ = built
    before = (out / "warm.json").read_text()
    reused = warm_start_for(_run_config(), seed, out, progress=False)
    assert (out / "warm.json").read_text() == before  # loaded, not rebuilt
    assert reused.train_records == warm.train_records and reused.reward_best == warm.reward_best


@pytest.mark.parametrize("change", ["seed", "task", "warm"])
def test_warm_start_for_refuses_another_seed_task_or_warm_config(built, change):
    seed, _, out, _ = built
    cfg = _run_config()
    if change == "seed":
        seed += random.randint(1, 100)
    elif change == "task":
        cfg = replace(cfg, task=replace(TASK, max_value=TASK.max_value + random.randint(1, 10)))
    else:
        cfg = replace(cfg, warm=replace(cfg.warm, temperature=0.5))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ValueError, match="warm.json") as info:
        warm_start_for(cfg, seed, out, progress=False)
    assert str(out / "warm.json") in str(info.value)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing rebuilt or overwritten


def test_post_train_refuses_a_folder_that_holds_a_run(tmp_path):
    """A second run never lands in a finished (or checkpointed) run's folder unless it resumes it."""
    from rairl.train.run import post_train, quick_run_config

    for marker in ("metrics.json", "checkpoints/iter_000002/COMMITTED", "checkpoints/iter_000003/trainer.json", "checkpoints/iter_2.pt"):
        out = tmp_path / marker.replace("/", "_")
        (out / marker).parent.mkdir(parents=True, exist_ok=True)
        (out / marker).write_text("{}")
        with pytest.raises(ValueError, match="holds another run"):
            post_train(quick_run_config(), 0, out)
        assert not (out / "warm").exists()  # refused before any work
