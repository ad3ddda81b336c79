#!/usr/bin/env bash
# The whole test suite: formatting, lints, docs, unit/property/differential/stress
# tests, loom models, and a short torture run. This is what CI runs (.ci/run).
# Longer runs: VMSPACE_STRESS_SECS=60 scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "cargo test (unit, property, differential, stress)"
cargo test --workspace

step "loom models (--cfg loom, release)"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
  cargo test --release -p vmspace-tree --test loom_tree
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
  cargo test --release -p vmspace --test loom_vmspace
