"""The ``kubernetes`` target: a Deployment, Service, HorizontalPodAutoscaler and Secret applied with the official
client (server-side apply), on the current kubeconfig context.

- :mod:`.settings`: what a deployment is asked to be (our names and Azure's AKS deployment-configuration names).
- :mod:`.manifests`: the objects, as plain dictionaries (``--dry-run`` writes them; tests validate them offline).
"""
