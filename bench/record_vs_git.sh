#!/usr/bin/env bash
# Times `ledger record` against git on the same source-like tree, in the same run, and
# prints markdown tables (stdout); progress goes to stderr. Never fails on a timing.
#
# Usage: bench/record_vs_git.sh
# Env:
#   BENCH_FILES="10000 100000"  workspace sizes (default both)
#   BENCH_REPS=7                repetitions of the one-modified-file timings (median shown)
#   BENCH_FIRST_REPS=3          repetitions of the first full record / first commit
#   BENCH_DIR=/path             where workspaces go (default: a new dir under ${TMPDIR:-/tmp});
#                               must be a real disk for the fsync cost to show
#   BENCH_KEEP=1                keep the workspaces afterwards
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FILES="${BENCH_FILES:-10000 100000}"
REPS="${BENCH_REPS:-7}"
FIRST_REPS="${BENCH_FIRST_REPS:-3}"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

log "building: cargo build --release -p ledger-cli"
(cd "$ROOT" && cargo build --release -q -p ledger-cli)
LEDGER="$ROOT/target/release/ledger"
[ -x "$LEDGER" ] || { echo "no $LEDGER after the build" >&2; exit 1; }

if [ -n "${BENCH_DIR:-}" ]; then
    mkdir -p "$BENCH_DIR"
    BASE="$(mktemp -d "$BENCH_DIR/ledger-vs-git.XXXXXX")"
else
    BASE="$(mktemp -d "${TMPDIR:-/tmp}/ledger-vs-git.XXXXXX")"
fi
cleanup() { if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$BASE"; fi; }
trap cleanup EXIT
mkdir -p "$BASE/trash"

# git with its built-in defaults only: no user or system config (no fsmonitor, no
# untracked cache, default core.fsync), a fixed identity. Automatic background gc and
# maintenance are off: a detached `gc --auto` after a commit of 10,000+ loose objects
# would repack while the next timings run.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_CONFIG_COUNT=2
export GIT_CONFIG_KEY_0=gc.auto GIT_CONFIG_VALUE_0=0
export GIT_CONFIG_KEY_1=maintenance.auto GIT_CONFIG_VALUE_1=false
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
unset LEDGER_DIR # never pick up a caller's ledger

# "wall:cpu" seconds taken by "$@" (cpu = user + sys of it and its children), output
# discarded; bash's `time` keyword, no extra process.
timeit() {
    local TIMEFORMAT='%3R:%3U:%3S' t
    t=$({ time "$@" >/dev/null 2>&1 || echo "command failed: $*" >&2; } 2>&1) || true
    case "$t" in *failed*) echo "$t" >&2; exit 1 ;; esac
    awk -F: -v t="$t" 'BEGIN { split(t, a, ":"); printf "%.3f:%.3f\n", a[1], a[2] + a[3] }'
}

# Median of the wall (field 1, default) or cpu (field 2) parts of "wall:cpu" tokens.
median() { tr ' ' '\n' | grep -v '^$' | cut -d: -f"${1:-1}" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.0f", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# A tree shaped like a source repository: src/<a>/<b>/ with 20 files per directory,
# text files of ~200 bytes to ~4 KB (mean 1.2 KB), deterministic content.
make_tree() {
    local dir="$1" n="$2"
    mkdir -p "$dir"
    awk -v n="$n" -v dir="$dir" 'BEGIN {
        srand(42);
        line = "    let value = compute(input, options); // keep the result for the caller";
        for (i = 0; i < n; i++) {
            d = int(i / 20);
            sub1 = sprintf("%s/src/m%03d/s%03d", dir, int(d / 50), d % 50);
            if (!(sub1 in made)) { system("mkdir -p " sub1); made[sub1] = 1 }
            f = sprintf("%s/file_%05d.rs", sub1, i);
            lines = 2 + int(rand() * rand() * 50);
            printf "// file %d\nfn f_%d() {\n", i, i > f;
            for (k = 0; k < lines; k++) printf "%s %d\n", line, k * i > f;
            printf "}\n" > f;
            close(f);
        }
    }'
    printf 'target/\n*.o\n' >"$dir/.gitignore"
}

tree_bytes() { # bytes of the files both tools record (the tree without .git and .ledger)
    find "$1" -path "$1/.git" -prune -o -path "$1/.ledger" -prune -o -type f -printf '%s\n' |
        awk '{ s += $1 } END { print s + 0 }'
}

walk_floor() { # the bare directory walk both tools must at least do
    find . -path ./.git -prune -o -path ./.ledger -prune -o -type f -print | wc -l
}

git_first() { git init -q && echo .ledger/ >>.git/info/exclude && git add -A && git commit -q -m initial; }
ledger_first() { "$LEDGER" init && "$LEDGER" record --agent bench; }
git_commit() { git add -A && git commit -q -m x; }
ledger_record() { "$LEDGER" record --agent bench; }

fs_type() { df -T "$1" | awk 'NR == 2 { print $2 " (" $1 ")" }'; }
cpu_model() { awk -F: '/^model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo; }

# Counts fsync-family calls of one command, when strace is available.
sync_calls() {
    if command -v strace >/dev/null; then
        local out
        out="$(mktemp)"
        strace -f -qq -e trace=fsync,fdatasync,sync_file_range,syncfs,msync -o "$out" "$@" >/dev/null 2>&1 || true
        grep -cE '^[0-9]+ +(fsync|fdatasync|sync_file_range|syncfs|msync)\(' "$out" || true
        rm -f "$out"
    else
        echo "n/a"
    fi
}

RESULTS=()
CPU=()
FIRST=()
DISK=()
SYNCS=()
for N in $FILES; do
    W="$BASE/ws-$N"
    log "N=$N: generating the tree in $W"
    make_tree "$W" "$N"
    cd "$W"
    RAW=$(tree_bytes "$W")
    NF=$(walk_floor)
    log "N=$N: $NF files, $(mb "$RAW") MB"

    # First full record vs first commit (alternating which goes first; fresh .git/.ledger).
    fl=""; fg=""
    for r in $(seq 1 "$FIRST_REPS"); do
        # Earlier attempts are moved aside, not deleted: on ext4, creating files right
        # after deleting ~10^5 inodes is slowed by the inode allocator
        # (find_inode_bit/recently_deleted), which would tax whichever tool runs next.
        [ ! -e .git ] || mv .git "$BASE/trash/git-$N-$r"
        [ ! -e .ledger ] || mv .ledger "$BASE/trash/ledger-$N-$r"
        sync
        if [ $((r % 2)) -eq 1 ]; then
            fg+=" $(timeit git_first)"; fl+=" $(timeit ledger_first)"
        else
            fl+=" $(timeit ledger_first)"; fg+=" $(timeit git_first)"
        fi
        log "N=$N first, rep $r: ledger $(echo "$fl" | awk '{print $NF}'), git $(echo "$fg" | awk '{print $NF}') (wall:cpu s)"
    done
    FL=$(echo "$fl" | median); FG=$(echo "$fg" | median)
    FIRST+=("| $N | $(ms "$FL") | $(ms "$FG") | $(ratio "$FL" "$FG") |")

    OBJ_APP=$(du -sb --apparent-size .ledger/objects | cut -f1)
    OBJ_DISK=$(du -sB1 .ledger/objects | cut -f1)
    GIT_DISK=$(du -sB1 .git/objects | cut -f1)
    DISK+=("| $N | $(mb "$RAW") | $(mb "$OBJ_APP") | $(mb "$OBJ_DISK") | $(ratio "$OBJ_DISK" "$RAW") | $(mb "$GIT_DISK") |")

    # Warm up: let every file age past both tools' racy-timestamp window, then one
    # untimed round so the stat cache and git's index are fresh.
    sleep 2
    "$LEDGER" record --agent bench >/dev/null 2>&1 || true
    git status --porcelain >/dev/null
    walk_floor >/dev/null

    # One modified file per repetition (a different file each time).
    tl=""; ts=""; tc=""; tw=""; tls=""
    for r in $(seq 1 "$REPS"); do
        f=$(printf 'src/m%03d/s%03d/file_%05d.rs' $(( (r * 7919 % N) / 1000 )) $(( (r * 7919 % N) / 20 % 50 )) $(( r * 7919 % N )))
        [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }
        echo "// edit $r" >>"$f"
        tw+=" $(timeit walk_floor)"
        if [ $((r % 2)) -eq 1 ]; then
            ts+=" $(timeit git status)"
            tls+=" $(timeit "$LEDGER" status)"
            tl+=" $(timeit ledger_record)"
        else
            tls+=" $(timeit "$LEDGER" status)"
            tl+=" $(timeit ledger_record)"
            ts+=" $(timeit git status)"
        fi
        tc+=" $(timeit git_commit)"
        log "N=$N rep $r ($f): ledger record $(echo "$tl" | awk '{print $NF}'), git status $(echo "$ts" | awk '{print $NF}'), git add+commit $(echo "$tc" | awk '{print $NF}') (wall:cpu s)"
        [ -z "$(git status --porcelain)" ] || { echo "git not clean after commit" >&2; exit 1; }
    done
    L=$(echo "$tl" | median); S=$(echo "$ts" | median); C=$(echo "$tc" | median)
    WF=$(echo "$tw" | median); LS=$(echo "$tls" | median)
    RESULTS+=("| $N | $(ms "$L") | $(ms "$LS") | $(ms "$S") | $(ms "$C") | $(ms "$WF") | $(ratio "$L" "$S") | $(ratio "$L" "$C") |")
    CPU+=("| $N | $(ms "$(echo "$tl" | median 2)") | $(ms "$(echo "$tls" | median 2)") | $(ms "$(echo "$ts" | median 2)") | $(ms "$(echo "$tc" | median 2)") | $(ms "$(echo "$tw" | median 2)") |")

    # How many sync calls each side makes for one modified file.
    f=$(printf 'src/m%03d/s%03d/file_%05d.rs' 0 0 0)
    echo "// sync count" >>"$f"
    sleep 1.1
    SL=$(sync_calls "$LEDGER" record --agent bench)
    SC=$(sync_calls bash -c 'git add -A && git commit -q -m x')
    SYNCS+=("| $N | $SL | $SC |")
    cd "$BASE" # nothing is deleted before the end (see above)
done

echo "## ledger record vs git ($(date -u +%Y-%m-%d))"
echo
echo "- machine: $(nproc) CPUs, $(cpu_model), Linux $(uname -r), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
echo "- directory: $BASE on $(fs_type "$BASE")"
echo "- $(git --version); ledger $("$LEDGER" --version | awk '{ print $2 }') (release build)"
echo "- durability: \`ledger record\` makes the new content durable (fsync/syncfs) and fdatasyncs the journal before it returns; git runs with its built-in defaults (no user or system config), which do not fsync loose objects, the index or refs; automatic gc/maintenance off (\`gc.auto=0\`, \`maintenance.auto=false\`)"
echo "- tree: source-like, 20 text files per directory under src/<a>/<b>/, ~200 B to ~4 KB each (mean 1.2 KB), plus a .gitignore; both tools use the same directory (.ledger/ is in .git/info/exclude; ledger skips .git/)"
echo "- warm page cache; timings are wall-clock medians, ratios are of the medians"
echo
echo "### One modified file (median of $REPS; a different file each time)"
echo
echo "| files | ledger record ms | ledger status ms | git status ms | git add -A && git commit ms | find (walk floor) ms | ledger record / git status | ledger record / git add+commit |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${RESULTS[@]}"
echo
echo "Goals (100,000 files): ledger record / git status ≤ 1.00; ledger record / git add+commit ≤ 0.50."
echo
echo "CPU time (user + sys, all threads and child processes) of the same runs, median ms:"
echo
echo "| files | ledger record | ledger status | git status | git add -A && git commit | find |"
echo "|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${CPU[@]}"
echo
echo "### First full record of the tree (median of $FIRST_REPS; fresh .ledger and .git each time)"
echo
echo "| files | ledger init && ledger record ms | git init && git add -A && git commit ms | ledger / git |"
echo "|---:|---:|---:|---:|"
printf '%s\n' "${FIRST[@]}"
echo
echo "### Disk used after the first record"
echo
echo "| files | raw bytes recorded MB | .ledger/objects apparent MB | .ledger/objects on disk MB | on disk / raw | .git/objects on disk MB |"
echo "|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${DISK[@]}"
echo
echo "### Sync calls for one modified file (counted with strace -f)"
echo
echo "| files | ledger record | git add -A && git commit |"
echo "|---:|---:|---:|"
printf '%s\n' "${SYNCS[@]}"
