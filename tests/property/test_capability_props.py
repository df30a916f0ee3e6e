"""Properties of capability checking, with Right.covers as the oracle.

- a token allows a request iff one of its rights covers it;
- attenuating to any rights allows a request iff both the token's rights and the attenuation's
  cover it: attenuation never allows anything its rights do not cover;
- both hold for ``explicit`` checks (admin operations), where only a right naming the action and
  the resource (or its type) counts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.capability import CapabilityIssuer, CapabilityVerifier, Right, attenuate
from interlock.trust.keys import private_raw, public_raw

ALICE = "spiffe://acme.test/agent/alice"
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
NOW = 1_800_000_000
ISSUED = datetime(2026, 1, 1, tzinfo=UTC)

ROOT = Ed25519PrivateKey.generate()
ROOT_PUB = public_raw(ROOT)
ISSUER = CapabilityIssuer(private_raw(ROOT))
# One verifier across examples: its caches are exercised too, and must not change answers.
VERIFIER = CapabilityVerifier(ROOT_PUB)

ACTIONS = ["tool.call", "shell.exec", "file.read"]
TYPES = ["Tool", "File", "Acme::Tool"]
IDS = ["a", "b", "web_search"]

actions = st.sampled_from(ACTIONS)
rights = st.builds(
    Right,
    action=st.sampled_from([*ACTIONS, "*"]),
    resource=st.one_of(
        st.just("*"),
        st.sampled_from(TYPES).map(lambda t: f"{t}::*"),
        st.builds(lambda t, i: f"{t}::{i}", st.sampled_from(TYPES), st.sampled_from(IDS)),
    ),
)
right_sets = st.lists(rights, min_size=1, max_size=4)
requests = st.tuples(
    actions, st.sampled_from(TYPES), st.sampled_from(IDS), st.booleans(), st.booleans()
)
Request = tuple[str, str, str, bool, bool]


def _allowed(token: str, request: Request) -> bool:
    action, rtype, rid, explicit_type, explicit = request
    result = VERIFIER.check(
        token=token,
        principal=ALICE,
        action=action,
        resource=f"{rtype}::{rid}",
        resource_type=rtype if explicit_type else None,
        parent=None,
        now=NOW,
        revoked=frozenset(),
        explicit=explicit,
    )
    assert result.ok or result.code is not None
    return result.ok


def _covered(rs: list[Right], request: Request, *, narrowing: bool = False) -> bool:
    action, rtype, rid, explicit_type, explicit = request
    return any(
        r.covers(
            action,
            f"{rtype}::{rid}",
            resource_type=rtype if explicit_type else None,
            # an attenuation's rights only narrow: `explicit` is about the granting right
            explicit=explicit and not narrowing,
        )
        for r in rs
    )


@settings(max_examples=60, deadline=None)
@given(rs=right_sets, reqs=st.lists(requests, min_size=1, max_size=6))
def test_ok_iff_a_right_covers(rs: list[Right], reqs: list[Request]) -> None:
    token = ISSUER.issue(principal=ALICE, rights=rs, expires_at=EXPIRES, now=ISSUED)
    for request in reqs:
        assert _allowed(token, request) is _covered(rs, request), (rs, request)


@settings(max_examples=40, deadline=None)
@given(
    rs=right_sets,
    data=st.data(),
    extra=st.lists(rights, max_size=2),
    reqs=st.lists(requests, min_size=1, max_size=6),
)
def test_attenuation_never_widens(
    rs: list[Right],
    data: st.DataObject,
    extra: list[Right],
    reqs: list[Request],
) -> None:
    token = ISSUER.issue(principal=ALICE, rights=rs, expires_at=EXPIRES, now=ISSUED)
    subset = data.draw(st.lists(st.sampled_from(rs), min_size=1, max_size=len(rs)))
    # `extra` rights the token may lack: naming them in an attenuation must not grant them
    narrowed = subset + extra
    child = attenuate(token, root_public_raw=ROOT_PUB, rights=narrowed, now=ISSUED)
    for request in reqs:
        allowed = _allowed(child, request)
        assert allowed is (_covered(rs, request) and _covered(narrowed, request, narrowing=True)), (
            rs,
            narrowed,
            request,
        )
        if allowed:
            assert _covered(subset, request, narrowing=True) or _covered(
                extra, request, narrowing=True
            )
