#!/usr/bin/env bash
# make integ: brings the docker compose cluster (three nodes, two gateways
# behind the balancer) up from locally built FROM-scratch images, runs
# consensus runs through the balancer, checks every one completes with all
# four stages, and tears the cluster down. Skips, saying so, where there is no Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
  echo "make integ: SKIPPED — no Docker engine on this machine"
  exit 0
fi
COMPOSE=${COMPOSE:-$(docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)}
export COMPOSE_PROJECT_NAME=qlcinteg
export COMPOSE
trap './scripts/compose.sh down -v --remove-orphans >/dev/null 2>&1 || true' EXIT
make --no-print-directory compose-up COMPOSE="$COMPOSE"
base=http://127.0.0.1:8080
# The tenant key compose-up minted with the generated admin key (no key ships with the repository).
key=$(sed -n 's/^QLC_TENANT_KEY=//p' .qlc/compose.env | tail -n 1)
auth="Authorization: Bearer $key"
# The secrets file is the owner's only.
[ "$(stat -c %a .qlc/compose.env)" = 600 ] || { echo "make integ: .qlc/compose.env is not mode 0600"; exit 1; }
ids=()
for i in $(seq 6); do
  id=$(curl -fsS "$base/v1/runs" -H "$auth" -H 'Content-Type: application/json' \
        -d "{\"query\":\"integration question $i: how does gossip spread?\",\"profile\":\"instant\",\"seed\":$i}" |
       python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])')
  ids+=("$id")
done
fail=0
for id in "${ids[@]}"; do
  status=""
  for _ in $(seq 100); do
    status=$(curl -fsS "$base/v1/runs/$id" -H "$auth" | python3 -c '
import sys, json
d = json.load(sys.stdin)
ok = d["status"] == "completed" and all(s["status"] == "completed" and s["output"] for s in d["stages"]) and d["answer"]
print("ok" if ok else d["status"])')
    [ "$status" = running ] || break
    sleep 0.1
  done
  echo "run $id: $status"
  [ "$status" = ok ] || fail=1
done
# The OpenAI-compatible endpoint through the cluster.
curl -fsS "$base/v1/chat/completions" -H "$auth" -H 'Content-Type: application/json' \
  -d '{"model":"qlc-instant","messages":[{"role":"user","content":"What is a quorum?"}]}' |
  python3 -c 'import sys,json; d=json.load(sys.stdin); assert d["choices"][0]["message"]["content"]; print("chat completion: ok")' || fail=1
# Without a key: 401.
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/models")
[ "$code" = 401 ] && echo "no key: 401 ok" || { echo "no key: HTTP $code (want 401)"; fail=1; }
# The usage ledger billed the runs (billing follows the end of a run):
# two gateways behind the balancer each billed theirs; either sums both.
sleep 1
curl -fsS "$base/v1/usage" -H "$auth" |
  python3 -c 'import sys,json; d=json.load(sys.stdin); n=d["totals"]["runs"]; assert n >= 7, n; assert d["gateways"] == 2 and d["complete"], d; print("usage ledger: %d runs billed, %d tokens, from %d gateways" % (n, d["totals"]["total_tokens"], d["gateways"]))' || fail=1
# The admin key manages tenants; the tenant key does not.
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/admin/tenants" -H "$auth")
[ "$code" = 403 ] && echo "tenant key on the admin API: 403 ok" || { echo "tenant key on the admin API: HTTP $code (want 403)"; fail=1; }
admin=$(sed -n 's/^QLC_ADMIN_KEY=//p' .qlc/compose.env | tail -n 1)
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/admin/tenants" -H "Authorization: Bearer $admin")
[ "$code" = 200 ] && echo "generated admin key: 200 ok" || { echo "generated admin key: HTTP $code (want 200)"; fail=1; }
[ $fail = 0 ] && echo "make integ: PASS" || { ./scripts/compose.sh logs --tail 50; echo "make integ: FAIL"; exit 1; }
