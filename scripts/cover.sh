#!/usr/bin/env bash
# make cover: statement coverage per package, as a table, from one
# `go test -coverprofile` per package (each package's own tests, one package
# at a time as in `make test`). Then the groups the project holds to a floor
# (COVER_FLOOR, default 90 %), each the sum of its packages' statements:
#
#   tokenizer   tokenizer/
#   stagework   stagework/, stagework/openai/, stagework/sse/ — not the
#               simulator, stagework/sim/ (its phrase banks are data), which
#               is listed on its own line
#   cluster     cluster/
#
# A group below the floor, or a failing test, makes the target fail.
#
#   make cover                                   every package
#   make cover COVER_PKGS="./tokenizer/ ./stagework/... ./cluster/"
#
# Profiles are kept in bin/cover/ (go tool cover -html=bin/cover/<pkg>.out).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
PKGS=${COVER_PKGS:-./...}
FLOOR=${COVER_FLOOR:-90}
OUT=${COVER_DIR:-bin/cover}
MOD=$($GO list -m)
mkdir -p "$OUT"
rm -f "$OUT"/*.out

# stmts FILE... prints "covered total" over the profiles' blocks.
stmts() {
	awk 'FNR > 1 { total += $2; if ($3 > 0) covered += $2 } END { printf "%d %d\n", covered, total }' "$@"
}
pct() { awk -v c="$1" -v t="$2" 'BEGIN { if (t == 0) print "-"; else printf "%.1f", 100 * c / t }'; }

failed=()
declare -A profile
printf '%-44s %10s %10s %8s\n' package statements covered coverage
for pkg in $($GO list $PKGS); do
	rel=${pkg#"$MOD"}
	rel=${rel#/}
	rel=${rel:-.}
	f="$OUT/$(echo "$rel" | tr / _).out"
	if ! log=$($GO test -count=1 -covermode=set -coverprofile="$f" "$pkg" 2>&1); then
		failed+=("$rel")
		echo "$log" | tail -20 >&2
	fi
	if [[ ! -s $f ]]; then
		printf '%-44s %10s %10s %8s\n' "$rel" - - "no tests"
		continue
	fi
	profile[$rel]=$f
	read -r c t < <(stmts "$f")
	printf '%-44s %10d %10d %7s%%\n' "$rel" "$t" "$c" "$(pct "$c" "$t")"
done

echo
printf '%-44s %10s %10s %8s  (floor %s%%)\n' group statements covered coverage "$FLOOR"
below=()
for group in "tokenizer:tokenizer" "stagework:stagework stagework/openai stagework/sse" "cluster:cluster"; do
	name=${group%%:*}
	files=()
	for p in ${group#*:}; do
		[[ -n ${profile[$p]:-} ]] && files+=("${profile[$p]}")
	done
	if [[ ${#files[@]} -ne $(wc -w <<<"${group#*:}") ]]; then
		continue # not all of the group was measured (COVER_PKGS)
	fi
	read -r c t < <(stmts "${files[@]}")
	p=$(pct "$c" "$t")
	mark=ok
	if awk -v p="$p" -v f="$FLOOR" 'BEGIN { exit !(p < f) }'; then
		mark=BELOW
		below+=("$name")
	fi
	label=$name
	[[ $name == stagework ]] && label="stagework (+ openai, sse; not sim)"
	printf '%-44s %10d %10d %7s%%  %s\n' "$label" "$t" "$c" "$p" "$mark"
done

if ((${#failed[@]})); then
	echo "make cover: tests failed in: ${failed[*]}" >&2
	exit 1
fi
if ((${#below[@]})); then
	echo "make cover: below ${FLOOR}% of statements: ${below[*]}" >&2
	exit 1
fi
