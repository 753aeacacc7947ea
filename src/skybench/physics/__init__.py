"""Batched physics shared by every simulator: mass and light profiles, PSF, noise, rendering.

Every function takes arrays from one namespace (numpy or torch, via array-api-compat) and broadcasts
per-object parameters of shape (B, 1, 1) against pixel grids of shape (1, H, W)."""
