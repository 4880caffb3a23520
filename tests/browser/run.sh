#!/usr/bin/env bash
# The live console's browser tests (tests/browser/console.test.mjs): the
# real binary, the real page in headless Chromium. Installs what they need
# on a fresh machine (Debian's chromium; playwright-core from the lockfile,
# which downloads no browser), then runs them against $HONGBAO_BIN
# (default target/release/hongbao; build it first). Screenshots go to
# target/browser-artifacts/; HONGBAO_DOCS_SCREENSHOTS=1 also writes the
# README's pictures into docs/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export HONGBAO_BIN="${HONGBAO_BIN:-$root/target/release/hongbao}"

if [ ! -x "$HONGBAO_BIN" ]; then
    echo "no hongbao binary at $HONGBAO_BIN (cargo build --release -p hongbao)" >&2
    exit 1
fi
command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
# A CJK font, so that 红包 greetings are drawn in the screenshots, not as boxes.
fc-list :lang=zh | grep -q . || (apt-get update && apt-get install -y fonts-wqy-microhei)
command -v npm >/dev/null || (apt-get update && apt-get install -y nodejs npm)

cd "$here"
npm ci --no-audit --no-fund --loglevel=error
node --test --test-concurrency=1 --test-reporter=spec console.test.mjs
