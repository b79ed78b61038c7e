#!/usr/bin/env bash
# make compose-up (after make images): starts the compose cluster with the
# secrets of .qlc/compose.env (made on first use, see scripts/compose.sh),
# waits for the gateway, and makes sure .qlc/compose.env holds a working key
# of the tenant "dev" (QLC_TENANT_KEY, minted with the admin key through
# POST /v1/admin/tenants/dev/keys when missing or no longer known, e.g.
# after make compose-down removed the gateway's volume).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/compose.sh up -d
base=http://127.0.0.1:8080
ready=
for _ in $(seq 120); do
  if curl -fs "$base/readyz" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.5
done
if [ -z "$ready" ]; then
  ./scripts/compose.sh ps
  ./scripts/compose.sh logs --tail 30
  echo "the gateway did not become ready" >&2
  exit 1
fi
env_file=.qlc/compose.env
get() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }
admin=${QLC_ADMIN_KEY:-$(get QLC_ADMIN_KEY)}
tenant=$(get QLC_TENANT_KEY)
code=000
if [ -n "$tenant" ]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tenant" "$base/v1/models")
fi
if [ "$code" != 200 ]; then
  resp=$(curl -fsS -X POST -H "Authorization: Bearer $admin" "$base/v1/admin/tenants/dev/keys") || {
    echo "compose-up: could not make a key for the tenant dev with the admin key of $env_file" >&2
    exit 1
  }
  tenant=$(printf '%s' "$resp" | sed -n 's/.*"key" *: *"\([^"]*\)".*/\1/p')
  [ -n "$tenant" ] || { echo "compose-up: unexpected answer minting a tenant key" >&2; exit 1; }
  umask 077
  { grep -v '^QLC_TENANT_KEY=' "$env_file" || true; echo "QLC_TENANT_KEY=$tenant"; } >"$env_file.new"
  mv "$env_file.new" "$env_file"
  chmod 600 "$env_file"
fi
echo "QLC cluster is up: http://localhost:8080 (API keys: QLC_TENANT_KEY for the tenant dev, QLC_ADMIN_KEY, in $env_file)"
