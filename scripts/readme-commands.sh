#!/usr/bin/env bash
# Runs every command of README.md's ```sh blocks as written, so the README cannot rot.
#
# Commands that serve (`... serve ...`) run in the background until they print their banner, get
# one request on /healthz, and are stopped. `cargo test` lines are left to CI's own test step.
# `export` lines apply to the commands after them. Files a command writes outside the repository
# (`plugin new ... --dir ../x`) are removed afterwards if they did not exist before.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
cleanup=()
trap 'for p in "${cleanup[@]}"; do rm -rf -- "$p"; done; rm -rf "$work"' EXIT

mapfile -t lines < <(awk '/^```sh$/{on=1; next} /^```$/{on=0} on' README.md)
ran=0
for raw in "${lines[@]}"; do
  line=$(printf '%s' "$raw" | sed -E 's/[[:space:]]+#.*$//')
  [ -n "${line// }" ] || continue
  case "$line" in
    "cargo test"*) echo "skip (CI's test step runs it): $line"; continue ;;
    export\ *) echo "+ $line"; eval "$line"; continue ;;
  esac
  # Paths a command creates outside the repository.
  for dir in $(printf '%s\n' "$line" | grep -oE -- '--dir [^ ]+' | awk '{print $2}'); do
    case "$dir" in ../*|/*) [ -e "$dir" ] || cleanup+=("$dir") ;; esac
  done
  echo "+ $line"
  if printf '%s' "$line" | grep -qE -- '(^| )serve( |$)'; then
    log="$work/serve.log"
    bash -c "exec $line" >"$log" 2>&1 &
    pid=$!
    addr=""
    for _ in $(seq 1 600); do
      addr=$(grep -oE '(serving on|listening on) http://[0-9.:]+' "$log" | head -1 | sed -E 's#.*http://##' || true)
      [ -n "$addr" ] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if [ -z "$addr" ]; then
      echo "FAILED: no banner from: $line"; cat "$log"; kill "$pid" 2>/dev/null || true; exit 1
    fi
    health=$(curl -fsS "http://$addr/healthz" || true)
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$health" != "ok" ]; then
      echo "FAILED: /healthz of $line answered: $health"; cat "$log"; exit 1
    fi
    echo "  served on $addr, /healthz ok"
  else
    if ! bash -c "$line" >"$work/out.log" 2>&1; then
      echo "FAILED: $line"; cat "$work/out.log"; exit 1
    fi
    tail -n 3 "$work/out.log" | sed 's/^/  /'
  fi
  ran=$((ran + 1))
done
[ "$ran" -ge 5 ] || { echo "FAILED: only $ran README commands found; is the awk pattern right?"; exit 1; }
echo "README: $ran commands ran as written"
