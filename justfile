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

# Benchmarks against Mosquitto (the load tool arrives with the benchmark issue).
bench:
    scripts/bench
