"""Endpoint engines: reading an endpoint's traffic records (traffic) and comparing what two members answered
(comparison). The API is :mod:`mlops_magics.api.endpoints`."""
