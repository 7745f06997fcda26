"""Pipeline loading, and tiny pipelines built from configs for demos and tests."""
