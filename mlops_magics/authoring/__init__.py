"""Authoring a deployment from notebook cells: the entry script and its environment."""
