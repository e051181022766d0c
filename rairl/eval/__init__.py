"""Evaluation of the learned reward and the policy.

    discriminator  action-level accuracy / AUROC of ℓ; step AUROC of log π, g, f, ℓ
    rerank         sampled pools, selector choice, best-of-N against the baselines
    localise       first-wrong-step items, threshold calibration, localisation metrics
    policy         held-out sampled accuracy of a policy (pass@1, pass@k, length, format)

The numbers themselves (AUROC, pass@1, F1, intervals) are `rairl.metrics`.
"""
