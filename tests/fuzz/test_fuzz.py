"""The fuzz targets in every test run: the whole corpus replayed in-process (seeds and past
findings), proof that the valid seeds really reach the accept path, and a short coverage-guided
atheris run of each target (``make fuzz`` runs them for minutes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from interlock.capability import inspect
from interlock.core.model import Effect
from interlock.errors import CapabilityError
from interlock.intake import parse_request
from interlock.ledger.note import open_checkpoint
from interlock.ledger.verify import verify_proof_bundle
from interlock.pipeline import Lineage, decide
from interlock.policy.bundle import PolicyBundle
from interlock.trust.receipt import verify_receipt
from tests.fuzz import targets as t

ROOT = Path(__file__).resolve().parents[2]
#: seconds of fuzzing per target in the test run: six targets stay under a minute in all
SECONDS = 6


def _corpus(name: str) -> list[Path]:
    return sorted((t.CORPUS / name).iterdir())


@pytest.mark.parametrize("name", sorted(t.TARGETS))
def test_the_corpus_keeps_the_contract(name: str) -> None:
    """Every seed and every past finding (``crash-*``) goes through its target cleanly."""
    files = _corpus(name)
    assert any(f.name.startswith("seed-valid") for f in files)
    assert any(f.name.startswith("seed-miss") for f in files)
    for path in files:
        t.TARGETS[name](path.read_bytes())


def _seed(name: str, seed: str) -> bytes:
    return (t.CORPUS / name / f"seed-{seed}").read_bytes()


def test_valid_seeds_reach_the_accept_path() -> None:
    """A corpus of rejects would test only the first check: the valid seeds are accepted."""
    request = parse_request(
        _seed("intake", "valid-allow"), request_id=t.REQUEST_ID, time=t.NOW_TEXT
    )
    assert decide(request, t.policy().snapshot, Lineage()).effect is Effect.ALLOW
    for token in ("tools", "any", "narrow", "other", "attenuated"):
        info = inspect(_seed("capability", f"valid-{token}").decode(), t.ROOT_PUBLIC)
        assert info.revocation_ids[0] in t.issued()
    assert PolicyBundle.from_blob(_seed("policy", "valid-default"), [t.POLICY.public_key()])
    entry = verify_proof_bundle(_seed("proof", "valid-5-of-7").decode(), t.LOG.vkey)
    assert entry.data == t.LOG_ENTRIES[5]
    receipt = verify_receipt(_seed("receipt", "valid-1"), public_key=t.NODE.public_key())
    assert receipt.effect == "deny"
    assert open_checkpoint(_seed("checkpoint", "valid-11").decode(), t.LOG_VERIFIER).size == 11


def test_a_forged_allow_would_be_caught() -> None:
    """The intake target's oracle works: a token from another root key that the snapshot
    trusted would be an allow, and the target reports it."""
    from interlock.capability import CapabilityIssuer, CapabilityVerifier, Right
    from interlock.trust import keys

    other = t.fixed_key("not-the-root")
    token = CapabilityIssuer(keys.private_raw(other)).issue(
        principal=t.RESEARCHER,
        rights=[Right.parse("*:*")],
        expires_at=t.NOW.replace(year=2099),
        now=t.NOW.replace(year=2029),
    )
    with pytest.raises(CapabilityError):
        t._genuine_token(token, t.RESEARCHER)
    # and a genuine token of another principal is not an allow for this one
    with pytest.raises(AssertionError, match="a token of"):
        t._genuine_token(_seed("capability", "valid-other").decode(), t.RESEARCHER)
    assert (
        not CapabilityVerifier(t.ROOT_PUBLIC)
        .check(
            token=token,
            principal=t.RESEARCHER,
            action="tool.call",
            resource="Tool::web_search",
            parent=None,
            now=int(t.NOW.timestamp()),
            revoked=frozenset(),
        )
        .ok
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(t.TARGETS))
def test_a_short_atheris_run_finds_nothing(name: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    artifacts = tmp_path / "findings"
    cmd = [sys.executable, "-m", "tests.fuzz.run", name, "--seconds", str(SECONDS)]
    cmd += ["--work", str(tmp_path / "work"), "--artifacts", str(artifacts)]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 60, check=False
    )
    found = sorted(artifacts.glob("*")) if artifacts.exists() else []
    tail = proc.stderr[-4000:]
    assert proc.returncode == 0 and not found, f"finding in {name}: {found}\n{tail}"
    # it really fuzzed: libFuzzer's final line counts the inputs it ran
    runs = re.search(r"Done (\d+) runs in", proc.stderr)
    assert runs is not None and int(runs.group(1)) > 1000, tail
    assert json.loads(t.ISSUED.read_text())["authority_revocation_ids"]
