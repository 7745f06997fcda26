"""auditkit: reproducible h-space bias audits of text-to-image diffusion models."""

__version__ = "0.1.0"
