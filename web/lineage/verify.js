// Proving a lineage chain hop by hop, in the browser, with WebCrypto only (SHA-256, Ed25519).
// The server supplies evidence (each hop's tlog-proof) and claims (its leaf hash, parent and
// parent_leaf); the verdict is computed here and never asked of the server.
//
//   import { parseVkey, proveChain } from "./verify.js";
//   const key = await parseVkey("interlock.test/home+1a2b3c4d+AQ...");
//   const result = await proveChain(hops, (hop) => fetchProofText(hop.index), key, onStep);
//
// The Proof Viewer (web/proof-viewer/viewer.js) does the same checks for one file, but it runs
// its page on import, so the few functions needed are here, written from the same specs:
//   c2sp.org/tlog-proof      header, "extra <b64>", "index <N>", hashes, "", signed checkpoint
//   c2sp.org/signed-note     text "\n" then "— <name> b64(keyid(4) || sig(64))" lines
//   c2sp.org/tlog-checkpoint origin "\n" size "\n" b64(root) "\n" [extension lines]
//   RFC 6962 §2.1 leaf and node hashes, RFC 9162 §2.1.3.2 inclusion verification

const HEADER = "c2sp.org/tlog-proof@v1";
const MAX_TEXT = 1 << 20;
const MAX_PATH = 64;
const SIG_ED25519 = 0x01;
const DECIMAL = /^(0|[1-9][0-9]*)$/;
const EM_DASH_PREFIX = "\u2014 ";

/** A check that failed; `message` says why. */
export class Failure extends Error {}

const fail = (message) => {
  throw new Failure(message);
};

const utf8 = new TextEncoder();

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

// Standard base64 (RFC 4648 §4), canonical only: padded, no whitespace, no stray bits.
function b64decode(text) {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  let bin;
  try {
    bin = atob(text);
  } catch {
    return null;
  }
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return b64encode(out) === text ? out : null;
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

// RFC 6962 §2.1: leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right)
export const leafHash = (data) => sha256(Uint8Array.of(0x00), data);
const nodeHash = (left, right) => sha256(Uint8Array.of(0x01), left, right);

const hasControl = (text, allowNewline) =>
  Array.from(text).some((ch) => ch < " " && !(allowNewline && ch === "\n"));

function badName(name) {
  return !name || name.includes("+") || /\s/u.test(name) || hasControl(name, false);
}

// c2sp.org/signed-note §Ed25519 signatures: key ID = SHA-256(name || 0x0A || 0x01 || key)[:4]
async function keyId(name, publicKey) {
  return (await sha256(utf8.encode(name), Uint8Array.of(0x0a, SIG_ED25519), publicKey)).slice(0, 4);
}

/** c2sp.org/signed-note verifier key: name+hex(keyid)+base64(0x01 || key). Throws Failure. */
export async function parseVkey(vkey) {
  const first = vkey.indexOf("+");
  const second = first < 0 ? -1 : vkey.indexOf("+", first + 1);
  if (second < 0) fail("a verifier key is name+keyid+key");
  const name = vkey.slice(0, first);
  const idHex = vkey.slice(first + 1, second);
  if (badName(name)) fail("the verifier key's name is malformed");
  if (!/^[0-9a-f]{8}$/.test(idHex)) fail("the verifier key ID is not 8 lowercase hex digits");
  const raw = b64decode(vkey.slice(second + 1));
  if (raw === null || raw.length !== 33 || raw[0] !== SIG_ED25519) {
    fail("the verifier key is not base64 of an Ed25519 (type 0x01) key");
  }
  const publicKey = raw.slice(1);
  if (hex(await keyId(name, publicKey)) !== idHex) fail(`the key ID ${idHex} does not match the key`);
  return { name, id: fromHex(idHex), publicKey, text: vkey };
}

function fromHex(text) {
  return Uint8Array.from(text.match(/../g) || [], (h) => parseInt(h, 16));
}

// c2sp.org/tlog-proof §Format. Verifies nothing.
function parseProof(text) {
  if (typeof text !== "string" || !text) fail("the server sent no proof for this entry");
  if (text.length > MAX_TEXT) fail("the proof is larger than 1 MiB");
  const lines = text.split("\n");
  if (lines[0] !== HEADER) fail(`the first line is not "${HEADER}"`);
  let pos = 1;
  if (!lines[pos]?.startsWith("extra ")) fail("the proof carries no entry (no extra line)");
  const extra = b64decode(lines[pos].slice(6));
  if (extra === null) fail("the extra line (the entry) is not canonical base64");
  pos++;
  if (!lines[pos]?.startsWith("index ")) fail("there is no index line");
  const indexText = lines[pos].slice(6);
  if (!DECIMAL.test(indexText) || indexText.length > 20) fail("the index is not a decimal number");
  pos++;
  const path = [];
  while (pos < lines.length && lines[pos]) {
    const h = b64decode(lines[pos]);
    if (h === null || h.length !== 32) fail(`path hash ${path.length + 1} is not base64 of 32 bytes`);
    path.push(h);
    if (path.length > MAX_PATH) fail("the proof has more than 64 hashes");
    pos++;
  }
  if (pos >= lines.length) fail("there is no empty line before the checkpoint");
  const note = lines.slice(pos + 1).join("\n");
  if (!note || !note.endsWith("\n")) fail("the checkpoint is missing or does not end in a newline");
  return { index: BigInt(indexText), extra, path, note };
}

async function ed25519Verify(publicKey, signature, message) {
  let key;
  try {
    key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (err) {
    fail(`this browser's WebCrypto cannot import an Ed25519 key (${err.name})`);
  }
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

// c2sp.org/signed-note: every signature by this key must verify, and there must be one.
async function verifyNote(note, key) {
  if (hasControl(note, true)) fail("the checkpoint contains a control character");
  const split = note.lastIndexOf("\n\n");
  if (split < 0) fail("the checkpoint has no empty line before its signatures");
  const text = note.slice(0, split + 1);
  const lines = note.slice(split + 2, -1).split("\n");
  let found = 0;
  for (const line of lines) {
    if (!line.startsWith(EM_DASH_PREFIX)) fail("a checkpoint signature line is malformed");
    const rest = line.slice(EM_DASH_PREFIX.length);
    const sp = rest.indexOf(" ");
    const blob = sp < 0 ? null : b64decode(rest.slice(sp + 1));
    if (blob === null || blob.length < 5) fail("a checkpoint signature is not base64");
    if (rest.slice(0, sp) !== key.name || !equal(blob.slice(0, 4), key.id)) continue;
    const sig = blob.slice(4);
    if (sig.length !== 64 || !(await ed25519Verify(key.publicKey, sig, utf8.encode(text)))) {
      fail(`the checkpoint signature by ${key.name} does not verify`);
    }
    found++;
  }
  if (!found) fail(`the checkpoint has no signature by ${key.name}+${hex(key.id)}`);
  return text;
}

// c2sp.org/tlog-checkpoint §Note text
function parseCheckpoint(text) {
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) fail("the checkpoint has fewer than three lines");
  const [origin, sizeText, rootText] = lines;
  if (!DECIMAL.test(sizeText) || sizeText.length > 20) fail("the checkpoint size is not a number");
  const root = b64decode(rootText);
  if (root === null || root.length !== 32) fail("the checkpoint root is not base64 of 32 bytes");
  return { origin, size: BigInt(sizeText), root };
}

// RFC 9162 §2.1.3.2
async function rootFromPath(index, size, leaf, path) {
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const [i, p] of path.entries()) {
    if (sn === 0n) fail(`path hash ${i + 1} is one more than the tree has levels`);
    if (fn & 1n || fn === sn) {
      r = await nodeHash(p, r);
      if (!(fn & 1n)) {
        while (fn && !(fn & 1n)) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) fail(`the path has ${path.length} hashes: fewer than the tree has levels`);
  return r;
}

export const STEPS = [
  ["proof", "Proof is a tlog-proof of this ledger index"],
  ["signature", "Checkpoint signature (Ed25519, log key)"],
  ["inclusion", "Leaf SHA-256(0x00 ‖ entry) is included under the signed root"],
  ["entry", "Entry is this execution's decision"],
  ["link", "Link: parent_leaf is the parent's leaf hash"],
];

/**
 * Prove one hop. `hop` is the server's claim ({id, index, leaf_hash, parent, parent_leaf}),
 * `proofText` its tlog-proof, `parent` the previous hop's proven result (null for the root).
 * `report(step)` sees each step ({id, title, status: pass|fail, detail}). Returns
 * {ok, steps, leaf (hex), record} and stops at the first failing step.
 */
export async function proveHop(hop, proofText, key, parent, report = () => {}) {
  const steps = [];
  const out = { ok: false, steps, leaf: null, record: null, failed: null };
  let proof = null;
  let checkpoint = null;
  const checks = {
    proof: () => {
      proof = parseProof(proofText);
      if (proof.index !== BigInt(hop.index)) fail(`the proof is for index ${proof.index}, not ${hop.index}`);
      return `entry ${proof.index}, ${proof.extra.length} bytes, ${proof.path.length} path hashes`;
    },
    signature: async () => {
      checkpoint = parseCheckpoint(await verifyNote(proof.note, key));
      if (checkpoint.origin !== key.name) fail(`the checkpoint is of log ${checkpoint.origin}, not ${key.name}`);
      if (proof.index >= checkpoint.size) fail(`entry ${proof.index} is outside the tree of size ${checkpoint.size}`);
      return `${checkpoint.origin}, tree size ${checkpoint.size}`;
    },
    inclusion: async () => {
      const leaf = await leafHash(proof.extra);
      const root = await rootFromPath(proof.index, checkpoint.size, leaf, proof.path);
      if (!equal(root, checkpoint.root)) {
        fail(`computed root ${hex(root)} is not the signed root ${hex(checkpoint.root)}: the entry or a path hash was changed`);
      }
      out.leaf = hex(leaf);
      return `leaf ${out.leaf}`;
    },
    entry: () => {
      let rec;
      try {
        rec = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(proof.extra));
      } catch {
        fail("the entry is not a JSON record");
      }
      if (!rec || rec.type !== "decision") fail("the entry is not a decision record");
      if (rec.id !== hop.id) fail(`the entry is the decision of ${rec.id}, not ${hop.id}`);
      if (hop.leaf_hash !== out.leaf) fail(`the server named leaf ${hop.leaf_hash}, the entry's is ${out.leaf}`);
      out.record = rec;
      return `decision ${rec.id}: ${rec.effect}`;
    },
    link: () => {
      const rec = out.record;
      const namedParent = rec.parent ?? null;
      const namedLeaf = rec.parent_leaf ?? null;
      if (parent === null) {
        if (namedParent !== null || namedLeaf !== null) fail(`the root names a parent ${namedParent}: the chain is not complete`);
        return "the root: it names no parent";
      }
      if (namedParent !== parent.record.id) fail(`the entry names parent ${namedParent}, the previous hop is ${parent.record.id}`);
      if (namedLeaf !== parent.leaf) fail(`parent_leaf ${namedLeaf} is not the parent's leaf ${parent.leaf}`);
      return `parent_leaf = ${namedLeaf}`;
    },
  };
  for (const [id, title] of STEPS) {
    const s = { id, title, status: "pass", detail: "" };
    try {
      s.detail = (await checks[id]()) ?? "";
    } catch (err) {
      s.status = "fail";
      s.detail = err instanceof Failure ? err.message : `unexpected error: ${err}`;
    }
    steps.push(s);
    report(s);
    if (s.status === "fail") {
      out.failed = s;
      return out;
    }
  }
  out.ok = true;
  return out;
}

/**
 * Prove a chain, root first: `hops` as /console/api/lineage/chain gives them, `proofOf(hop)`
 * a promise of the hop's proof text. `onHop(i, result)` is called as each hop ends. Returns
 * {ok, hops: [result...], failedAt (index or null)}; hops after a failing one are not proven.
 */
export async function proveChain(hops, proofOf, key, onHop = () => {}) {
  const results = [];
  let parent = null;
  for (const [i, hop] of hops.entries()) {
    let text = null;
    let problem = null;
    try {
      text = await proofOf(hop);
    } catch (err) {
      problem = err;
    }
    const result = problem
      ? { ok: false, steps: [], failed: { id: "proof", title: STEPS[0][1], status: "fail", detail: `could not fetch the proof: ${problem.message || problem}` } }
      : await proveHop(hop, text, key, parent);
    if (problem) result.steps.push(result.failed);
    results.push(result);
    onHop(i, result);
    if (!result.ok) return { ok: false, hops: results, failedAt: i };
    parent = result;
  }
  return { ok: results.length > 0, hops: results, failedAt: null };
}
