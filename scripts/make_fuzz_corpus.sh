#!/usr/bin/env bash
# Rebuilds the fuzz seed corpora (fuzz/corpus/*) and the fuzz verifier key
# (fuzz/keys/fuzz.pub) from a real ledger: a workspace with every kind of event the
# CLI writes (changes of all ops and modes, a non-UTF-8 name, a failure, a checkpoint,
# a redaction, a revert), its journal segment (whole, and frame by frame) and its
# exports (signed and unsigned, filtered and not). The signing key is thrown away.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --quiet --locked --manifest-path "$repo/Cargo.toml" -p ledger-cli
ledger="$repo/target/debug/ledger"
work="$(mktemp -d "${TMPDIR:-/tmp}/ledger-fuzz-corpus.XXXXXX")"
trap 'rm -rf "$work"' EXIT
corpus="$repo/fuzz/corpus"
rm -rf "$corpus"
mkdir -p "$corpus/journal_frame" "$corpus/journal_open" "$corpus/export_verify" "$repo/fuzz/keys"

mkdir "$work/ws"
cd "$work/ws"
"$ledger" init >/dev/null 2>&1
"$ledger" keygen --out "$work/fuzz.key" --name fuzz >/dev/null 2>&1
cp "$work/fuzz.key.pub" "$repo/fuzz/keys/fuzz.pub"
mkdir -p src
printf 'fn main() {}\n' > src/main.rs
printf 'secret=1\n' > config.env
printf '#!/bin/sh\necho hi\n' > run.sh && chmod +x run.sh
ln -s src/main.rs link
printf 'raw' > "$(printf 'caf\xe9.bin')"
"$ledger" record --agent human --principal alice@example.com --role dev \
    --correlation req-1 --message "initial tree" --meta tool=edit --meta ticket=T-1 --change c1 >/dev/null 2>&1
printf 'fn main() { println!("hi"); }\n' > src/main.rs
chmod -x run.sh
rm link
"$ledger" record --agent coder-7 --message "edit, mode, delete" --change c2 >/dev/null 2>&1
"$ledger" exec --agent ops-bot --change c3 -- sh -c 'echo x > new.txt; exit 3' >/dev/null 2>&1 || true
"$ledger" checkpoint --key "$work/fuzz.key" >/dev/null 2>&1
secret=$("$ledger" show c1 --json | python3 -c '
import json, sys
print([f["new_hash"] for f in json.load(sys.stdin)["files"] if f["path"] == "config.env"][0])')
"$ledger" redact "$secret" --reason "a secret" >/dev/null 2>&1
"$ledger" revert c2 --agent fixer >/dev/null 2>&1
"$ledger" verify >/dev/null

seg=.ledger/journal/00000000000000000000.seg
# journal_open: the first byte picks "repair hashes and links" (even) or "as is" (odd).
{ printf '\0'; cat "$seg"; } > "$corpus/journal_open/segment-repaired"
{ printf '\1'; cat "$seg"; } > "$corpus/journal_open/segment-as-is"
# journal_frame: every frame on its own.
python3 - "$seg" "$corpus/journal_frame" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
off = i = 0
while off < len(data):
    (n,) = struct.unpack_from("<I", data, off + 4)
    end = off + 24 + n + 32
    open(f"{sys.argv[2]}/frame-{i:02}", "wb").write(data[off:end])
    off, i = end, i + 1
PY
# export_verify: exports of every shape.
"$ledger" export --out "$corpus/export_verify/all-unsigned.jsonl" 2>/dev/null
"$ledger" export --out "$corpus/export_verify/all-signed.jsonl" --sign "$work/fuzz.key" 2>/dev/null
"$ledger" export --out "$corpus/export_verify/agent-signed.jsonl" --agent coder-7 --sign "$work/fuzz.key" 2>/dev/null
"$ledger" export --out "$corpus/export_verify/change-unsigned.jsonl" --change c1 2>/dev/null
du -sh "$corpus"
