#!/usr/bin/env bash
# Generated requests against the OpenAPI document: schemathesis (from PyPI,
# pinned, in a venv under target/) reads GET /openapi.json from the real
# release binary and sends every operation requests made from the spec,
# valid and not, with a user's and an admin's token. It fails on any 5xx,
# any status, content type or body that the spec does not list for the
# operation. Nothing here needs the internet past PyPI (once: the venv is
# kept).
#
#   cargo build --release && tests/openapi/run.sh
#
# SCHEMATHESIS_EXAMPLES (per operation and phase, default 60) and
# SCHEMATHESIS_SEED (default 1; "random" for a new one each run) tune it.
# The event streams (`/v1/events`, `/v1/admin/events`) are left out: a
# stream answered 200 goes on until its lifetime ends (an hour), which a
# generated request cannot wait for; the API tests read them as a client
# does (crates/hongbao/tests/api/events.rs, and the spec test).
# The server gets generous rate limits so that the requests reach the
# handlers instead of being refused 429 (which the spec lists all the same).
set -euo pipefail
cd "$(dirname "$0")/../.."

version=4.32.5
venv=target/schemathesis-venv
bin=target/release/hongbao
examples=${SCHEMATHESIS_EXAMPLES:-60}
seed=${SCHEMATHESIS_SEED:-1}

if [ ! -x "$bin" ]; then
    echo "no $bin: run cargo build --release first" >&2
    exit 1
fi
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+')" != "$version" ]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv"; then
        echo "python3 -m venv failed: install python3 and python3-venv (apt-get install python3-venv)" >&2
        exit 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" serve --data "$work/data" --listen 127.0.0.1:0 \
    --rate-limit open=10000/10000 --rate-limit grab=10000/10000 --rate-limit send=10000/10000 \
    --rate-limit read=10000/10000 --rate-limit list=10000/10000 \
    --auth-failure-rate-per-s 10000 --auth-failure-burst 10000 \
    >"$work/serve.out" 2>"$work/serve.err" &
server=$!
addr=""
for _ in $(seq 1 300); do
    addr=$(sed -n 's|^hongbao listening on http://||p' "$work/serve.out")
    [ -n "$addr" ] && break
    if ! kill -0 "$server" 2>/dev/null; then
        cat "$work/serve.err" >&2
        echo "the server did not start" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "the server did not say where it listens" >&2
    exit 1
fi
echo "hongbao at http://$addr"

admin=$(cat "$work/data/admin.token")
user=$("$bin" token --data "$work/data" alice)
# alice has money, so that generated sends can succeed.
curl -sf -X POST "http://$addr/v1/admin/deposits" -H "Authorization: Bearer $admin" \
    -d '{"user":"alice","amount":1000000}' >/dev/null

seed_flag=(--seed "$seed")
if [ "$seed" = random ]; then
    seed_flag=()
fi
status=0
# Run from the temporary directory: schemathesis keeps its example
# database in the working directory. One worker: with two threads,
# hypothesis parses lambda sources concurrently and CPython 3.11.7's
# ast.parse is not thread-safe (cpython#106905: "AST constructor recursion
# depth mismatch", a crash of the tool, not a finding about the API; it
# failed a CI run).
root=$(pwd)
cd "$work"
HONGBAO_USER_TOKEN=$user HONGBAO_ADMIN_TOKEN=$admin \
    "$root/$venv/bin/schemathesis" --config-file "$root/tests/openapi/schemathesis.toml" run "http://$addr/openapi.json" \
    --exclude-path-regex '/events$' \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" "${seed_flag[@]}" \
    --workers 1 \
    --request-timeout 10 \
    --warnings off \
    --no-color || status=$?
if grep -E 'ERROR|WARN' "$work/serve.err" >&2; then
    echo "(the server's warnings and errors during the run, above)" >&2
fi
if [ "$status" -ne 0 ]; then
    echo "schemathesis: the API does not match its spec (exit $status)" >&2
    exit "$status"
fi
echo "schemathesis: every generated request was answered as the spec says"
