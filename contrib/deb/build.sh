#!/bin/sh
# Builds the Debian package with dpkg-deb: ./build.sh RELEASE_BINARY WORKDIR
# Writes WORKDIR/pushline_VERSION_ARCH.deb and prints its path. Run from the repository
# root (`make deb` does, after the release build).
set -eu
bin=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=$("$bin" --version)
arch=$(dpkg --print-architecture)
root="$work/root"
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/doc/pushline" "$root/etc/pushline" \
         "$root/lib/systemd/system" "$root/usr/lib/tmpfiles.d" "$root/var/lib/pushline"
install -m 755 "$bin" "$root/usr/bin/pushline"
strip --strip-unneeded "$root/usr/bin/pushline" 2>/dev/null || true
install -m 755 "$repo/clients/shell/pushline-send" "$root/usr/bin/pushline-send"
install -m 640 "$here/pushline.json" "$root/etc/pushline/pushline.json"
install -m 644 "$repo/contrib/systemd/pushline.service" "$repo/contrib/systemd/pushline.socket" "$root/lib/systemd/system/"
install -m 644 "$repo/contrib/systemd/pushline.tmpfiles" "$root/usr/lib/tmpfiles.d/pushline.conf"
install -m 644 "$repo/README.md" "$repo/protocol.md" "$root/usr/share/doc/pushline/"
"$repo/contrib/help-text.sh" "$root/usr/bin/pushline" > "$root/usr/share/doc/pushline/pushline-help.txt"
for s in postinst postrm prerm; do install -m 755 "$here/$s" "$root/DEBIAN/$s"; done
echo /etc/pushline/pushline.json > "$root/DEBIAN/conffiles"
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: pushline
Version: $version
Architecture: $arch
Maintainer: Pushline maintainers <pushline@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.36), libcurl4 (>= 7.88), libssl3, libsqlite3-0 (>= 3.40), libpq5 (>= 15), libstdc++6, libgcc-s1, passwd
Section: net
Priority: optional
Homepage: https://github.com/pushline/pushline
Description: push-notification sidecar daemon (APNs, FCM, WebPush, WNS)
 Pushline keeps a registry of devices in SQLite and sends notifications to
 Apple, Google, browsers and Windows over pooled HTTP/2 connections. Application
 servers talk to it over a Unix socket, one JSON object per line.
CONTROL
out="$work/pushline_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "$out"
