#!/bin/sh
# Prints the man-page-like reference of a pushline binary: `pushline help` and the
# help of every subcommand (and their subcommands), one after the other; installed as
# share/doc/pushline/pushline-help.txt by `make install` and the .deb.
set -eu
bin=${1:-pushline}
# The names listed under SUBCOMMANDS: in a help text.
subcommands() { sed -n '/^SUBCOMMANDS:/,/^$/p' | sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p; s/^  \([a-z][a-z-]*\)$/\1/p'; }
section() {
    echo
    echo "================================================================"
    echo "pushline $*"
    echo "================================================================"
    "$bin" help "$@"
}
echo "PUSHLINE(1)"
echo
"$bin" help
for sub in $("$bin" help | subcommands); do
    section "$sub"
    for subsub in $("$bin" help "$sub" | subcommands); do
        section "$sub" "$subsub"
    done
done
