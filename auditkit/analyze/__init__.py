"""Stage 5: prompt latents, axes, leans and the other measures, as tidy tables."""
