#!/usr/bin/env bash
# Runs every command of the ```sh blocks in README.md and docs/*.md as written, so no documented
# command can rot. CI runs it (.ci/run) after the release build.
#
# - Lines run from the repository root, in order, with target/release on PATH (so `stilts` is the
#   binary just built). `NAME=value` and `export` lines apply to the lines after them.
# - Commands that serve (`... serve ...`) run in the background until they print their banner, get
#   one request on /healthz, and are stopped.
# - `cargo test` lines are left to CI's own test step, `scripts/replay-gate.sh` to its replay step; docs/plugins.md is run, file by file, by
#   crates/cli/tests/plugin_new.rs. `cargo bench` lines run each benchmark once (criterion's
#   `--test` mode): CI checks that they work, scripts/bench-*.sh measure. `simulator/bench.sh`
#   without arguments simulates one hour per config instead of a day, for the same reason.
# - Files a command writes are removed afterwards: new untracked files in the repository, and a
#   `--dir` outside it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH"

work=$(mktemp -d)
cleanup=()
trap 'for p in "${cleanup[@]}"; do rm -rf -- "$p"; done; rm -rf "$work"' EXIT
git status --porcelain --untracked-files=all | sed -n 's/^?? //p' | sort >"$work/untracked.before"

run_line() { # $1 = doc, $2 = the command line
  local doc=$1 line=$2
  case "$line" in
    "cargo test"*) echo "skip (CI's test step runs it): $line"; return 0 ;;
    "scripts/replay-gate.sh"*) echo "skip (CI's replay step runs it): $line"; return 0 ;;
  esac
  if printf '%s' "$line" | grep -qE '^(export +)?[A-Za-z_][A-Za-z0-9_]*=[^ ]*( +[A-Za-z_][A-Za-z0-9_]*=[^ ]*)*$'; then
    echo "+ $line"; eval "export ${line#export }"; return 0
  fi
  case "$line" in
    "cargo bench"*" -- "*) line="$line --test" ;;
    "cargo bench"*) line="$line -- --test" ;;
    "simulator/bench.sh") line="simulator/bench.sh 1" ;;
  esac
  for dir in $(printf '%s\n' "$line" | grep -oE -- '--dir [^ ]+' | awk '{print $2}'); do
    case "$dir" in ../*|/*) [ -e "$dir" ] || cleanup+=("$dir") ;; esac
  done
  echo "+ [$doc] $line"
  local started=$SECONDS
  if printf '%s' "$line" | grep -qE -- '(^| )serve( |$)'; then
    local log="$work/serve.log" pid addr="" health
    bash -c "exec $line" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
      addr=$(grep -oE '(serving on|listening on) http://[0-9.:]+' "$log" | head -1 | sed -E 's#.*http://##' || true)
      [ -n "$addr" ] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if [ -z "$addr" ]; then
      echo "FAILED [$doc]: no banner from: $line"; cat "$log"; kill "$pid" 2>/dev/null || true; exit 1
    fi
    health=$(curl -fsS "http://$addr/healthz" || true)
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$health" != "ok" ]; then
      echo "FAILED [$doc]: /healthz of $line answered: $health"; cat "$log"; exit 1
    fi
    echo "  served on $addr, /healthz ok"
  else
    if ! bash -c "$line" >"$work/out.log" 2>&1; then
      echo "FAILED [$doc]: $line"; tail -n 40 "$work/out.log"; exit 1
    fi
    tail -n 2 "$work/out.log" | sed 's/^/  /'
  fi
  echo "  ($((SECONDS - started)) s)"
  ran=$((ran + 1))
}

ran=0
for doc in README.md docs/*.md; do
  [ "$doc" = docs/plugins.md ] && continue
  mapfile -t lines < <(awk '/^```(sh|bash|shell)$/{on=1; next} /^```/{on=0} on' "$doc")
  for raw in "${lines[@]}"; do
    line=$(printf '%s' "$raw" | sed -E 's/(^|[[:space:]]+)#.*$//')
    [ -n "${line// }" ] || continue
    run_line "$doc" "$line"
  done
done

git status --porcelain --untracked-files=all | sed -n 's/^?? //p' | sort >"$work/untracked.after"
while IFS= read -r made; do cleanup+=("$made"); done < <(comm -13 "$work/untracked.before" "$work/untracked.after")
[ "$ran" -ge 15 ] || { echo "FAILED: only $ran documented commands found; is the block pattern right?"; exit 1; }
echo "docs: $ran documented commands ran as written"
