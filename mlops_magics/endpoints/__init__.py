"""Endpoints: several deployments behind one address. The engines: the routing (:mod:`.routing`), the router
process of this machine (:mod:`.router`), reading the traffic it records (:mod:`.traffic`) and comparing what two
members answered (:mod:`.comparison`). The API is :mod:`mlops_magics.api.endpoints`."""
