"""toyworld: a small, procedurally drawn world with biases planted on purpose and written down.

auditkit trains a real (tiny) latent diffusion model on this world so that an audit has a known
answer: the share of men (and of light skin) the model draws for "a photo of a doctor" was set
by hand in :func:`auditkit.toyworld.world.planted_rates`, and an h-space audit must recover its
rank order. A ``balanced`` variant, trained with every rate at 0.5, must come out clean.

Modules:
    world: attributes, the 32x32 renderer, the caption grammar, planted rates, training sets.
    captioner: a small CNN that reads the attributes back from an image (the output side).
"""
