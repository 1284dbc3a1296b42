#!/usr/bin/env python3
"""Independent verifier of `ledger export` files (JSON Lines).

Written from docs/EXPORT.md, docs/FORMAT.md and docs/CHECKPOINT.md alone: it shares no
code with the ledger. Needs the `blake3` and `PyNaCl` packages (tools/requirements.txt).

    python3 tools/verify_export.py [--pubkey KEY.pub] FILE...
    python3 tools/verify_export.py --self-test

Prints one line per file, "FILE: ok: ..." or "FILE: line N: reason", and exits 0 when
every file is intact, 3 when any is rejected, 2 on bad usage or an unreadable key.
"""
import base64
import hashlib
import json
import os
import struct
import sys

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

CONTEXT = "agent-ledger 2026-11-21 event v1"
FORMAT_NAME = "agent-ledger-export"
STATEMENT_TITLE = "agent-ledger export v1"
ORIGIN_PREFIX = "agent-ledger/"
MAX_LINE = 64 << 20          # bytes per line, without its newline
MAX_NOTE = 64 << 10          # bytes per trailer note
MAX_SIGNATURES = 100
HEX = set("0123456789abcdef")


class Reject(Exception):
    def __init__(self, line, reason):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class Bad(Exception):
    """A value does not have the shape the spec requires (becomes a Reject)."""


# --- JSON, strictly (docs/EXPORT.md section 2) ---------------------------------------

def _pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise Bad(f"key {k!r} appears twice")
        d[k] = v
    return d


def _no_float(s):
    raise Bad(f"number {s} is not an integer")


def _no_constant(s):
    raise Bad(f"{s} is not JSON")


def parse_json(raw):
    try:
        text = raw.decode("utf-8")
        v = json.loads(text, object_pairs_hook=_pairs, parse_float=_no_float,
                       parse_constant=_no_constant)
    except Bad:
        raise
    except (ValueError, RecursionError) as e:
        raise Bad(f"not JSON: {e}")
    if type(v) is not dict:
        raise Bad("the line is not a JSON object")
    return v


def obj(v, keys, what):
    if type(v) is not dict:
        raise Bad(f"{what} is not an object")
    missing = [k for k in keys if k not in v]
    extra = [k for k in v if k not in keys]
    if missing or extra:
        raise Bad(f"{what}: missing {missing}, unknown {extra}")
    return v


def integer(v, lo, hi, what):
    if type(v) is not int or not lo <= v <= hi:
        raise Bad(f"{what} is not an integer in [{lo}, {hi}]")
    return v


def u8(v, w): return integer(v, 0, 255, w)
def u32(v, w): return integer(v, 0, 2**32 - 1, w)
def i32(v, w): return integer(v, -2**31, 2**31 - 1, w)
def u64(v, w): return integer(v, 0, 2**64 - 1, w)
def i64(v, w): return integer(v, -2**63, 2**63 - 1, w)


def boolean(v, what):
    if type(v) is not bool:
        raise Bad(f"{what} is not a boolean")
    return v


def string(v, what):
    if type(v) is not str:
        raise Bad(f"{what} is not a string")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise Bad(f"{what} is not valid Unicode")
    return v


def optional(f, v, what):
    return None if v is None else f(v, what)


def hex_bytes(v, n, what):
    if type(v) is not str or len(v) != 2 * n or not set(v) <= HEX:
        raise Bad(f"{what} is not {2 * n} lowercase hex digits")
    return bytes.fromhex(v)


def hash32(v, what): return hex_bytes(v, 32, what)


def name_bytes(v, what):
    if type(v) is str:
        return string(v, what).encode("utf-8")
    obj(v, ["hex"], what)
    h = v["hex"]
    if type(h) is not str or len(h) % 2 or not set(h) <= HEX:
        raise Bad(f"{what}.hex is not lowercase hex")
    b = bytes.fromhex(h)
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return b
    raise Bad(f"{what} is valid UTF-8 and must be written as a string")


# --- Canonical encoding (docs/FORMAT.md; docs/EXPORT.md section 4) -------------------

def e_u8(n): return struct.pack("<B", n)
def e_u32(n): return struct.pack("<I", n)
def e_i32(n): return struct.pack("<i", n)
def e_u64(n): return struct.pack("<Q", n)
def e_i64(n): return struct.pack("<q", n)
def e_bool(b): return b"\x01" if b else b"\x00"
def e_bytes(b): return e_u64(len(b)) + b
def e_str(s): return e_bytes(s.encode("utf-8"))
def e_opt(f, v): return b"\x00" if v is None else b"\x01" + f(v)


OPS = {"create": 0, "modify": 1, "delete": 2}
MODES = {"regular": 0, "executable": 1, "symlink": 2}


def content(v, what):
    obj(v, ["hash", "mode", "size"], what)
    if v["mode"] not in MODES:
        raise Bad(f"{what}.mode is not one of {list(MODES)}")
    return (hash32(v["hash"], what + ".hash") + e_u32(MODES[v["mode"]])
            + e_u64(u64(v["size"], what + ".size")))


def resource(v, what):
    obj(v, ["key", "op", "old", "new"], what)
    key = obj(v["key"], ["namespace", "name"], what + ".key")
    if v["op"] not in OPS:
        raise Bad(f"{what}.op is not one of {list(OPS)}")
    return (e_str(string(key["namespace"], what + ".namespace"))
            + e_bytes(name_bytes(key["name"], what + ".name"))
            + e_u32(OPS[v["op"]])
            + e_opt(lambda c: content(c, what + ".old"), v["old"])
            + e_opt(lambda c: content(c, what + ".new"), v["new"]))


def s_(v, w): return e_str(string(v, w))
def os_(v, w): return e_opt(lambda x: e_str(string(x, w)), v)


# kind -> (variant index, [(key, encoder)])
BODIES = {
    "genesis": (0, [("ledger_id", lambda v, w: hex_bytes(v, 16, w)),
                    ("format_version", lambda v, w: e_u32(u32(v, w)))]),
    "change": (1, [("message", os_), ("reverts", os_),
                   ("resources", lambda v, w: resources(v, w))]),
    "check": (2, [("name", s_), ("level", s_), ("passed", lambda v, w: e_bool(boolean(v, w))),
                  ("detail", os_)]),
    "approval": (3, [("approver", s_), ("approved", lambda v, w: e_bool(boolean(v, w))),
                     ("comment", os_)]),
    "deployment": (4, [("environment", s_), ("percent", lambda v, w: e_u8(u8(v, w))),
                       ("version", s_)]),
    "failure": (5, [("stage", s_), ("error", s_),
                    ("exit_code", lambda v, w: e_opt(lambda x: e_i32(i32(x, w)), v))]),
    "kill-switch": (6, [("engaged", lambda v, w: e_bool(boolean(v, w))), ("scope", s_),
                        ("reason", s_)]),
    "redaction": (7, [("hash", hash32), ("reason", s_)]),
    "checkpoint": (8, [("size", lambda v, w: e_u64(u64(v, w))), ("root", hash32)]),
}


def resources(v, what):
    if type(v) is not list:
        raise Bad(f"{what} is not an array")
    return e_u64(len(v)) + b"".join(resource(r, f"{what}[{i}]") for i, r in enumerate(v))


def body_bytes(v):
    if type(v) is not dict or v.get("kind") not in BODIES:
        raise Bad("body.kind is not a known kind")
    index, fields = BODIES[v["kind"]]
    obj(v, ["kind"] + [k for k, _ in fields], "body")
    return e_u32(index) + b"".join(f(v[k], "body." + k) for k, f in fields)


EVENT_KEYS = ["type", "seq", "prev", "time_us", "actor", "change_id", "correlation_id",
              "body", "meta", "hash"]


def event_fields(v, filtered):
    """Checks an event line's shape; returns (canonical bytes, seq, prev, stated hash)."""
    obj(v, EVENT_KEYS + (["proof", "export_prev"] if filtered else []), "event line")
    actor = obj(v["actor"], ["agent", "principal", "role"], "actor")
    meta = v["meta"]
    if type(meta) is not dict:
        raise Bad("meta is not an object")
    entries = sorted((string(k, "meta key").encode("utf-8"),
                      string(x, "meta value").encode("utf-8")) for k, x in meta.items())
    seq = u64(v["seq"], "seq")
    prev = hash32(v["prev"], "prev")
    canonical = (e_u64(seq) + prev + e_i64(i64(v["time_us"], "time_us"))
                 + s_(actor["agent"], "actor.agent") + os_(actor["principal"], "actor.principal")
                 + os_(actor["role"], "actor.role")
                 + s_(v["change_id"], "change_id") + os_(v["correlation_id"], "correlation_id")
                 + body_bytes(v["body"])
                 + e_u64(len(entries)) + b"".join(e_bytes(k) + e_bytes(x) for k, x in entries))
    return canonical, seq, prev, hash32(v["hash"], "hash")


def event_hash(canonical):
    return blake3.blake3(canonical, derive_key_context=CONTEXT).digest()


# --- Merkle tree (docs/CHECKPOINT.md sections 1 and 2) --------------------------------

def H(b): return blake3.blake3(b).digest()
def leaf_hash(e): return H(b"\x00" + e)
def node_hash(l, r): return H(b"\x01" + l + r)


class Frontier:
    def __init__(self):
        self.size, self.nodes = 0, []

    def push(self, leaf):
        h, s = leaf, self.size
        while s & 1:
            h = node_hash(self.nodes.pop(), h)
            s >>= 1
        self.nodes.append(h)
        self.size += 1

    def root(self):
        if not self.nodes:
            return H(b"")
        r = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            r = node_hash(left, r)
        return r


def verify_inclusion(leaf, index, size, proof, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# --- Keys, notes, checkpoints (docs/CHECKPOINT.md sections 4 to 6) --------------------

def b64_canonical(s):
    try:
        raw = base64.b64decode(s, validate=True)
    except (ValueError, TypeError):
        return None
    return raw if base64.b64encode(raw).decode() == s else None


def valid_key_name(n):
    return (n != "" and "+" not in n and not any(c.isspace() for c in n)
            and not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in n))


def parse_verifier_key(text):
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise ValueError("expected <name>+<key ID>+<base64 key>")
    name, kid, b64 = parts
    raw = b64_canonical(b64)
    if not valid_key_name(name) or raw is None or len(raw) != 33 or raw[0] != 1:
        raise ValueError("not an Ed25519 verifier key")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if len(kid) != 8 or key_id.hex() != kid.lower():
        raise ValueError("the key ID does not match the name and key")
    return name, key_id, VerifyKey(raw[1:])


def note_split(note):
    """(text, signature lines) of a signed note, or None without a signature block."""
    i = note.rfind("\n\n")
    if i < 0:
        return None
    sigs = note[i + 2:]
    if not sigs or not sigs.endswith("\n"):
        return None
    return note[:i + 1], sigs[:-1].split("\n")


def open_note(note, key):
    name, key_id, vk = key
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise ValueError("control character in the note")
    split = note_split(note)
    if split is None:
        raise ValueError("no signature lines")
    text, lines = split
    verified = False
    for i, line in enumerate(lines):
        if i >= MAX_SIGNATURES:
            raise ValueError("too many signatures")
        if not line.startswith("\u2014 ") or " " not in line[2:]:
            raise ValueError("malformed signature line")
        n, b64 = line[2:].split(" ", 1)
        blob = b64_canonical(b64)
        if not valid_key_name(n) or blob is None or len(blob) < 5:
            raise ValueError("malformed signature line")
        if n == name and blob[:4] == key_id:
            try:
                vk.verify(text.encode("utf-8"), blob[4:])
            except (BadSignatureError, ValueError):
                raise ValueError(f"signature by {name} does not verify")
            verified = True
    if not verified:
        raise ValueError(f"no signature by {name}+{key_id.hex()}")
    return text


def canonical_decimal(s, lo, hi):
    try:
        n = int(s, 10)
    except ValueError:
        return None
    return n if str(n) == s and lo <= n <= hi else None


def parse_checkpoint(text):
    if not text.endswith("\n"):
        raise ValueError("the checkpoint does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 5 or any(l == "" for l in lines):
        raise ValueError("a checkpoint has five non-empty lines")
    origin, size_t, root_t, head_l, time_l = lines
    size = canonical_decimal(size_t, 0, 2**64 - 1)
    root = b64_canonical(root_t)
    if size is None or root is None or len(root) != 32:
        raise ValueError("bad checkpoint size or root")
    if not head_l.startswith("head ") or not time_l.startswith("time "):
        raise ValueError("bad checkpoint head or time line")
    head = hash32(head_l[5:], "checkpoint head")
    t = canonical_decimal(time_l[5:], -2**63, 2**63 - 1)
    if t is None:
        raise ValueError("bad checkpoint time")
    return {"origin": origin, "size": size, "root": root, "head": head}


def parse_statement(text):
    if not text.endswith("\n"):
        raise ValueError("the statement does not end with a newline")
    lines = text[:-1].split("\n")
    keys = ["origin", "size", "events", "header", "lines"]
    if len(lines) != 6 or lines[0] != STATEMENT_TITLE:
        raise ValueError("not an export statement")
    out = {}
    for k, line in zip(keys, lines[1:]):
        if not line.startswith(k + " "):
            raise ValueError(f"statement line {k!r} missing")
        out[k] = line[len(k) + 1:]
    for k in ("size", "events"):
        out[k] = canonical_decimal(out[k], 0, 2**64 - 1)
        if out[k] is None:
            raise ValueError(f"statement {k} is not a canonical decimal")
    for k in ("header", "lines"):
        out[k] = hash32(out[k], "statement " + k)
    return out


# --- The export (docs/EXPORT.md section 7) --------------------------------------------

def read_line(f, n, max_line):
    raw = f.readline(max_line + 1)
    if raw == b"":
        return None
    if raw.endswith(b"\n"):
        return raw[:-1]
    if len(raw) > max_line:
        raise Reject(n, f"the line is longer than {max_line} bytes")
    raise Reject(n, "the line does not end with a newline: the file was cut off")


def last_line(f, max_line):
    """The file's last line without its newline, read backwards in chunks; None if the
    file does not end with a newline or the line is longer than max_line."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return None
    f.seek(end - 1)
    if f.read(1) != b"\n":
        return None
    pos, chunks, total = end - 1, [], 0
    while pos > 0:
        n = min(pos, 64 << 10)
        pos -= n
        f.seek(pos)
        chunk = f.read(n)
        i = chunk.rfind(b"\n")
        if i >= 0:
            chunks.append(chunk[i + 1:])
            total += n - i - 1
            break
        chunks.append(chunk)
        total += n
        if total > max_line:
            return None
    if total > max_line:
        return None
    return b"".join(reversed(chunks))


def statement_text(note, key):
    if key is not None:
        return open_note(note, key)
    try:
        parse_statement(note)
        return note
    except ValueError:
        split = note_split(note)
        if split is None:
            raise ValueError("no statement")
        return split[0]


def matches(flt, ev):
    t, agent, change = ev["time_us"], ev["actor"]["agent"], ev["change_id"]
    return ((flt["since_us"] is None or t >= flt["since_us"])
            and (flt["until_us"] is None or t < flt["until_us"])
            and (flt["agent"] is None or agent == flt["agent"])
            and (flt["change_id"] is None or change == flt["change_id"]))


HEADER_KEYS = ["type", "format", "version", "origin", "exported_at_us", "filter", "signed",
               "tree_size", "tree_root"]


def verify(f, key, max_line=MAX_LINE):
    def bad(n, e):
        return Reject(n, str(e))

    # 1. The header.
    raw = read_line(f, 1, max_line)
    if raw is None:
        raise Reject(1, "the file is empty")
    header_digest = H(raw + b"\n")
    try:
        h = parse_json(raw)
        if h.get("type") != "header" or h.get("format") != FORMAT_NAME:
            raise Bad("not an export header")
        if "version" not in h:
            raise Bad("no format version")
        if type(h["version"]) is not int or h["version"] != 1:
            raise Bad(f"unknown export format version {h['version']!r}")
        obj(h, HEADER_KEYS, "header")
        origin = string(h["origin"], "origin")
        i64(h["exported_at_us"], "exported_at_us")
        flt = obj(h["filter"], ["since_us", "until_us", "agent", "change_id"], "filter")
        optional(i64, flt["since_us"], "since_us")
        optional(i64, flt["until_us"], "until_us")
        optional(string, flt["agent"], "agent")
        optional(string, flt["change_id"], "change_id")
        signed = boolean(h["signed"], "signed")
        size = u64(h["tree_size"], "tree_size")
        root = hash32(h["tree_root"], "tree_root")
        if not origin.startswith(ORIGIN_PREFIX):
            raise Bad("bad origin")
        ledger_id = hex_bytes(origin[len(ORIGIN_PREFIX):], 16, "origin")
    except Bad as e:
        raise bad(1, e)
    # 2.
    if key is not None and not signed:
        raise Reject(1, "the export is not signed but a key was given")
    # 3. The trailer's header digest, read first when the file can seek.
    hint = None
    try:
        pos = f.tell()
        hint = last_line(f, max_line)
        f.seek(pos)
    except (OSError, ValueError):
        hint = None
    if hint is not None:
        try:
            tr = obj(parse_json(hint), ["type", "checkpoint", "statement"], "trailer")
            note = string(tr["statement"], "statement")
            if tr["type"] == "trailer" and type(tr["checkpoint"]) is str \
                    and len(note.encode("utf-8")) <= MAX_NOTE:
                st = parse_statement(statement_text(note, key))
                if st["header"] != header_digest:
                    raise Reject(1, "the header was edited (its BLAKE3 is not the trailer's)")
        except (Bad, ValueError):
            pass
    filtered = any(flt[k] is not None for k in flt)

    # 4. Event lines.
    lines_digest = blake3.blake3()
    frontier = Frontier()
    events = 0
    last = None                      # (seq, hash)
    n = 1
    while True:
        n += 1
        raw = read_line(f, n, max_line)
        if raw is None:
            raise Reject(n, f"the file ends after line {n - 1} without a trailer: cut off")
        try:
            v = parse_json(raw)
            t = v.get("type")
            if t == "trailer":
                break
            if t != "event":
                raise Bad(f"unexpected line type {t!r}")
            canonical, seq, prev, stated = event_fields(v, filtered)
            if filtered:
                p = obj(v["proof"], ["leaf_index", "tree_size", "hashes"], "proof")
                leaf_index = u64(p["leaf_index"], "proof.leaf_index")
                proof_size = u64(p["tree_size"], "proof.tree_size")
                if type(p["hashes"]) is not list:
                    raise Bad("proof.hashes is not an array")
                hashes = [hash32(x, "proof hash") for x in p["hashes"]]
                export_prev = optional(hash32, v["export_prev"], "export_prev")
        except Bad as e:
            raise bad(n, e)
        eh = event_hash(canonical)
        if eh != stated:
            raise Reject(n, "the event's fields do not hash to its \"hash\": a field was edited")
        if seq >= size:
            raise Reject(n, "seq outside the export's tree")
        if v["body"]["kind"] == "genesis" and bytes.fromhex(v["body"]["ledger_id"]) != ledger_id:
            raise Reject(n, "the genesis event names another ledger than the header")
        if filtered:
            if last is not None and seq <= last[0]:
                raise Reject(n, "seqs must increase")
            if export_prev != (last[1] if last else None):
                raise Reject(n, "export_prev is not the previous event line's hash")
            if leaf_index != seq or proof_size != size:
                raise Reject(n, "the proof is for another leaf or tree")
            if not verify_inclusion(leaf_hash(eh), seq, size, hashes, root):
                raise Reject(n, "the inclusion proof does not lead to the tree root")
            if not matches(flt, v):
                raise Reject(n, "the event does not match the export's filter")
        else:
            if seq != events:
                raise Reject(n, f"expected seq {events}, found {seq}")
            if prev != (last[1] if last else bytes(32)):
                raise Reject(n, "prev is not the previous event's hash")
            frontier.push(leaf_hash(eh))
        lines_digest.update(raw + b"\n")
        last = (seq, eh)
        events += 1

    # 5. The trailer.
    T = n
    try:
        obj(v, ["type", "checkpoint", "statement"], "trailer")
        cp_note = string(v["checkpoint"], "checkpoint")
        st_note = string(v["statement"], "statement")
        if len(cp_note.encode()) > MAX_NOTE or len(st_note.encode()) > MAX_NOTE:
            raise Bad("a trailer note is longer than 64 KiB")
        if signed and key is not None:
            cp_text, st_text = open_note(cp_note, key), open_note(st_note, key)
        elif signed:
            cs, ss = note_split(cp_note), note_split(st_note)
            if cs is None or ss is None:
                raise Bad("the header says signed but a note has no signature")
            cp_text, st_text = cs[0], ss[0]
        else:
            cp_text, st_text = cp_note, st_note
        cp = parse_checkpoint(cp_text)
        st = parse_statement(st_text)
    except (Bad, ValueError) as e:
        raise bad(T, e)
    # 6.
    if st["header"] != header_digest:
        raise Reject(1, "the header was edited (its BLAKE3 is not the trailer's)")
    if cp["origin"] != origin or st["origin"] != origin:
        raise Reject(T, "the trailer names another origin")
    if cp["size"] != size or cp["root"] != root or st["size"] != size:
        raise Reject(T, "the checkpoint is not of the header's tree")
    if st["events"] != events:
        raise Reject(T, f"the trailer says {st['events']} event lines, the file has {events}")
    if st["lines"] != lines_digest.digest():
        raise Reject(T, "the event lines are not the ones the trailer states")
    if not filtered:
        if events != size:
            raise Reject(T, "an unfiltered export must hold every event of its tree")
        if frontier.root() != root:
            raise Reject(T, "the events do not give the tree root")
    if size == 0:
        head = bytes(32)
    elif last is not None and last[0] == size - 1:
        head = last[1]
    else:
        head = None
    if head is not None and cp["head"] != head:
        raise Reject(T, "the checkpoint's head is not the last event's hash")
    # 7.
    if f.read(1) != b"":
        raise Reject(T + 1, "data after the trailer")
    return {"events": events, "size": size, "filtered": filtered, "signed": signed,
            "checked": signed and key is not None}


def self_test():
    """Re-derives the pinned hash of docs/FORMAT.md's worked example from the event line
    docs/EXPORT.md shows for it."""
    doc = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "EXPORT.md")
    with open(doc, encoding="utf-8") as d:
        found = [l for l in d.read().split("\n")
                 if l.startswith('{"type":"event","seq":1,"prev":"1111')]
    assert len(found) == 1, "docs/EXPORT.md shows the example line once"
    canonical, _, _, stated = event_fields(parse_json(found[0].encode()), False)
    h = event_hash(canonical)
    assert len(canonical) == 317, len(canonical)
    assert h == stated, "stated hash"
    assert h.hex() == "9ce183a3d495f9934ea2658d5a7e744b2ea927321d12f32f9d5fec2ea373cad9", h.hex()
    print("ok", len(canonical), h.hex())


def main(argv):
    args, key, max_line = list(argv), None, MAX_LINE
    if args == ["--self-test"]:
        self_test()
        return 0
    if "--pubkey" in args:
        i = args.index("--pubkey")
        try:
            with open(args[i + 1], encoding="utf-8") as k:
                key = parse_verifier_key(k.read(4097))
        except (IndexError, OSError, ValueError) as e:
            print(f"cannot use the verifier key: {e}", file=sys.stderr)
            return 2
        del args[i:i + 2]
    if "--max-line" in args:
        i = args.index("--max-line")
        max_line = int(args[i + 1])
        del args[i:i + 2]
    if not args or any(a.startswith("--") for a in args):
        print(__doc__, file=sys.stderr)
        return 2
    status = 0
    for path in args:
        try:
            with open(path, "rb") as f:
                r = verify(f, key, max_line)
            sig = ("signature verified" if r["checked"]
                   else "signed, signature NOT checked" if r["signed"] else "unsigned")
            kind = "filtered" if r["filtered"] else "unfiltered"
            print(f"{path}: ok: {r['events']} events, {kind}, tree of {r['size']}, {sig}")
        except Reject as e:
            print(f"{path}: line {e.line}: {e.reason}")
            status = 3
        except OSError as e:
            print(f"{path}: cannot read: {e}")
            status = 3
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
