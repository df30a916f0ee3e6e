"""Enforcement points in the infrastructure: Envoy external authorization (:mod:`.envoy`) and a
Kubernetes validating admission webhook (:mod:`.admission`). Both turn what they are asked into
an action request, decide it through the one gate (so it is recorded like any other decision)
and answer deny whenever they cannot establish an allow."""
