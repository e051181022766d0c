"""`--rollout.engine vllm`: a colocated vLLM engine in this process (the `rairl[vllm]` extra, imported lazily).

The engine holds the policy as it is trained: the base dequantized with the policy adapter merged
(`rairl.models.merge.copy_merged`), never the original checkpoint. `refresh()` writes those
weights to the engine's folder and has it reload them (then drops its prefix cache, whose KV blocks
were computed with the old weights). Sampling matches the trainer's: the full softmax (top-k and
top-p off) at the trainer's temperature, one seed per prompt, and the log-prob of each sampled token
under the engine's weights at that temperature (`logprobs_mode="processed_logprobs"`). On CUDA the
engine sleeps between rollouts (its weights offloaded, its KV cache freed) and takes
`gpu_memory_share` of the GPU while awake (`--rollout.gpu_memory_share`).

vLLM 0.32's CPU build, measured here: it keeps a oneDNN-packed copy of the output layer that
`reload_weights` leaves stale when embeddings are tied (log-probs then off by 27–30 nats), so the
layer is re-packed after each reload; seeded requests fail under chunked prefill, so it is off.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from .merge import Samples, copy_merged
from .sampling import mix_seed


def _repack_output_layer(worker) -> None:
    """Run in the engine's worker: re-pack the output layer from its reloaded weight (CPU builds)."""
    head = worker.model_runner.model.lm_head
    head.quant_method.process_weights_after_loading(head)


class VLLMSampler:
    """`vllm`: generate with a vLLM engine that holds the merged policy; `refresh()` after each update."""

    def __init__(self, models, gpu_memory_share: float = 0.3, max_model_len: int = 4096, cpu_kv_cache_gib: float = 1.0):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in this process: weights reload from a folder it shares
        try:
            import vllm
        except ImportError as e:
            raise ImportError("--rollout.engine vllm needs vLLM: pip install 'rairl[vllm]' (vLLM pins its own torch and "
                              "transformers: see benchmarks/vllm_env/setup.sh)") from e
        self.vllm, self.models, self.adapter = vllm, models, models.policy_adapter
        self.source = models.model if self.adapter else models.policy
        device = next(self.source.parameters()).device
        self.cuda = device.type == "cuda"
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.folder = Path(tempfile.mkdtemp(prefix="rairl_vllm_"))
        config = self.source.get_base_model().config if self.adapter else self.source.config
        self.plain = AutoModelForCausalLM.from_config(config, dtype=self.dtype).eval().requires_grad_(False)  # CPU: staging only
        self._write()
        memory = ({"gpu_memory_utilization": gpu_memory_share, "enable_sleep_mode": True} if self.cuda
                  else {"kv_cache_memory_bytes": int(cpu_kv_cache_gib * 2**30)})
        self.llm = vllm.LLM(model=str(self.folder), dtype="bfloat16" if self.cuda else "float32", seed=0, skip_tokenizer_init=True,
                            max_model_len=min(max_model_len, config.max_position_embeddings), enforce_eager=not self.cuda,
                            distributed_executor_backend="uni", enable_chunked_prefill=False,
                            logprobs_mode="processed_logprobs", **memory)
        self.asleep = False

    def _write(self) -> None:
        """The policy's current merged weights as a `save_pretrained` folder the engine (re)loads."""
        copy_merged(self.source, self.adapter, self.plain)
        self.plain.save_pretrained(self.folder)

    def refresh(self) -> None:
        """Push the policy's current weights into the engine."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False
        self._write()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(self.folder)})
        if not self.cuda:
            self.llm.collective_rpc(_repack_output_layer)
        self.llm.reset_prefix_cache()

    def sample(self, prompt_ids: Sequence[Sequence[int]], *, n_samples: int, max_new_tokens: int, eos_id: int, pad_id: int,
               temperature: float = 1.0, seed: int = 0, seeds: Sequence[int] | None = None, greedy: bool = False,
               progress: bool = False, batch_size: int | None = None) -> Samples:
        """As `rairl.models.sampling.sample_completions` with `return_logprobs`: ids (EOS kept when the policy
        stopped) and the engine's log-prob of each sampled token, `[prompt][sample][token]`."""
        if not prompt_ids:
            return [], []
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False
        seeds = [mix_seed(seed, i) for i in range(len(prompt_ids))] if seeds is None else seeds
        params = [self.vllm.SamplingParams(n=n_samples, temperature=0.0 if greedy else temperature, top_k=0, top_p=1.0,
                                           max_tokens=max_new_tokens, seed=s % 2**31, logprobs=0, stop_token_ids=[eos_id],
                                           detokenize=False) for s in seeds]
        prompts = [self.vllm.inputs.TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=progress)
        ids, logps = [], []
        for out in outputs:
            ids.append([list(c.token_ids) for c in out.outputs])
            logps.append([[step[t].logprob for step, t in zip(c.logprobs, c.token_ids, strict=True)] for c in out.outputs])
        if self.cuda:
            self.llm.sleep(level=1)  # weights to host memory, KV cache freed: the update gets the GPU
            self.asleep = True
        return ids, logps
