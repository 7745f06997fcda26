"""Stage 3: capture h-space activations into an activation store."""
