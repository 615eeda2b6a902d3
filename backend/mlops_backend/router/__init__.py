"""The endpoint router: one address in front of several deployments (weighted, sticky, shadowed).

It runs wherever the deployments run (a process on this machine, a container, a pod), with the scoring
server's own HTTP protocol and bounds (:mod:`mlops_backend.protocol`), request ids, key auth and metrics:

- :mod:`.table`: the routes file (members, weights, the shadow, the sticky header) and the choice of a member;
- :mod:`.upstream`: keep-alive HTTP/1.1 connections to each member;
- :mod:`.app`: the ASGI application (``/score`` forwarded; ``/``, ``/ready``, ``/metrics``, ``/endpoint``);
- :mod:`.traffic`: what each member answered, as JSON lines, for comparing members;
- :mod:`.serve`: the process (``mlops-route``).
"""
