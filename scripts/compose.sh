#!/usr/bin/env bash
# scripts/compose.sh ARGS…: the compose CLI on the repository's
# docker-compose.yml with the cluster's secrets in its environment. The
# secrets live in .qlc/compose.env (mode 0600, git-ignored), made on first
# use and reused after:
#   QLC_CLUSTER_KEY  the cluster key (base64 of 32 random bytes): gossip
#                    encryption and the actor transport's mutual TLS
#   QLC_ADMIN_KEY    the gateway's first admin key (qlc_ + 40 hex digits)
#   QLC_TENANT_KEY   a key of the tenant "dev", added by make compose-up
# A key already in the environment wins over the file (e.g. a rotation,
# docs/keys.md). Nothing is echoed.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE=${COMPOSE:-$(docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)}
env_file=.qlc/compose.env
umask 077
mkdir -p .qlc
chmod 700 .qlc
touch "$env_file"
chmod 600 "$env_file"
if ! grep -q '^QLC_CLUSTER_KEY=' "$env_file"; then
  echo "QLC_CLUSTER_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '\n')" >>"$env_file"
  echo "compose: made a cluster key in $env_file" >&2
fi
if ! grep -q '^QLC_ADMIN_KEY=' "$env_file"; then
  echo "QLC_ADMIN_KEY=qlc_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$env_file"
  echo "compose: made the first admin key in $env_file" >&2
fi
# Values from the file, unless the environment has them already.
while IFS= read -r line; do
  name=${line%%=*} value=${line#*=}
  case "$name" in QLC_*) [ -n "${!name:-}" ] || export "$name=$value" ;; esac
done <"$env_file"
exec $COMPOSE "$@"
