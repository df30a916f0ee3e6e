"""The browser tools served under ``/console``: pages (:mod:`.pages`), who may read and act
(:mod:`.session`), the decision index (:mod:`.feed`), and the data each tool reads
(:mod:`.api` for the Governance Console, :mod:`.health`, :mod:`.lineage`, :mod:`.demo`).
The Proof Viewer (:mod:`interlock.server.routes.proof_viewer`) needs none of this."""
