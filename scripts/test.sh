#!/usr/bin/env bash
# Runs every test of the workspace, as CI does: formatting, lints, then all test tiers.
# On a fresh machine it first installs what the tests need (as root, with apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tiers use. Installed only when something is missing.
packages=(curl openssl postgresql)
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

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
