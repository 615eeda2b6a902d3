"""Import paths of the ``azureml-inference-server-http`` package, pointing at the same classes."""
