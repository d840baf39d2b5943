"""The objective layer: the loss terms (`losses`), their targets computed once and the compiled
loss and gradient (`objective`, `graph`), and the exact tiled evaluation for images too large
for one pass (`tiling`, `tiled_loss`), and the matting Laplacian of Deep Photo Style Transfer's
photorealism term (`matting`)."""
