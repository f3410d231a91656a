#!/bin/sh
# Runs every fuzz target of the module for the given time each (default 20s).
# The seed corpora also run as plain tests in `make test`.
set -eu
cd "$(dirname "$0")/.."
t=${1:-20s}
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
	pkg="./$(dirname "$f")"
	for fn in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | cut -d' ' -f2); do
		echo "== $pkg $fn ($t)"
		go test -run '^$' -fuzz "^$fn\$" -fuzztime "$t" "$pkg"
	done
done
