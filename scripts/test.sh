#!/usr/bin/env bash
# Runs the whole test suite. Installs the two Python packages the independent
# verifier tests use (tools/*.py) when they are missing, then runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import blake3, nacl' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check -r tools/requirements.txt
fi
exec cargo test --workspace --locked "$@"
