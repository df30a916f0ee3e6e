"""Fault matrix, the policy bundle: missing, unsigned, a bad signature, rolled back to an older
signed version, schema-invalid (signed anyway), a Cedar evaluation error in a permit, and an
erroring forbid. Each fault is made in the home's ``policy/`` folder, on disk, before the
processes that attempt the actions open it."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

from interlock.core.canonical import canonical_bytes
from interlock.gate import Gate
from interlock.home import Home
from interlock.policy.bundle import Manifest, read_bundle_files, sign_bundle
from interlock.trust.keys import public_raw
from tests.faults.harness import decide_cli, exec_cli, on_ledger, record

UNAVAILABLE = ("POLICY_UNAVAILABLE",)
#: a Long product that overflows at run time: Cedar's validator accepts it, evaluation errors
OVERFLOW = "context.time * 9223372036854775807 > 0"


def _attempt(home: Path, request: dict[str, Any], token: str, tmp: Path) -> list[Any]:
    return [decide_cli(home, request), exec_cli(home, token, tmp / "ran")]


def _add_policy(home: Path, text: str) -> None:
    pol = home / "policy" / "policies.cedar"
    pol.write_text(pol.read_text() + "\n" + text + "\n")


def test_missing(home: Path, token: str, request_of: dict[str, Any], tmp_path: Path) -> None:
    shutil.rmtree(home / "policy")
    attempts = _attempt(home, request_of, token, tmp_path)
    record(
        "policy.missing",
        "policy",
        "the home's policy/ folder removed",
        UNAVAILABLE,
        attempts,
        recorded=on_ledger(home, attempts),
        must_record=True,
    )


def test_unsigned(home: Path, token: str, request_of: dict[str, Any], tmp_path: Path) -> None:
    (home / "policy" / "manifest.sig").unlink()
    attempts = _attempt(home, request_of, token, tmp_path)
    record(
        "policy.unsigned",
        "policy",
        "manifest.sig removed from the bundle",
        UNAVAILABLE,
        attempts,
        recorded=on_ledger(home, attempts),
        must_record=True,
    )


def test_bad_signature(home: Path, token: str, request_of: dict[str, Any], tmp_path: Path) -> None:
    path = home / "policy" / "manifest.sig"
    doc = json.loads(path.read_text())
    sig = bytearray(base64.b64decode(doc["sig"]))
    sig[7] ^= 0x01  # one bit of the Ed25519 signature
    doc["sig"] = base64.b64encode(bytes(sig)).decode()
    path.write_text(json.dumps(doc))
    attempts = _attempt(home, request_of, token, tmp_path)
    record(
        "policy.bad-signature",
        "policy",
        "one bit of the manifest's Ed25519 signature flipped",
        UNAVAILABLE,
        attempts,
        recorded=on_ledger(home, attempts),
        must_record=True,
    )


def test_rolled_back(home: Path, token: str, request_of: dict[str, Any], tmp_path: Path) -> None:
    old = tmp_path / "policy-v1"
    shutil.copytree(home / "policy", old)
    _add_policy(home, '@id("v2") forbid (principal, action, resource == Tool::"send_email");')
    sign_bundle(home / "policy", Home.load(home).private_key("policy"))
    with Gate.open(home) as gate:  # version 2 is activated on the log
        assert gate.snapshot.descriptor.get("policy_version") == 2
    shutil.rmtree(home / "policy")
    shutil.copytree(old, home / "policy")  # the validly signed version 1, put back
    attempts = _attempt(home, request_of, token, tmp_path)
    record(
        "policy.rolled-back",
        "policy",
        "the validly signed version 1 put back after version 2 was activated on the log",
        UNAVAILABLE,
        attempts,
        recorded=on_ledger(home, attempts),
        must_record=True,
    )


def test_schema_invalid(home: Path, token: str, request_of: dict[str, Any], tmp_path: Path) -> None:
    # a policy reading an attribute the schema does not declare, signed with the trusted
    # policy key by hand (`interlock policy sign` refuses an invalid bundle)
    _add_policy(
        home,
        '@id("bad-attr") permit (principal, action == Action::"tool.call", resource)'
        " when { context.args.nosuch == 1 };",
    )
    key = Home.load(home).private_key("policy")
    files = read_bundle_files(home / "policy")
    manifest = Manifest(version=2, files={p: _sha(b) for p, b in files.items()})
    data = manifest.to_bytes()
    (home / "policy" / "manifest.json").write_bytes(data)
    (home / "policy" / "manifest.sig").write_bytes(
        canonical_bytes(
            {"key": public_raw(key).hex(), "sig": base64.b64encode(key.sign(data)).decode()}
        )
    )
    attempts = _attempt(home, request_of, token, tmp_path)
    record(
        "policy.schema-invalid",
        "policy",
        "a policy reading an undeclared attribute, in a bundle signed with the trusted key",
        UNAVAILABLE,
        attempts,
        recorded=on_ledger(home, attempts),
        must_record=True,
    )


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _signed_with(home: Path, text: str) -> None:
    _add_policy(home, text)
    sign_bundle(home / "policy", Home.load(home).private_key("policy"))


def test_cedar_evaluation_error(
    home: Path, token: str, request_of: dict[str, Any], tmp_path: Path
) -> None:
    _signed_with(
        home,
        f'@id("overflowing-permit") permit (principal, action, resource) when {{ {OVERFLOW} }};',
    )
    attempts = _attempt(home, request_of, token, tmp_path)
    record(
        "policy.evaluation-error",
        "policy",
        f"a signed permit whose condition overflows at evaluation (`{OVERFLOW}`)",
        ("POLICY_ERROR",),
        attempts,
        recorded=on_ledger(home, attempts),
        must_record=True,
    )


def test_erroring_forbid(
    home: Path, token: str, request_of: dict[str, Any], tmp_path: Path
) -> None:
    _signed_with(
        home,
        f'@id("overflowing-forbid") forbid (principal, action, resource) when {{ {OVERFLOW} }};',
    )
    attempts = _attempt(home, request_of, token, tmp_path)
    record(
        "policy.erroring-forbid",
        "policy",
        "a signed forbid whose condition errors (Cedar skips it and would allow)",
        ("POLICY_ERROR",),
        attempts,
        recorded=on_ledger(home, attempts),
        must_record=True,
    )
