# AOS developer recipes. `just --list` shows them.

# Run a standalone node (every role, SQLite in ./data).
run *ARGS:
    cargo run --release -p aos -- run {{ARGS}}

# The whole test suite, as CI runs it (installs what the tests need first).
test:
    scripts/test

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Each role alone must build: the slim binaries.
check-features:
    cargo check -p aos --no-default-features --features broker
    cargo check -p aos --no-default-features --features worker
    cargo check -p aos --no-default-features --features web

# Benchmarks: AOS against Mosquitto, same tool, same machine (~10 minutes; see docs/performance.md).
bench:
    scripts/bench

# A quick benchmark round (under a minute), to compare before and after a change.
bench-quick:
    scripts/bench --quick

# Ingest side by side: standalone SQLite, standalone PostgreSQL, distributed (see docs/performance.md).
bench-ingest *ARGS:
    scripts/bench-ingest {{ARGS}}

# Messages between broker nodes: same node vs cross-node (see docs/performance.md).
bench-cluster *ARGS:
    scripts/bench-cluster {{ARGS}}
