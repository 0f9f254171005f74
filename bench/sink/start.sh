#!/usr/bin/env bash
# Starts the nginx HTTP/2 TLS sink on 127.0.0.1 (see nginx.conf.template for what it answers).
#   bench/sink/start.sh [port] [dir]      (defaults: 18443, a new temp dir)
# Prints: READY <port> <ca_file> <dir>     Stop it with bench/sink/stop.sh <dir>.
# WORKERS=n sets worker_processes (default 1).
# LATENCY_MS=n answers every request n ms after it arrived (default 0: at once); needs nginx's
# njs module (Debian libnginx-mod-http-js).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${1:-18443}"
dir="${2:-$(mktemp -d /tmp/pushline-sink.XXXXXX)}"
latency="${LATENCY_MS:-0}"
case "$latency" in ''|*[!0-9]*) echo "LATENCY_MS must be a whole number of milliseconds, got '$latency'" >&2; exit 2 ;; esac
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1
user_line=""
if [ "$(id -u)" = 0 ]; then user_line="user $(id -un) $(id -gn);"; fi
load_js="" js_import=""
if [ "$latency" -gt 0 ]; then
    module=/usr/lib/nginx/modules/ngx_http_js_module.so
    [ -f "$module" ] || { echo "LATENCY_MS needs nginx's njs module: apt-get install libnginx-mod-http-js" >&2; exit 2; }
    load_js="load_module $module;"
    js_import="js_path $here; js_import sink from sink.js;"
    # An answer: its status (and body) in variables, sent by sink.js after the delay.
    respond() { echo "set \$sink_status $1; set \$sink_body '${2:-}'; js_content sink.respond;"; }
    fcm_sed="s|return \\([0-9]*\\) '\\(.*\\)';|set \$sink_status \\1; set \$sink_body '\\2'; js_content sink.respond;|"
else
    respond() { echo "return $1;"; }
    fcm_sed=""
fi
sed -e "$fcm_sed" "$here/fcm-locations.conf" > "$dir/fcm-locations.conf"
sed -e "s|__DIR__|$dir|g" -e "s|__PORT__|$port|g" -e "s|__USER__|$user_line|" \
    -e "s|__WORKERS__|${WORKERS:-1}|" -e "s|__LOAD_JS__|$load_js|" -e "s|__JS_IMPORT__|$js_import|" \
    -e "s|__LATENCY_MS__|$latency|" -e "s|__HERE__/fcm-locations.conf|$dir/fcm-locations.conf|" \
    -e "s|__RESPOND_200__|$(respond 200)|" -e "s|__RESPOND_201__|$(respond 201)|" \
    "$here/nginx.conf.template" > "$dir/nginx.conf"
nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
for _ in $(seq 50); do
    [ -s "$dir/nginx.pid" ] && break
    sleep 0.1
done
[ -s "$dir/nginx.pid" ] || { echo "nginx did not start; see $dir/error.log" >&2; exit 1; }
echo "READY $port $dir/cert.pem $dir"
