#!/usr/bin/env python3
"""Independent re-derivation of a ledger event hash from docs/FORMAT.md.

Encodes the fixed example event of `ledger/src/event.rs` (`pinned_event_hash`) with
nothing but the rules in docs/FORMAT.md and prints its length and hash. Needs the
`blake3` package. Run: python3 tools/event_hash.py
"""
import struct
import blake3

CONTEXT = "agent-ledger 2026-11-21 event v1"


def u32(n): return struct.pack("<I", n)
def u64(n): return struct.pack("<Q", n)
def i64(n): return struct.pack("<q", n)
def s(text): b = text.encode(); return u64(len(b)) + b
def blob(b): return u64(len(b)) + b
def none(): return b"\x00"
def some(x): return b"\x01" + x


def content(hash32, mode, size):
    return hash32 + u32(mode) + u64(size)


def fixed_event():
    old = blake3.blake3(b"old\n").digest()
    new = blake3.blake3(b"new\n").digest()
    resource = (s("file") + blob(b"src/main.rs") + u32(1)          # key, op Modify
                + some(content(old, 0, 4)) + some(content(new, 1, 4)))
    change = some(s("fix typo")) + none() + u64(1) + resource
    return (u64(1) + b"\x11" * 32 + i64(1_700_000_000_000_000)
            + s("agent-7") + some(s("alice@example.com")) + some(s("coder"))
            + s("ch-1") + some(s("req-42"))
            + u32(1) + change                                     # Body::Change
            + u64(1) + s("tool") + s("edit"))                     # meta


if __name__ == "__main__":
    b = fixed_event()
    h = blake3.blake3(b, derive_key_context=CONTEXT).hexdigest()
    print(len(b), h)
    assert len(b) == 317
    assert h == "9ce183a3d495f9934ea2658d5a7e744b2ea927321d12f32f9d5fec2ea373cad9", h
