#!/usr/bin/env bash
# Installs what tscri needs on a Debian node, builds it, and starts the daemon with its
# defaults (socket unix:///run/tscri/tscri.sock, state in /var/lib/tscri and /run/tscri).
# Safe to run again: it restarts the daemon on the new build.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (tscri mounts layers and manages namespaces)" >&2
  exit 1
fi

# The node's real components: the OCI runtime, the container monitor, the CNI plugins.
packages=(runc conmon containernetworking-plugins iptables iproute2 zstd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

npm install --no-audit --no-fund --loglevel=error
npm run build --silent

mkdir -p /etc/tscri/certs.d /run/tscri /var/log/tscri
pidfile=/run/tscri/tscri.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "setup: stopping the running tscri (pid $(cat "$pidfile"))"
  kill -TERM "$(cat "$pidfile")"
  for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
fi
setsid nohup node --max-semi-space-size=1 dist/src/main.js "$@" >>/var/log/tscri/tscri.log 2>&1 </dev/null &
echo $! > "$pidfile"
for _ in $(seq 1 100); do [ -S /run/tscri/tscri.sock ] && break; sleep 0.1; done
if [ ! -S /run/tscri/tscri.sock ]; then
  echo "setup: tscri did not start; see /var/log/tscri/tscri.log" >&2
  tail -n 20 /var/log/tscri/tscri.log >&2 || true
  exit 1
fi
echo "setup: tscri is serving on unix:///run/tscri/tscri.sock (pid $(cat "$pidfile"), log /var/log/tscri/tscri.log)"
echo "setup: try: crictl --runtime-endpoint unix:///run/tscri/tscri.sock version"
