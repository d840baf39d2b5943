"""The optimisers: scipy's L-BFGS-B over the image (`lbfgs`), compiled Adam (`adam`), the
coarse-to-fine schedule (`scales`) and the choice of XLA by measurement (`jit`)."""
