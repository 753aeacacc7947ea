"""Batched physics shared by every simulator: mass and light profiles, PSF, noise, rendering.

Every function takes arrays from one namespace (numpy or torch, via array-api-compat) and broadcasts
per-object parameters of shape (B, 1, 1) against pixel grids of shape (1, H, W). The renderer's batched paths
(``Renderer.sersic``/``gaussian``, ``lens_mass.sie_shear_ray_shoot``) compute the same profiles into reused
buffers with the helpers of ``kernels`` (radii as matrix products, in-place element-wise passes)."""
