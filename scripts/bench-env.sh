# Shared by the benchmark scripts that start AOS nodes (sourced, not run): free loopback ports,
# waiting for a listener, PostgreSQL databases and NATS servers made per run, nodes in the
# background, and one clean-up for all of them. Expects $pg (a PostgreSQL URL), $nats_server
# (a nats-server binary, or empty) and $work (a temporary directory).

pids=()
database=""
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; exit 1
}
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  if [ -n "$database" ]; then
    psql -q "$pg" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null
    database=""
  fi
}

# new_database: creates a fresh database (dropped by stop_all); its URL in $database_url.
new_database() {
  database="aos_bench_$(date +%s%N)"
  psql -q "$pg" -c "CREATE DATABASE $database" >/dev/null
  database_url="${pg%/*}/$database"
}

# start_node ENV... : an aos node in the background with these settings (data dir of its own);
# echoes "pid admin_port mqtt_port".
start_node() {
  local dir admin mqtt web
  dir=$(mktemp -d -p "$work")
  admin=$(free_port); mqtt=$(free_port); web=$(free_port)
  env "$@" AOS_NODE__DATA_DIR="$dir" AOS_ADMIN__LISTEN="127.0.0.1:$admin" \
    AOS_BROKER__LISTEN="127.0.0.1:$mqtt" AOS_WEB__LISTEN="127.0.0.1:$web" RUST_LOG=warn \
    target/release/aos run >"$dir/log" 2>&1 &
  echo "$! $admin $mqtt"
}

# start_nats: a NATS server with JetStream in $work on a free port (stopped by stop_all);
# its port in $nats_port.
start_nats() {
  local port dir
  port=$(free_port)
  dir=$(mktemp -d -p "$work")
  "$nats_server" -a 127.0.0.1 -p "$port" -js -sd "$dir" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$port"
  nats_port=$port
}
