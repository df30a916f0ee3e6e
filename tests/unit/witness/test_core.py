# ruff: noqa: E501 - published test vectors, kept verbatim
"""The witness core (c2sp.org/tlog-witness add-checkpoint) on the published test data of
transparency-dev/witness ``witness/witness_test.go``: the ``monkeys`` log's key, its signed
checkpoints of sizes 5 and 8, and the consistency proof between them."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import ConfigError
from interlock.ledger.cosign import CosignatureVerifier
from interlock.ledger.note import NoteSigner
from interlock.witness.core import (
    BadRequest,
    Conflict,
    Forbidden,
    UnknownLog,
    Unprocessable,
    Witness,
    WitnessConfig,
    init_witness,
)
from interlock.witness.protocol import format_add_checkpoint, parse_add_checkpoint
from interlock.witness.state import WitnessState

M_PK = "monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT"
M_SK = "PRIVATE+KEY+monkeys+db4d9f7e+ATWIAF3yVBG+Hv1rZFQoNt/BaURkLPtOFMAM2HrEeIr6"
M_INIT = (
    "monkeys\n5\n41smjBUiAU70EtKlT6lIOIYtRTYxYXsDB+XHfcvu/BE=\n\n"
    "— monkeys 202fftzGl3LVoqjXfwCFZZXs8I+5G22+Ek2K0AOyBuSJ/8/CZawNF+6fNlTKOCd622pbzJNkkJFWuw9DbicZCkEx9AY=\n"
)
M_NEXT = (
    "monkeys\n8\nV8K9aklZ4EPB+RMOk1/8VsJUdFZR77GDtZUQq84vSbo=\n\n"
    "— monkeys 202ffoUEboiQYpHzICeaFmoy3RNviHTpAxYrq/eO4QQVQMvu9UebKBMX2MJC76NLthZaKsnKbCA8GxrjePZhvDCH7Ag=\n"
)
CONS_PROOF = [
    bytes.fromhex(h)
    for h in (
        "b9e1d62618f7fee8034e4c5010f727ab24d8e4705cb296c374bf2025a87a10d2",
        "aac66cd7a79ce4012d80762fe8eec3a77f22d1ca4145c3f4cee022e7efcd599d",
        "89d0f753f66a290c483b39cd5e9eafb12021293395fad3d4a2ad053cfbcfdc9e",
        "29e40bb79c966f4c6fe96aff6f30acfce5f3e8d84c02215175d6e018a5dee833",
    )
]
NOW = 1_700_000_000


def monkeys_signer() -> NoteSigner:
    seed = base64.b64decode(M_SK.split("+", 4)[4])[1:]
    return NoteSigner("monkeys", Ed25519PrivateKey.from_private_bytes(seed))


def body(old: int, proof: list[bytes], note: str) -> bytes:
    return format_add_checkpoint(old, proof, note).encode()


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    path = tmp_path / "w"
    init_witness(path, name="witness.test/w1", logs={"monkeys": M_PK})
    return path


def test_init_makes_a_private_folder_key_and_config(wdir: Path) -> None:
    assert (wdir.stat().st_mode & 0o777) == 0o700
    for name in ("witness.key", "witness.toml", "witness.db"):
        assert ((wdir / name).stat().st_mode & 0o777) == 0o600, name
    with Witness.open(wdir) as w:
        assert w.config.name == "witness.test/w1"
        assert set(w.config.logs) == {"monkeys"}
        assert w.vkey.startswith("witness.test/w1+")
    with pytest.raises(ConfigError):
        init_witness(wdir, name="witness.test/w1", logs={})  # never over an existing one


def test_open_refuses_a_state_file_others_can_read(wdir: Path) -> None:
    (wdir / "witness.db").chmod(0o644)
    with pytest.raises(ConfigError):
        Witness.open(wdir)


def test_init_refuses_a_log_key_not_named_for_its_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        init_witness(tmp_path / "w", name="w.test/1", logs={"bananas": M_PK})
    assert not (tmp_path / "w").exists()


def test_cosigns_the_published_checkpoints_in_order(wdir: Path) -> None:
    with Witness.open(wdir) as w:
        v = CosignatureVerifier.from_vkey(w.vkey)
        line = w.add_checkpoint(body(0, [], M_INIT), now=NOW)
        assert v.verify(M_INIT + line) == NOW
        line = w.add_checkpoint(body(5, CONS_PROOF, M_NEXT), now=NOW + 1)
        assert v.verify(M_NEXT + line) == NOW + 1
        # the same checkpoint again, from its own size: cosigned again (old == size, same root)
        w.add_checkpoint(body(8, [], M_NEXT), now=NOW + 2)
        assert w.state.evidence() == []


def test_a_smaller_checkpoint_is_refused_and_kept(wdir: Path) -> None:
    with Witness.open(wdir) as w:
        w.add_checkpoint(body(0, [], M_INIT), now=NOW)
        w.add_checkpoint(body(5, CONS_PROOF, M_NEXT), now=NOW)
        with pytest.raises(BadRequest):  # old 8 > size 5 (the spec's 400)
            w.add_checkpoint(body(8, CONS_PROOF, M_INIT), now=NOW)
        with pytest.raises(Conflict) as info:  # old 5 is not the witness's 8 (409)
            w.add_checkpoint(body(5, [], M_INIT), now=NOW)
        assert info.value.size == 8
        (ev,) = w.state.evidence()  # the same refusal is kept once
        assert (ev.kind, ev.size, ev.held_size) == ("smaller", 5, 8)
        assert ev.note == M_INIT
        assert {lt.size for lt in w.state.all_latest()} == {8}


def test_garbage_and_missing_proofs_are_422(wdir: Path) -> None:
    with Witness.open(wdir) as w:
        w.add_checkpoint(body(0, [], M_INIT), now=NOW)
        bad = [bytes([i]) * 32 for i in range(4)]
        with pytest.raises(Unprocessable):
            w.add_checkpoint(body(5, bad, M_NEXT), now=NOW)
        with pytest.raises(Unprocessable):
            w.add_checkpoint(body(5, [], M_NEXT), now=NOW)
        assert [e.kind for e in w.state.evidence()] == ["inconsistent"]
        assert w.state.all_latest()[0].size == 5


def test_a_proof_from_zero_is_422(wdir: Path) -> None:
    with Witness.open(wdir) as w, pytest.raises(Unprocessable):
        w.add_checkpoint(body(0, CONS_PROOF, M_INIT), now=NOW)


def test_same_size_other_root_is_a_fork_kept_as_evidence(wdir: Path) -> None:
    signer = monkeys_signer()
    assert signer.vkey == M_PK
    other_root = base64.b64encode(b"\xff" * 32).decode()
    fork = signer.sign(f"monkeys\n5\n{other_root}\n")
    with Witness.open(wdir) as w:
        w.add_checkpoint(body(0, [], M_INIT), now=NOW)
        with pytest.raises(Unprocessable):
            w.add_checkpoint(body(5, [], fork), now=NOW + 7)
        (ev,) = w.state.evidence()
        assert ev.kind == "fork"
        assert ev.note == fork
        assert ev.held_note.startswith(M_INIT)
        assert ev.received == NOW + 7


def test_unknown_origin_and_bad_signatures(wdir: Path) -> None:
    stranger = NoteSigner("bananas", Ed25519PrivateKey.generate())
    impostor = NoteSigner("monkeys", Ed25519PrivateKey.generate())
    with Witness.open(wdir) as w:
        with pytest.raises(UnknownLog):
            w.add_checkpoint(body(0, [], stranger.sign("bananas\n0\n" + _empty() + "\n")), now=NOW)
        with pytest.raises(Forbidden):  # another key: no signature from the trusted one
            w.add_checkpoint(body(0, [], impostor.sign(M_INIT.split("\n\n")[0] + "\n")), now=NOW)
        tampered = M_INIT.replace("\n5\n", "\n6\n")
        with pytest.raises(Forbidden):  # the trusted key's signature fails
            w.add_checkpoint(body(0, [], tampered), now=NOW)
        assert w.state.all_latest() == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"old 0\n",
        b"old 01\n\n" + M_INIT.encode(),
        b"old -1\n\n" + M_INIT.encode(),
        b"olde 0\n\n" + M_INIT.encode(),
        b"old 0\nnot base64\n\n" + M_INIT.encode(),
        b"old 0\n" + b"AAAA\n" + b"\n" + M_INIT.encode(),
        b"old 0\n" + b"".join([base64.b64encode(bytes(32)) + b"\n"] * 64) + b"\n" + M_INIT.encode(),
        b"old 0\n\n\xff\xfe",
        b"old 0\n\nmonkeys\n5\n",
    ],
)
def test_malformed_bodies_are_400(wdir: Path, raw: bytes) -> None:
    with Witness.open(wdir) as w, pytest.raises(BadRequest):
        w.add_checkpoint(raw, now=NOW)


def test_state_survives_restart_and_never_goes_back(wdir: Path) -> None:
    with Witness.open(wdir) as w:
        w.add_checkpoint(body(0, [], M_INIT), now=NOW)
        w.add_checkpoint(body(5, CONS_PROOF, M_NEXT), now=NOW)
    with Witness.open(wdir) as w:
        (held,) = w.state.all_latest()
        assert held.size == 8
        with pytest.raises(Conflict) as info:
            w.add_checkpoint(body(0, [], M_INIT), now=NOW)
        assert info.value.size == 8
    with WitnessState(wdir / "witness.db") as st:
        assert [lt.size for lt in st.all_latest()] == [8]


def test_config_round_trips_and_is_strict() -> None:
    cfg = WitnessConfig.from_toml('name = "w.test/1"\n[logs]\n"monkeys" = "' + M_PK + '"\n')
    again = WitnessConfig.from_toml(cfg.to_toml())
    assert again.name == cfg.name
    assert {o: v.vkey for o, v in again.logs.items()} == {"monkeys": M_PK}
    with pytest.raises(ConfigError):
        WitnessConfig.from_toml('name = "w.test/1"\nextra = 1\n')
    with pytest.raises(ConfigError):
        WitnessConfig.from_toml('name = "has space"\n')


def test_protocol_round_trip() -> None:
    raw = body(5, CONS_PROOF, M_NEXT)
    assert parse_add_checkpoint(raw) == (5, CONS_PROOF, M_NEXT)


def _empty() -> str:
    import hashlib

    return base64.b64encode(hashlib.sha256(b"").digest()).decode()
