"""rairl.kernels: the hot paths, one module per op (Triton on CUDA, PyTorch elsewhere, a reference each).

    token_logprobs  fused LM head + log-softmax + gather of the chosen tokens (Triton / chunked torch)
    airl_loss       AIRL terms (g, f, ℓ per action) and the class-balanced BCE (Triton / torch)
    segments        step-segment packing for padding-free batches (C++ extension `rairl._segments`)

Shipped from the top-level `kernels/` folder as `rairl.kernels`; never as a
top-level `kernels` module (transformers probes for a package of that name).
`segments` is imported by name (`rairl.kernels.segments`): it needs the built C++ extension.
"""

from .airl_loss import AirlTerms, airl_loss, airl_terms
from .token_logprobs import token_logprobs

__all__ = ["AirlTerms", "airl_loss", "airl_terms", "token_logprobs"]
