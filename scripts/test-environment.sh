#!/usr/bin/env bash
# What the test suite needs besides Python packages, installed from Debian's packages when
# missing: PostgreSQL (127.0.0.1:5432, trust auth, database "test") and Redis (127.0.0.1:6379)
# running, and the nginx and Chromium binaries (the proxy and browser tests start their own).
# `./dev test` runs it first.
set -euo pipefail

apt_install() {
  if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "services: $* missing and cannot be installed here (needs root and apt-get)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {
  local what=$1; shift
  for _ in $(seq 1 30); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "services: $what did not come up" >&2
  exit 1
}

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  cluster_version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start || true
  wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi
if ! psql -h 127.0.0.1 -U postgres -tAc 'select 1' test >/dev/null 2>&1; then
  echo "services: PostgreSQL answers but postgres@127.0.0.1/test is not reachable with trust auth" >&2
  exit 1
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx
command -v openssl >/dev/null || apt_install openssl
command -v chromium >/dev/null || apt_install chromium
# The storefront journey tests build the real Next.js storefront (Node.js 18.18+ and npm).
command -v npm >/dev/null || apt_install nodejs npm
echo "services: PostgreSQL and Redis are up; nginx, Chromium and npm are installed"
