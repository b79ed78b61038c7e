#!/usr/bin/env bash
# Builds the >= 20 MB tokenizer comparison corpus from offline sources:
# Debian packages (python3.11-doc, dict-foldoc, manpages-ja, manpages-de,
# unicode-data and the gettext catalogs already on the machine) and Go's own
# sources in $(go env GOROOT)/src. Output: tokenizer/corpus/data/*.txt, one
# file per part, documents separated by the byte 0x1E, plus MANIFEST.
#
# Then:  QLC_TOKENIZER_CORPUS=tokenizer/corpus/data go test -run TestCorpus -timeout 30m ./tokenizer/
set -euo pipefail
cd "$(dirname "$0")"
pkgs=(python3.11-doc dict-foldoc manpages-ja manpages-de unicode-data)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
	echo "installing ${missing[*]}" >&2
	if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
go run gather.go -out data
