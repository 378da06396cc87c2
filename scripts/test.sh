#!/usr/bin/env bash
# Runs every test of the workspace, as CI does: formatting, lints, then all test tiers.
# On a fresh machine it first installs what the tests need (as root, with apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tiers use: curl and openssl (clients, `openssl s_server`
# backends), postgresql (initdb, postgres, psql), iproute2 (`ss`, and `ip netns` for the
# pods of the interception tests), prometheus (scrapes the gateway's metrics), iptables
# (what `meshwork iptables` drives), tcpdump (shows what crosses the pods' bridge) and
# python3 (a stand-in for a pod's own DNS resolver). Installed only when something is
# missing.
packages=(curl openssl postgresql iproute2 prometheus iptables tcpdump python3)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
fi

# The toolchain's formatter and linter.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# `#[ignore]` marks the tests that need ../shared beside the checkout (the seeds' originals
# and Istio's reference bundle), and nothing else. They run when it is there.
ignored=()
if [ -d ../shared/reference ] && [ -d ../shared/seeds ]; then
  ignored=(--run-ignored all)
else
  echo "skipped: these tests need ../shared/reference and ../shared/seeds beside the checkout:"
  grep -rn -A1 '#\[ignore' crates --include='*.rs' | sed -n 's/.*fn \([a-z0-9_]*\).*/  \1/p'
fi
# Hangs fail the run: .config/nextest.toml stops a test that runs too long.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "${ignored[@]}"
else
  echo "cargo-nextest is not installed: cargo test, without nextest's time limit" >&2
  if [ ${#ignored[@]} -gt 0 ]; then
    cargo test --workspace --locked --no-fail-fast -- --include-ignored
  else
    cargo test --workspace --locked --no-fail-fast
  fi
fi
