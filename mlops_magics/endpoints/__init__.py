"""Endpoints: several deployments behind one address (the routing, the router, the traffic it records)."""
