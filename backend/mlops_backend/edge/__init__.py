"""The edge runtime on a device: the store-and-forward buffer, the agent that forwards collected records to the
hub on this machine, the hub itself, the MQTT message bridge and the module's supervisor.

Imported only by the processes that run them: ``import mlops_backend`` does not import this package.
"""
