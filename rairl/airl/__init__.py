"""The AIRL discriminator on token batches (the reward model in its training role).

    layout         actions of a right-padded batch at the reward's granularity (`ActionLayout`)
    discriminator  records, batches, per-action terms (g, f, ℓ) and the class-balanced loss
    negatives      discriminator records: experts, policy samples and perturbed experts
"""
