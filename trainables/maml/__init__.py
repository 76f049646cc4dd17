"""MAML (Finn et al. 2017) with ``torch.func``: generic core plus the sinusoid trainable."""
