#!/bin/bash
# Run every test of the project: formatting and lints, the unit and
# integration tests (the agent's need root), then the end-to-end suite on
# real Xen in the lab (tests/lab). VXN_LAB=0 skips the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if [ "$(id -u)" != 0 ]; then
  echo "test: not root: the agent's integration tests will be skipped" >&2
fi
cargo test --workspace --locked
if [ "${VXN_LAB:-1}" != 0 ]; then
  tests/lab/lab ci
fi
