"""Packaging a model version into a Docker build context (and, with an engine, an image)."""
