// Interlock Governance Proof Viewer: verifies a C2SP tlog-proof@v1 evidence bundle (and the
// DSSE decision receipt beside it) in the browser, with WebCrypto only (SHA-256, Ed25519).
// Nothing is fetched and nothing is sent: the page's CSP has connect-src 'none'.
//
// Formats, as src/interlock/ledger/{proof,note,merkle}.py and src/interlock/trust/receipt.py
// write them:
//   c2sp.org/tlog-proof      header, "extra <b64>", "index <N>", hashes, "", signed checkpoint
//   c2sp.org/signed-note     text "\n" then "— <name> b64(keyid(4) || sig(64))" lines
//   c2sp.org/tlog-checkpoint origin "\n" size "\n" b64(root) "\n" [extension lines]
//   RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) verification
//   DSSE v1 envelope over an in-toto Statement v1 (the Interlock decision-receipt predicate)

const HEADER = "c2sp.org/tlog-proof@v1";
const MAX_TEXT = 1 << 20;
const MAX_SIGNATURES = 100;
const MAX_PATH = 64;
const MAX_U64 = (1n << 64n) - 1n;
const SIG_ED25519 = 0x01;
const EM_DASH_PREFIX = "\u2014 ";
const DECIMAL = /^(0|[1-9][0-9]*)$/;
const PAYLOAD_TYPE = "application/vnd.in-toto+json";
const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE = "https://interlock.dev/decision-receipt/v1";
const SUBJECT_PREFIX = "interlock:decision/";
const PIN_KEY = "interlock.proof-viewer.vkey";

// A check that failed: the step it belongs to shows `message`.
class Failure extends Error {}

const fail = (message) => {
  throw new Failure(message);
};

// --- bytes ------------------------------------------------------------------------------------

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

const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

function fromHex(text) {
  if (!/^([0-9a-f]{2})*$/.test(text)) return null;
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

// Standard base64 (RFC 4648 §4), canonical only: padded, no whitespace, no stray bits.
function b64decodeStrict(text) {
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

// DSSE: standard or URL-safe base64, padded or not (protocol.md: verifiers MUST accept either).
function b64decodeDsse(text) {
  if (typeof text !== "string") return null;
  const body = text.replace(/=+$/, "");
  if (text.length - body.length > 2 || body.length % 4 === 1) return null;
  if (!/^[A-Za-z0-9+/_-]*$/.test(body)) return null;
  if (/[-_]/.test(body) && /[+/]/.test(body)) return null;
  const std = body.replace(/-/g, "+").replace(/_/g, "/");
  const padded = std + "=".repeat((4 - (std.length % 4)) % 4);
  if (text !== body && text.length !== padded.length) return null;
  return b64decodeStrict(padded);
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

// RFC 6962 §2.1: leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right)
const leafHash = (data) => sha256(Uint8Array.of(0x00), data);
const nodeHash = (left, right) => sha256(Uint8Array.of(0x01), left, right);

async function ed25519Verify(publicKey, signature, message) {
  let key;
  try {
    key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (err) {
    fail(`this browser's WebCrypto cannot import an Ed25519 key (${err.name})`);
  }
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

// c2sp.org/signed-note §Format: no ASCII control characters other than newline.
const hasControl = (text, allowNewline) =>
  Array.from(text).some((ch) => ch < " " && !(allowNewline && ch === "\n"));

function nameProblem(name) {
  if (!name) return "key name is empty";
  if (name.includes("+")) return "key name contains '+'";
  if (/\s/u.test(name)) return "key name contains a space";
  if (hasControl(name, false)) return "key name contains a control character";
  return null;
}

// c2sp.org/signed-note §Ed25519 signatures: key ID = SHA-256(name || 0x0A || 0x01 || key)[:4]
async function keyId(name, publicKey) {
  return (await sha256(utf8.encode(name), Uint8Array.of(0x0a, SIG_ED25519), publicKey)).slice(
    0,
    4,
  );
}

// --- parsing ----------------------------------------------------------------------------------

// c2sp.org/tlog-proof §Format. Verifies nothing.
export function parseProof(text) {
  if (text.length > MAX_TEXT) fail("the proof is larger than 1 MiB");
  if (text.includes("\r")) fail("the proof contains a carriage return");
  const lines = text.split("\n");
  if (lines[0] !== HEADER) fail(`the first line is not "${HEADER}"`);
  let pos = 1;
  let extra = null;
  if (pos < lines.length && lines[pos].startsWith("extra ")) {
    extra = b64decodeStrict(lines[pos].slice(6));
    if (extra === null) fail("the extra line (the entry) is not canonical base64");
    pos++;
  }
  if (pos >= lines.length || !lines[pos].startsWith("index ")) fail("there is no index line");
  const indexText = lines[pos].slice(6);
  if (!DECIMAL.test(indexText) || BigInt(indexText) > MAX_U64) {
    fail("the index is not a canonical decimal number");
  }
  pos++;
  const path = [];
  while (pos < lines.length && lines[pos]) {
    const h = b64decodeStrict(lines[pos]);
    if (h === null || h.length !== 32) {
      fail(`hash line ${path.length + 1} is not base64 of 32 bytes`);
    }
    path.push(h);
    if (path.length > MAX_PATH) fail("the proof has more than 64 hashes");
    pos++;
  }
  if (pos >= lines.length) fail("there is no empty line before the checkpoint");
  const note = lines.slice(pos + 1).join("\n");
  if (!note || note.startsWith("\n") || !note.endsWith("\n")) {
    fail("the checkpoint is missing or does not end in a newline");
  }
  return { index: BigInt(indexText), extra, path, note };
}

// c2sp.org/signed-note §Verifier keys: name+hex(keyid)+base64(0x01 || key)
export async function parseVkey(vkey) {
  const first = vkey.indexOf("+");
  const second = first < 0 ? -1 : vkey.indexOf("+", first + 1);
  if (second < 0) fail("a verifier key is name+keyid+key");
  const name = vkey.slice(0, first);
  const idHex = vkey.slice(first + 1, second);
  const problem = nameProblem(name);
  if (problem) fail(`verifier key: ${problem}`);
  if (!/^[0-9a-f]{8}$/.test(idHex)) fail("the verifier key ID is not 8 lowercase hex digits");
  const raw = b64decodeStrict(vkey.slice(second + 1));
  if (raw === null) fail("the verifier key material is not canonical base64");
  if (raw.length !== 33 || raw[0] !== SIG_ED25519) {
    fail("the verifier key is not an Ed25519 (type 0x01) key");
  }
  const publicKey = raw.slice(1);
  const id = await keyId(name, publicKey);
  if (hex(id) !== idHex) fail(`the key ID ${idHex} does not match the name and key`);
  return { name, id, publicKey };
}

// c2sp.org/signed-note §Format: the text, then after the last empty line the signature lines.
function splitNote(note) {
  if (utf8.encode(note).length > MAX_TEXT) fail("the note is larger than 1 MiB");
  if (hasControl(note, true)) fail("the note contains a control character");
  const split = note.lastIndexOf("\n\n");
  if (split < 0) fail("the note has no empty line before its signatures");
  const text = note.slice(0, split + 1);
  const block = note.slice(split + 2);
  if (!block || !block.endsWith("\n")) fail("the note's signature lines do not end in a newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) fail("the note has more than 100 signatures");
  const sigs = lines.map((line, n) => {
    if (!line.startsWith(EM_DASH_PREFIX)) fail(`signature line ${n + 1} is malformed`);
    const rest = line.slice(EM_DASH_PREFIX.length);
    const sp = rest.indexOf(" ");
    if (sp < 0 || nameProblem(rest.slice(0, sp))) {
      fail(`signature line ${n + 1} has a bad key name`);
    }
    const blob = b64decodeStrict(rest.slice(sp + 1));
    if (blob === null || blob.length < 5) fail(`signature line ${n + 1} is not base64`);
    return { name: rest.slice(0, sp), id: blob.slice(0, 4), sig: blob.slice(4) };
  });
  return { text, sigs };
}

// Every signature by this key (name and key ID) must verify, and there must be one.
export async function verifyNote(note, key) {
  const { text, sigs } = splitNote(note);
  let found = 0;
  for (const s of sigs) {
    if (s.name !== key.name || !equal(s.id, key.id)) continue; // another key: ignored
    if (s.sig.length !== 64 || !(await ed25519Verify(key.publicKey, s.sig, utf8.encode(text)))) {
      fail(`the signature by ${key.name}+${hex(key.id)} does not verify`);
    }
    found++;
  }
  if (!found) fail(`the note has no signature by ${key.name}+${hex(key.id)}`);
  return { text, count: found, others: sigs.length - found };
}

// c2sp.org/tlog-checkpoint §Note text
export function parseCheckpoint(text) {
  if (!text.endsWith("\n")) fail("the checkpoint text does not end in a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) fail("the checkpoint has fewer than three lines");
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!origin || hasControl(origin, false)) fail("the checkpoint origin is empty or malformed");
  if (!DECIMAL.test(sizeText) || sizeText.length > 20 || BigInt(sizeText) > MAX_U64) {
    fail("the checkpoint size is not a canonical decimal number");
  }
  const root = b64decodeStrict(rootText);
  if (root === null || root.length !== 32) fail("the checkpoint root is not base64 of 32 bytes");
  if (extensions.some((e) => !e || hasControl(e, false))) {
    fail("a checkpoint extension line is empty or malformed");
  }
  return { origin, size: BigInt(sizeText), root, extensions };
}

// A consistency proof as pasted: the JSON of `interlock ledger consistency --json`, or one hash
// per line, base64 (32 bytes) or 64 hex digits.
export function parseHashList(text) {
  const trimmed = text.trim();
  if (!trimmed) return { hashes: [] };
  if (trimmed.startsWith("{")) {
    let obj;
    try {
      obj = JSON.parse(trimmed);
    } catch {
      fail("the consistency proof is not valid JSON");
    }
    if (!Array.isArray(obj.proof)) fail('the consistency JSON has no "proof" list');
    const out = parseHashList(obj.proof.join("\n"));
    return { ...out, old: obj.old, new: obj.new };
  }
  const hashes = trimmed.split(/\s+/).map((line, n) => {
    const h = /^[0-9a-f]{64}$/.test(line) ? fromHex(line) : b64decodeStrict(line);
    if (h === null || h.length !== 32) fail(`consistency hash ${n + 1} is not a 32-byte hash`);
    return h;
  });
  if (hashes.length > MAX_PATH) fail("the consistency proof has more than 64 hashes");
  return { hashes };
}

// --- RFC 9162 verification --------------------------------------------------------------------

// RFC 9162 §2.1.3.2, one record per proof hash so the page can show the path step by step.
export async function inclusionSteps(index, size, leaf, path) {
  if (index < 0n || index >= size) {
    fail(`the leaf index ${index} is outside the tree of size ${size}`);
  }
  if (leaf.length !== 32) fail("the leaf hash is not 32 bytes");
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  const steps = [];
  for (const [i, p] of path.entries()) {
    if (sn === 0n || p.length !== 32) {
      const error = p.length !== 32 ? "not a 32-byte hash" : "one hash more than the tree has levels";
      steps.push({ i, sibling: p, error });
      return { steps, root: null };
    }
    let side;
    if (fn & 1n || fn === sn) {
      r = await nodeHash(p, r); // the sibling is on the left
      side = "left";
      if (!(fn & 1n)) {
        while (fn && !(fn & 1n)) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
      side = "right";
    }
    fn >>= 1n;
    sn >>= 1n;
    steps.push({ i, sibling: p, side, result: r });
  }
  if (sn !== 0n) return { steps, root: null, short: true };
  return { steps, root: r };
}

// RFC 9162 §2.1.4.2, with the two cases that need an empty proof (old = new, old = 0).
export async function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
  if (oldSize < 0n || oldSize > newSize) {
    fail(`the later checkpoint (${newSize}) is smaller than ${oldSize}`);
  }
  if ([oldRoot, newRoot, ...proof].some((h) => h.length !== 32)) fail("a hash is not 32 bytes");
  if (oldSize === newSize || oldSize === 0n) {
    if (proof.length) fail("the consistency proof must be empty for these sizes");
    if (oldSize === newSize && !equal(oldRoot, newRoot)) {
      fail("two different roots for the same tree size: the log forked");
    }
    return "nothing to prove";
  }
  if (!proof.length) fail("the consistency proof is empty");
  const path = [...proof];
  if ((oldSize & (oldSize - 1n)) === 0n) path.unshift(oldRoot);
  let fn = oldSize - 1n;
  let sn = newSize - 1n;
  while (fn & 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) fail("the consistency proof has more hashes than needed");
    if (fn & 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if (!(fn & 1n)) {
        while (fn && !(fn & 1n)) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) fail("the consistency proof has fewer hashes than needed");
  if (!equal(fr, oldRoot)) fail(`the proof leads to old root ${hex(fr)}, not ${hex(oldRoot)}`);
  if (!equal(sr, newRoot)) fail(`the proof leads to new root ${hex(sr)}, not ${hex(newRoot)}`);
  return `${path.length} hashes`;
}

// --- DSSE receipt -----------------------------------------------------------------------------

// RFC 8785 for the JSON a receipt holds (strings, integers, booleans, null, arrays, objects):
// keys sorted by UTF-16 code units, JSON.stringify's string and number forms.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

// DSSE protocol.md §Signature Definition
function pae(type, body) {
  const t = utf8.encode(type);
  return concat(utf8.encode(`DSSEv1 ${t.length} `), t, utf8.encode(` ${body.length} `), body);
}

export function parseReceipt(text) {
  if (text.length > 64 * 1024) fail("the receipt is larger than 64 KiB");
  let env;
  try {
    env = JSON.parse(text);
  } catch {
    fail("the receipt is not JSON");
  }
  const fields = env && typeof env === "object" ? Object.keys(env).sort().join(",") : "";
  if (fields !== "payload,payloadType,signatures") {
    fail("the receipt is not a DSSE envelope of payload, payloadType and signatures");
  }
  if (!Array.isArray(env.signatures) || !env.signatures.length || env.signatures.length > 16) {
    fail("the receipt has no signatures, or more than 16");
  }
  return env;
}

export async function verifyReceiptSignature(env, nodeKey) {
  if (env.payloadType !== PAYLOAD_TYPE) fail("the receipt's payloadType is not in-toto");
  const body = b64decodeDsse(env.payload);
  if (body === null) fail("the receipt payload is not base64");
  const kid = hex(await sha256(nodeKey));
  const message = pae(env.payloadType, body);
  for (const s of env.signatures) {
    if (!s || typeof s !== "object" || (s.keyid !== "" && s.keyid !== kid)) continue; // a hint
    const sig = b64decodeDsse(s.sig);
    if (sig && sig.length === 64 && (await ed25519Verify(nodeKey, sig, message))) return body;
  }
  fail(`no signature in the receipt verifies with node key ${hex(nodeKey)}`);
}

export function parseStatement(body) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(body);
  } catch {
    fail("the statement is not UTF-8");
  }
  let st;
  try {
    st = JSON.parse(text);
  } catch {
    fail("the statement is not JSON");
  }
  // Interlock signs RFC 8785 bytes: anything else (duplicate keys, other spacing) is refused
  // so that this page and `interlock receipt verify` read one and the same statement.
  if (canonical(st) !== text) fail("the statement is not in canonical (RFC 8785) form");
  if (st._type !== STATEMENT_TYPE) fail("the statement is not an in-toto v1 Statement");
  if (st.predicateType !== PREDICATE_TYPE) fail("the predicate is not an Interlock receipt");
  const subj = Array.isArray(st.subject) && st.subject.length === 1 ? st.subject[0] : null;
  const digest = subj?.digest?.sha256;
  if (typeof subj?.name !== "string" || !subj.name.startsWith(SUBJECT_PREFIX)) {
    fail("the statement's subject is not one Interlock decision");
  }
  if (typeof digest !== "string" || !/^[0-9a-f]{64}$/.test(digest)) {
    fail("the subject has no SHA-256 digest");
  }
  const p = st.predicate ?? {};
  return {
    id: subj.name.slice(SUBJECT_PREFIX.length),
    digest,
    effect: p.effect,
    reasons: p.reasons,
    snapshot: p.snapshot,
    origin: p.ledger?.origin,
    index: p.ledger?.index,
  };
}

async function checkReceiptEntry(stmt, entry, proofIndex, origin) {
  const digest = hex(await sha256(entry));
  if (digest !== stmt.digest) fail(`SHA-256 of the entry is ${digest}, the receipt signed ${stmt.digest}`);
  let rec;
  try {
    rec = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(entry));
  } catch {
    fail("the entry is not a JSON record");
  }
  const codes = Array.isArray(rec.reasons) ? rec.reasons.map((r) => r?.code) : null;
  if (rec.type !== "decision" || rec.id !== stmt.id) fail("the entry is not the receipt's decision");
  if (rec.effect !== stmt.effect) fail("the receipt's effect differs from the entry's");
  if (JSON.stringify(codes) !== JSON.stringify(stmt.reasons)) {
    fail("the receipt's reason codes differ from the entry's");
  }
  if ((rec.snapshot ?? null) !== (stmt.snapshot ?? null)) fail("the snapshot differs");
  if (stmt.index === null || stmt.index === undefined || BigInt(stmt.index) !== proofIndex) {
    fail(`the receipt names ledger index ${stmt.index}, the proof ${proofIndex}`);
  }
  if (stmt.origin !== origin) fail(`the receipt names log ${stmt.origin}, the proof ${origin}`);
}

// --- the verification, as a list of named steps ------------------------------------------------

// Runs every check in order and stops at the first failure. `report(step)` is called as each
// step starts and ends; a step is {id, title, status: pending|pass|fail|skip, detail}.
export async function verifyEvidence(input, report) {
  const steps = [];
  const step = async (id, title, fn) => {
    const s = { id, title, status: "pending", detail: "" };
    steps.push(s);
    report(s);
    try {
      s.detail = (await fn()) ?? "";
      s.status = "pass";
    } catch (err) {
      s.status = "fail";
      s.detail = err instanceof Failure ? err.message : `unexpected error: ${err}`;
    }
    report(s);
    if (s.status === "fail") throw s;
    return s;
  };
  const skip = (id, title, why) => {
    const s = { id, title, status: "skip", detail: why };
    steps.push(s);
    report(s);
  };
  const out = { steps, failed: null, entry: null, receipt: null };
  try {
    if (!globalThis.crypto?.subtle) {
      await step("webcrypto", "WebCrypto is available", () =>
        fail("crypto.subtle is missing: open this page over https, on localhost, or as a file"),
      );
    }
    const hasProof = Boolean(input.proof.trim());
    const hasReceipt = Boolean(input.receipt.trim());
    if (!hasProof && !hasReceipt) {
      await step("input", "Evidence given", () => fail("drop or paste a .tlog-proof or a receipt"));
    }
    let proof = null;
    let cp = null;
    if (hasProof) {
      await step("parse", "Proof is a c2sp.org/tlog-proof@v1 bundle", () => {
        proof = parseProof(input.proof);
        if (proof.extra === null) fail("the bundle carries no entry (no extra line)");
        return `entry ${proof.index}, ${proof.extra.length} bytes, ${proof.path.length} path hashes`;
      });
      let key = null;
      await step("vkey", "Log verifier key", async () => {
        if (!input.vkey.trim()) fail("paste the log's verifier key (interlock ledger vkey)");
        key = await parseVkey(input.vkey.trim());
        return `${key.name}, key ID ${hex(key.id)}`;
      });
      let noteText = null;
      await step("signature", "Checkpoint signature (Ed25519)", async () => {
        const v = await verifyNote(proof.note, key);
        noteText = v.text;
        const others = v.others ? `; ${v.others} other signature(s) ignored` : "";
        return `signed by ${key.name}+${hex(key.id)}${others}`;
      });
      await step("checkpoint", "Checkpoint names this log and covers the entry", () => {
        cp = parseCheckpoint(noteText);
        if (cp.origin !== key.name) fail(`origin ${cp.origin} is not the key's log ${key.name}`);
        if (proof.index >= cp.size) fail(`entry ${proof.index} is outside the tree of size ${cp.size}`);
        return `${cp.origin}, tree size ${cp.size}, root ${hex(cp.root)}`;
      });
      let leaf = null;
      await step("leaf", "Leaf hash SHA-256(0x00 ‖ entry)", async () => {
        leaf = await leafHash(proof.extra);
        return hex(leaf);
      });
      const inc = await inclusionSteps(proof.index, cp.size, leaf, proof.path);
      for (const s of inc.steps) {
        await step(`path-${s.i}`, `Inclusion path ${s.i + 1} of ${proof.path.length}`, () => {
          if (s.error) fail(`${s.error} (sibling ${hex(s.sibling)})`);
          const expr = s.side === "left" ? "0x01 ‖ sibling ‖ node" : "0x01 ‖ node ‖ sibling";
          return `SHA-256(${expr}) with sibling ${hex(s.sibling)} = ${hex(s.result)}`;
        });
      }
      await step("root", "Inclusion path leads to the checkpoint root", () => {
        if (inc.short) fail(`the path has ${proof.path.length} hashes: fewer than the tree has levels`);
        if (!equal(inc.root, cp.root)) {
          fail(
            `computed root ${hex(inc.root)} is not the signed root ${hex(cp.root)}:` +
              " the entry, a path hash or the index was changed",
          );
        }
        return `entry ${proof.index} is in the log ${cp.origin} of size ${cp.size}`;
      });
      out.entry = proof.extra;
    }
    if (hasReceipt) {
      let env = null;
      let body = null;
      await step("receipt-parse", "Receipt is a DSSE envelope", () => {
        env = parseReceipt(input.receipt);
      });
      if (!input.nodeKey.trim()) {
        skip("receipt-signature", "Receipt signature (Ed25519, node key)", "not checked: give the node key");
      } else {
        await step("receipt-signature", "Receipt signature (Ed25519, node key)", async () => {
          const nodeKey = fromHex(input.nodeKey.trim().toLowerCase());
          if (nodeKey === null || nodeKey.length !== 32) fail("the node key is not 64 hex digits");
          body = await verifyReceiptSignature(env, nodeKey);
          return `signed by node key ${hex(nodeKey)}`;
        });
        let stmt = null;
        await step("receipt-statement", "Receipt statement (in-toto v1)", () => {
          stmt = parseStatement(body);
          out.receipt = stmt;
          return `decision ${stmt.id}: ${stmt.effect} (${(stmt.reasons ?? []).join(", ") || "no reasons"})`;
        });
        if (proof) {
          await step("receipt-entry", "Receipt names this entry", async () => {
            await checkReceiptEntry(stmt, proof.extra, proof.index, cp.origin);
            return `SHA-256 of the entry is the receipt's subject digest ${stmt.digest}`;
          });
        } else {
          skip("receipt-entry", "Receipt names a ledger entry", "no proof given: inclusion not shown");
        }
      }
    }
    const later = input.later.trim() ? `${input.later.replace(/\r\n/g, "\n").trimEnd()}\n` : "";
    if (later && cp) {
      let next = null;
      await step("later-signature", "Later checkpoint signature (Ed25519)", async () => {
        const key = await parseVkey(input.vkey.trim());
        next = parseCheckpoint((await verifyNote(later, key)).text);
        if (next.origin !== key.name) fail(`origin ${next.origin} is not the key's log`);
        return `tree size ${next.size}, root ${hex(next.root)}`;
      });
      await step("consistency", "Later checkpoint is consistent with this one", async () => {
        const given = parseHashList(input.consistency);
        if (given.old !== undefined && BigInt(given.old) !== cp.size) {
          fail(`the consistency proof starts at size ${given.old}, the checkpoint is ${cp.size}`);
        }
        if (given.new !== undefined && BigInt(given.new) !== next.size) {
          fail(`the consistency proof ends at size ${given.new}, the later checkpoint is ${next.size}`);
        }
        const how = await verifyConsistency(cp.size, next.size, cp.root, next.root, given.hashes);
        return `size ${cp.size} → ${next.size} (RFC 9162 §2.1.4.2, ${how}): the log only grew`;
      });
    } else if (later) {
      skip("consistency", "Later checkpoint is consistent", "needs a proof bundle's checkpoint");
    }
  } catch (failed) {
    if (!(failed && failed.status === "fail")) throw failed;
    out.failed = failed;
  }
  return out;
}

// --- the page ---------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

const STATUS_TEXT = { pending: "…", pass: "pass", fail: "FAIL", skip: "skipped" };

function renderStep(list, s, number) {
  let item = list.querySelector(`[data-step="${CSS.escape(s.id)}"]`);
  if (!item) {
    item = el("li", { "data-step": s.id });
    list.append(item);
  }
  item.dataset.status = s.status;
  item.replaceChildren(
    el("span", { class: "badge", "aria-hidden": "true" }, STATUS_TEXT[s.status]),
    el("span", { class: "title" }, `${number}. ${s.title}`),
    el("span", { class: "sr-only" }, `: ${STATUS_TEXT[s.status]}. `),
    el("span", { class: "detail" }, s.detail),
  );
}

async function readFile(file) {
  const buf = await file.arrayBuffer();
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(buf);
  } catch {
    return null;
  }
}

async function takeFiles(files) {
  const notes = [];
  for (const file of files) {
    const text = await readFile(file);
    if (text === null) {
      notes.push(`${file.name}: not UTF-8 text, ignored`);
    } else if (text.startsWith(HEADER)) {
      $("proof").value = text;
      notes.push(`${file.name}: proof`);
    } else if (text.trimStart().startsWith("{")) {
      $("receipt").value = text;
      notes.push(`${file.name}: receipt`);
    } else {
      notes.push(`${file.name}: neither a tlog-proof nor a receipt, ignored`);
    }
  }
  $("files-status").textContent = notes.join("; ");
}

const withFinalNewline = (text) => (text.trim() && !text.endsWith("\n") ? `${text}\n` : text);

async function run() {
  const list = $("steps");
  list.replaceChildren();
  const verdict = $("verdict");
  verdict.dataset.verdict = "running";
  verdict.textContent = "Verifying…";
  $("entry-section").hidden = true;
  const ids = [];
  const input = {
    // a pasted text may have lost its final newline (it is not signed); nothing else is changed
    proof: withFinalNewline($("proof").value.replace(/\r\n/g, "\n")),
    receipt: $("receipt").value,
    vkey: $("vkey").value,
    nodeKey: $("node-key").value,
    later: $("later").value,
    consistency: $("consistency").value,
  };
  let result;
  try {
    result = await verifyEvidence(input, (s) => {
      if (!ids.includes(s.id)) ids.push(s.id);
      renderStep(list, s, ids.indexOf(s.id) + 1);
    });
  } catch (err) {
    result = { failed: { title: "the viewer itself", detail: String(err) }, steps: [] };
  }
  if (result.failed) {
    verdict.dataset.verdict = "failed";
    const n = ids.indexOf(result.failed.id) + 1;
    verdict.textContent = `NOT verified — step ${n} failed: ${result.failed.title}. ${result.failed.detail}`;
  } else {
    const skipped = result.steps.filter((s) => s.status === "skip").length;
    verdict.dataset.verdict = "verified";
    verdict.textContent =
      `Verified — all ${result.steps.length - skipped} checks passed in this browser` +
      (skipped ? ` (${skipped} skipped)` : "") +
      ".";
  }
  if (result.entry) {
    let shown;
    try {
      shown = JSON.stringify(JSON.parse(new TextDecoder().decode(result.entry)), null, 2);
    } catch {
      shown = new TextDecoder().decode(result.entry);
    }
    $("entry").textContent = shown;
    $("entry-section").hidden = false;
  }
  verdict.focus();
}

function init() {
  const pinned = (() => {
    try {
      return localStorage.getItem(PIN_KEY);
    } catch {
      return null; // storage can be off (file://, private mode): pinning then does nothing
    }
  })();
  if (pinned) {
    $("vkey").value = pinned;
    $("pin").checked = true;
  }
  $("pin").addEventListener("change", () => {
    try {
      if ($("pin").checked) localStorage.setItem(PIN_KEY, $("vkey").value.trim());
      else localStorage.removeItem(PIN_KEY);
    } catch {
      $("pin").checked = false;
    }
  });
  $("vkey").addEventListener("change", () => {
    if ($("pin").checked) {
      try {
        localStorage.setItem(PIN_KEY, $("vkey").value.trim());
      } catch {
        // not pinned; nothing else depends on it
      }
    }
  });
  $("files").addEventListener("change", (e) => takeFiles(e.target.files));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    takeFiles(e.dataTransfer.files);
  });
  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  $("clear").addEventListener("click", () => {
    for (const id of ["proof", "receipt", "later", "consistency", "node-key"]) $(id).value = "";
    $("files").value = "";
    $("files-status").textContent = "";
    $("steps").replaceChildren();
    $("verdict").dataset.verdict = "idle";
    $("verdict").textContent = "Nothing verified yet.";
    $("entry-section").hidden = true;
  });
  document.documentElement.dataset.ready = "true";
}

// For tests and the curious: the pure functions, callable from the console.
globalThis.interlockProofViewer = {
  parseProof,
  parseVkey,
  verifyNote,
  parseCheckpoint,
  inclusionSteps,
  verifyConsistency,
  verifyEvidence,
  leafHash,
  nodeHash,
  hex,
  fromHex,
};

init();
