#!/usr/bin/env bash
# The whole test suite: formatting, lints, docs, unit/property/differential/stress
# tests, loom models, and a short torture run; the rust-version promise
# (clippy's incompatible_msrv here, tests/project_docs.rs for dependencies).
# This is what CI runs (.ci/run).
# Longer runs: VMSPACE_STRESS_SECS=60 scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors; std use checked against rust-version)"
cargo clippy --workspace --all-targets -- -D warnings -W clippy::incompatible_msrv

step "cargo doc (warnings are errors, rustdoc's and cargo's)"
# Cargo's own warnings (an output filename collision, for one) are not
# rustdoc's, so RUSTDOCFLAGS alone does not catch them: any `warning` fails.
doc_log=$(RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps 2>&1) || {
  printf '%s\n' "$doc_log"; exit 1; }
printf '%s\n' "$doc_log"
if grep -q '^warning' <<<"$doc_log"; then
  echo "cargo doc printed warnings (above)" >&2
  exit 1
fi

step "cargo test (unit, property, differential, stress)"
cargo test --workspace

step "loom models (--cfg loom, release)"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
  cargo test --release -p vmspace-tree --test loom_tree
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
  cargo test --release -p vmspace --test loom_vmspace
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
  cargo test --release -p vmspace --test loom_rmap_lock
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
  cargo test --release -p vmspace --test loom_reclaim
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
  cargo test --release -p vmspace --test loom_notifier
