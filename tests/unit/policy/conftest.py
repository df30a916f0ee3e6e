"""Shared helpers for the policy tests: real cedarpy, real Ed25519 keys, bundles on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.policy import DEFAULT_BUNDLE

SCHEMA = """
entity Team;
entity Agent in [Team];
entity Tool;
entity File;
type Args = { x: Long, s?: String };
action "read";
action "file.read" in ["read"] appliesTo {
  principal: [Agent], resource: [File], context: { args: Args, request: {}, time: Long } };
action "file.list" in ["read"] appliesTo {
  principal: [Agent], resource: [File], context: { args: Args, request: {}, time: Long } };
action "tool.call" appliesTo {
  principal: [Agent], resource: [Tool, File], context: { args: Args, request: {}, time: Long } };
"""

ENTITIES = [
    {
        "uid": {"type": "Agent", "id": "alice"},
        "attrs": {},
        "parents": [{"type": "Team", "id": "t"}],
    },
    {"uid": {"type": "Agent", "id": "bob"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Team", "id": "t"}, "attrs": {}, "parents": []},
]

LEAD = "spiffe://acme.test/agent/researcher"
SUMMARIZER = "spiffe://acme.test/agent/researcher/summarizer"


def write_bundle(
    directory: Path,
    policies: str,
    *,
    schema: str = SCHEMA,
    entities: object = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """A bundle folder with one policy file (plus ``extra`` files)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "schema.cedarschema").write_text(schema)
    (directory / "entities.json").write_text(json.dumps(ENTITIES if entities is None else entities))
    (directory / "policies.cedar").write_text(policies)
    for rel, text in (extra or {}).items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    return directory


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def default_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped default bundle."""
    return Path(shutil.copytree(DEFAULT_BUNDLE, tmp_path / "policy"))
