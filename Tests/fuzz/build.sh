#!/usr/bin/env bash
# Builds the libFuzzer targets (Tests/fuzz/targets/<name>.swift) against the PushlineCore
# sources: SwiftPM builds PushlineCore (and swift-log, the C shim) in its own scratch
# directory with coverage and AddressSanitizer instrumentation (--sanitize=fuzzer,address,
# release, testable so targets reach internal functions); each target is then compiled with
# swiftc -sanitize=fuzzer,address and linked with those objects. The product build
# (.build, Package.swift) is not involved and gets no unsafe flags.
#   Tests/fuzz/build.sh [target...]     (default: every target)
set -euo pipefail
cd "$(dirname "$0")/../.."
SWIFT=${SWIFT:-swift}
SCRATCH=${FUZZ_SCRATCH:-.build-fuzz}
OUT=$SCRATCH/fuzz-bin
ALL_TARGETS="json framing request apns fcm webpush wns"
TARGETS=${*:-$ALL_TARGETS}

# A fresh scratch directory would fetch the dependencies again: reuse .build's checkouts.
if [ ! -d "$SCRATCH/checkouts" ] && [ -d .build/checkouts ]; then
    mkdir -p "$SCRATCH"
    cp -r .build/checkouts .build/repositories .build/workspace-state.json "$SCRATCH"/ 2>/dev/null || true
fi
$SWIFT build --scratch-path "$SCRATCH" -c release --target PushlineCore \
    --sanitize=address -Xswiftc -sanitize=fuzzer -Xswiftc -enable-testing
REL=$SCRATCH/release
OBJS=("$REL"/PushlineCore.build/*.o "$REL"/Logging.build/*.o "$REL"/CPushlineShims.build/*.o)
mkdir -p "$OUT"
for t in $TARGETS; do
    src=Tests/fuzz/targets/$t.swift
    [ -f "$src" ] || { echo "no fuzz target $t" >&2; exit 1; }
    # Relink only when the target, the shared harness code or the core objects changed.
    if [ -x "$OUT/$t" ] && [ "$OUT/$t" -nt "$src" ] && [ "$OUT/$t" -nt Tests/fuzz/targets/Common.swift ] \
        && [ -z "$(find "$REL/PushlineCore.build" -name '*.o' -newer "$OUT/$t" | head -1)" ]; then
        continue
    fi
    echo "linking fuzz target $t"
    swiftc -O -sanitize=fuzzer,address -parse-as-library -swift-version 5 -module-name "fuzz_$t" \
        -I "$REL/Modules" \
        -Xcc -fmodule-map-file=Sources/CCurl/module.modulemap \
        -Xcc -fmodule-map-file=Sources/COpenSSL/module.modulemap \
        -Xcc -fmodule-map-file=Sources/CSQLite/module.modulemap \
        -Xcc -fmodule-map-file=Sources/CPostgres/module.modulemap -Xcc -I -Xcc "$(pkg-config --variable=includedir libpq)" \
        -Xcc -fmodule-map-file="$REL/CPushlineShims.build/module.modulemap" \
        -Xcc -I -Xcc Sources/CPushlineShims/include \
        Tests/fuzz/targets/Common.swift "$src" "${OBJS[@]}" \
        -lcurl -lssl -lcrypto -lsqlite3 -lpq -o "$OUT/$t.new" 2> >(grep -v 'Cannot export local symbol' >&2)
    # Renamed into place: a fuzzer still running the old binary keeps it.
    mv -f "$OUT/$t.new" "$OUT/$t"
done
