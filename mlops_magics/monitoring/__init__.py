"""Monitoring engines: reading what deployments collected (collection, store, table), drift, the dashboard
(analysis, dashboard). The API is :mod:`mlops_magics.api.monitoring`."""
