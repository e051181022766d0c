"""rairl.kernels: the hot paths, one module per op (Triton on CUDA, PyTorch elsewhere, a reference each).

    token_logprobs  fused LM head + log-softmax + gather of the chosen tokens (Triton / chunked torch)
    airl_loss       AIRL terms (g, f, ℓ per action) and the class-balanced BCE (Triton / torch)
    segments        step-segment packing for padding-free batches (C++ extension `rairl._segments`)

Shipped from the top-level `kernels/` folder as `rairl.kernels`; imported as a top-level `kernels` (a
checkout's root on sys.path), it loads Hugging Face's `kernels`, the package of that name transformers imports.
`segments` is imported by name (`rairl.kernels.segments`): it needs the built C++ extension.
"""

if __name__ == "kernels":
    # Imported as a top-level `kernels`: a checkout's root is on sys.path (`python -m pytest` or `python -c` run
    # there). That name is Hugging Face's `kernels`, which transformers >= 5.25 imports; load it in this one's place
    # (the import system returns what sys.modules holds under the name once this file has run).
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    _spec = importlib.machinery.PathFinder.find_spec("kernels", [p for p in sys.path if os.path.realpath(p or os.curdir) != _root])
    if _spec is None or _spec.loader is None:
        raise ImportError(f"no module named 'kernels' outside {_root}: its kernels/ folder is the package rairl.kernels")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["kernels"] = _module
    _spec.loader.exec_module(_module)
else:
    from .airl_loss import AirlTerms, airl_loss, airl_terms
    from .token_logprobs import token_logprobs

    __all__ = ["AirlTerms", "airl_loss", "airl_terms", "token_logprobs"]
