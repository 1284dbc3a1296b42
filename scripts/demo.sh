#!/usr/bin/env bash
# The main job in one run: builds `ledger`, lets two scripted "agents" change a
# throwaway workspace, shows what each did, undoes one change while keeping the later
# one, and verifies the ledger end to end. Needs only the Rust toolchain.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --quiet --locked --manifest-path "$repo/Cargo.toml" -p ledger-cli
ledger="$repo/target/debug/ledger"
work="$(mktemp -d "${TMPDIR:-/tmp}/ledger-demo.XXXXXX")"
cd "$work"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "Workspace: $work"
mkdir -p src config
printf 'fn main() {\n    println!("hello");\n}\n' > src/main.rs
printf 'retries = 3\ntimeout_ms = 500\n' > config/app.toml
step "$ledger" init
step "$ledger" record --agent human --message "initial tree"

# Agent 1 edits the config through `ledger exec`: everything the command changes is
# recorded as one change, with who acted, for whom, and under which request.
step "$ledger" exec --agent ops-bot --principal alice --correlation req-17 \
    --message "raise timeout" -- sed -i 's/timeout_ms = 500/timeout_ms = 5000/' config/app.toml
# Agent 2 then edits code and adds a file.
step "$ledger" exec --agent coder-7 --message "greet the world" -- \
    sh -c 'sed -i "s/hello/hello, world/" src/main.rs && echo "# notes" > NOTES.md'

step "$ledger" log
first=$("$ledger" log --agent ops-bot --json -n 1 | sed 's/.*"change_id":"\([^"]*\)".*/\1/')
step "$ledger" show "$first" --diff

# Undo exactly the ops-bot change; coder-7's later work stays.
step "$ledger" revert "$first" --agent alice --message "timeout change caused incidents"
step cat config/app.toml
step cat src/main.rs
step "$ledger" timeline
step "$ledger" verify
echo
echo "Done. Inspect further with: cd $work && $ledger log"
