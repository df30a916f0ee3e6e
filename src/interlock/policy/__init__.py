"""Cedar policy: signed bundles, partitioned evaluation, policy tests and diffs.

    >>> from interlock.policy import DEFAULT_BUNDLE, load_unsigned
    >>> load_unsigned(DEFAULT_BUNDLE).evaluate(
    ...     principal="spiffe://acme.test/agent/researcher",
    ...     action="tool.call",
    ...     resource_type="Tool",
    ...     resource_id="delete_database",
    ...     args={},
    ...     context={},
    ...     now=0,
    ... ).code
    <ReasonCode.POLICY_FORBID: 'POLICY_FORBID'>

Only :mod:`interlock.policy._cedar` imports ``cedarpy``.
"""

from pathlib import Path
from typing import Final

from interlock.policy.bundle import (
    Manifest,
    PolicyBundle,
    load_bundle,
    sign_bundle,
    validate_bundle,
)
from interlock.policy.engine import PolicyEngine, PolicyResult, load_unsigned
from interlock.policy.testing import CaseResult, DiffRow, diff_bundles, run_policy_tests

#: the unsigned default bundle shipped with Interlock (``interlock init`` copies and signs it)
DEFAULT_BUNDLE: Final = Path(__file__).parent / "default"

__all__ = [
    "DEFAULT_BUNDLE",
    "CaseResult",
    "DiffRow",
    "Manifest",
    "PolicyBundle",
    "PolicyEngine",
    "PolicyResult",
    "diff_bundles",
    "load_bundle",
    "load_unsigned",
    "run_policy_tests",
    "sign_bundle",
    "validate_bundle",
]
