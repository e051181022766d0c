"""rairl.kernels: fused token-level ops (Triton on CUDA, chunked PyTorch elsewhere).

Shipped from the top-level `kernels/` folder as `rairl.kernels`; never as a
top-level `kernels` module (transformers probes for a package of that name).
"""

from .airl import AirlTerms, airl_logits, airl_loss, airl_terms
from .token_logprobs import token_logprobs

__all__ = ["AirlTerms", "airl_logits", "airl_loss", "airl_terms", "token_logprobs"]
