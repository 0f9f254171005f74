import Synchronization

/// The daemon's metrics, rendered in the Prometheus text exposition format (version 0.0.4)
/// for `GET /metrics` on `metrics_listen` and the `metrics` command.
///
/// One process-wide instance (`Metrics.shared`): counters and histograms are updated where
/// things happen (commands, notifications, provider HTTP answers); gauges that are cheaper
/// to read than to track (connections, registry size) are passed to `render` at scrape time.
///
/// ```swift
/// Metrics.shared.inc(.notifications, ["app": "shop", "platform": "apns", "outcome": "sent"])
/// Metrics.shared.observe(.requestDuration, ["command": "send"], seconds: 0.004)
/// let text = Metrics.shared.render(gauges: [])
/// ```
public final class Metrics: Sendable {
    public static let shared = Metrics()

    /// A metric family: its name, type, help text and (for histograms) bucket bounds.
    public struct Family: Sendable, Hashable {
        public enum Kind: String, Sendable { case counter, gauge, histogram }
        public let name: String
        public let kind: Kind
        public let help: String
        public let buckets: [Double]

        public init(_ name: String, _ kind: Kind, _ help: String, buckets: [Double] = []) {
            self.name = name
            self.kind = kind
            self.help = help
            self.buckets = buckets
        }

        public static func == (a: Family, b: Family) -> Bool { a.name == b.name }
        public func hash(into h: inout Hasher) { h.combine(name) }

        static let latencyBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

        public static let requests = Family(
            "pushline_requests_total", .counter, "Protocol requests answered, by command and outcome (ok or the error code).")
        public static let requestDuration = Family(
            "pushline_request_duration_seconds", .histogram, "Time from reading a request to its response, by command.",
            buckets: latencyBuckets)
        public static let notifications = Family(
            "pushline_notifications_total", .counter, "Notifications to single devices, by app, platform and outcome (sent, failed).")
        public static let notificationFailures = Family(
            "pushline_notification_failures_total", .counter, "Failed notifications by app, platform and the provider's reason.")
        public static let retryableFailures = Family(
            "pushline_notification_retryable_failures_total", .counter,
            "Failed notifications the provider says may succeed later (the client may retry), by app and platform.")
        public static let deactivations = Family(
            "pushline_deactivations_total", .counter, "Devices marked inactive on a provider's verdict, by app, platform and reason.")
        public static let providerResponses = Family(
            "pushline_provider_responses_total", .counter,
            "Provider HTTP answers by origin and status (the HTTP status, or the transport error: timeout, connect_error, tls_error, connection_lost).")
        public static let providerDuration = Family(
            "pushline_provider_request_duration_seconds", .histogram,
            "Time of one provider HTTP request, queueing and retries included, by origin.", buckets: latencyBuckets)
        public static let providerInFlight = Family(
            "pushline_provider_requests_in_flight", .gauge, "Provider HTTP requests queued or in flight (HTTP/2 streams), by origin.")
        public static let transportRetries = Family(
            "pushline_provider_transport_retries_total", .counter, "Provider requests sent again after their connection was lost before an answer.")
        public static let transportRecoveries = Family(
            "pushline_provider_transport_recoveries_total", .counter,
            "Provider requests the transport got going again past a libcurl 7.88 stall, by kind: early_answer (a response that came before the request body was sent, made to be read again once the body was sent), nudged (a response libcurl had not ended two passes and 100 ms after its headers, made to be read again), restarted (a request left waiting for a connection, added again), expired (a request libcurl had not ended by its deadline, failed with timeout).")
        public static let providerRetries = Family(
            "pushline_provider_retries_total", .counter,
            "Notifications a provider sent again, by app, platform and reason (the transport error, the provider's reason code, or http_<status>): backoff retries, and re-sends after a refreshed or moved provider token.")
        public static let providerConnections = Family(
            "pushline_provider_connections_opened_total", .counter, "HTTP/2 connections opened to providers.")
        public static let providerOpenConnections = Family(
            "pushline_provider_open_connections", .gauge, "HTTP/2 connections open to providers now, by origin.")
        public static let providerStreams = Family(
            "pushline_provider_streams_in_flight", .gauge,
            "Provider requests on a connection now (HTTP/2 streams open or opening, not those queued), by origin.")
        public static let socketConnections = Family(
            "pushline_socket_connections", .gauge, "Client connections open on the Unix socket.")
        public static let pending = Family(
            "pushline_pending_notifications", .gauge, "Notifications accepted and not yet answered (max_pending bounds it).")
        public static let registryDevices = Family(
            "pushline_registry_devices", .gauge, "Registered devices by app, platform and active (true/false).")
        public static let outboxQueued = Family(
            "pushline_outbox_queued_notifications", .gauge, "Notifications in the durable outbox without a final result (max_queued bounds it).")
        public static let outboxOldestAge = Family(
            "pushline_outbox_oldest_queued_age_seconds", .gauge, "Age of the oldest unfinished outbox job (0 when none).")
        public static let outboxJobs = Family(
            "pushline_outbox_live_jobs", .gauge, "Outbox jobs queued, scheduled or running.")
        public static let eventsWaiting = Family(
            "pushline_events_waiting", .gauge, "`events` calls waiting for newer events (wait_ms); a client that hangs up ends its call.")
        public static let reloads = Family(
            "pushline_config_reloads_total", .counter, "Config reloads by outcome (ok, error).")
        public static let buildInfo = Family(
            "pushline_build_info", .gauge, "Always 1; the daemon's and the protocol's versions as labels.")
        public static let startTime = Family(
            "pushline_start_time_seconds", .gauge, "When the daemon started (Unix time).")

        /// Every family, in the order they are rendered.
        static let all: [Family] = [
            buildInfo, startTime, requests, requestDuration, notifications, notificationFailures, retryableFailures,
            deactivations, providerResponses, providerDuration, providerInFlight, transportRetries, transportRecoveries, providerRetries,
            providerConnections, providerOpenConnections, providerStreams,
            socketConnections, pending, registryDevices, outboxQueued, outboxOldestAge, outboxJobs, eventsWaiting, reloads,
        ]
    }

    struct Histogram {
        var counts: [UInt64]
        var sum: Double = 0
        var count: UInt64 = 0

        mutating func add(bucket: Int, seconds: Double) {
            counts[bucket] += 1
            sum += seconds
            count += 1
        }
    }

    struct State {
        /// family name -> rendered label set (`app="x",platform="y"`) -> value
        var values: [String: [String: Double]] = [:]
        var histograms: [String: [String: Histogram]] = [:]
        var originLabels: [String: String] = [:]
    }

    private let state = Mutex(State())
    let startedAt = Double(nowMillis()) / 1000

    public init() {}

    /// Adds `by` to a counter (or a gauge tracked here).
    public func inc(_ f: Family, _ labels: KeyValuePairs<String, String> = [:], by: Double = 1) {
        let key = Self.labelString(labels)
        state.withLock { $0.values[f.name, default: [:]][key, default: 0] += by }
    }

    /// Adds to a counter with labels already rendered by `labelString` (hot paths reuse them).
    public func inc(_ f: Family, renderedLabels key: String, by: Double = 1) {
        state.withLock { $0.values[f.name, default: [:]][key, default: 0] += by }
    }

    /// Records one observation in a histogram.
    public func observe(_ f: Family, _ labels: KeyValuePairs<String, String> = [:], seconds: Double) {
        observe(f, renderedLabels: Self.labelString(labels), seconds: seconds)
    }

    public func observe(_ f: Family, renderedLabels key: String, seconds: Double) {
        let bucket = f.buckets.firstIndex { seconds <= $0 } ?? f.buckets.count
        state.withLock { s in Self.record(&s, f, key, bucket: bucket, seconds: seconds) }
    }

    /// Adds one observation to a histogram in place (a copy taken out and stored back copied
    /// its bucket array on every observation).
    private static func record(_ s: inout State, _ f: Family, _ key: String, bucket: Int, seconds: Double) {
        s.histograms[f.name, default: [:]][key, default: Histogram(counts: [UInt64](repeating: 0, count: f.buckets.count + 1))]
            .add(bucket: bucket, seconds: seconds)
    }

    /// Provider HTTP requests handed to the transport (`HTTPTransport.perform`/`performAll`).
    public func providerRequestsStarted(origin: String, count: Int) {
        state.withLock { s in
            let key = Self.originLabel(origin, &s)
            s.values[Family.providerInFlight.name, default: [:]][key, default: 0] += Double(count)
        }
    }

    /// `origin="..."`, rendered once per origin (this runs for every provider request).
    private static func originLabel(_ origin: String, _ s: inout State) -> String {
        if let l = s.originLabels[origin] { return l }
        let l = labelString([("origin", origin)])
        s.originLabels[origin] = l
        return l
    }

    /// One provider HTTP request ended: its status (or transport error), its time, one fewer in flight.
    public func providerRequestFinished(origin: String, startNs: UInt64, status: String) {
        let seconds = Double(monotonicNanos() &- startNs) / 1e9
        let f = Family.providerDuration
        let bucket = f.buckets.firstIndex { seconds <= $0 } ?? f.buckets.count
        state.withLock { s in
            let originKey = Self.originLabel(origin, &s)
            // Status values are digits or reason words: nothing to escape.
            let statusKey = originKey + ",status=\"" + status + "\""
            s.values[Family.providerInFlight.name, default: [:]][originKey, default: 0] -= 1
            s.values[Family.providerResponses.name, default: [:]][statusKey, default: 0] += 1
            Self.record(&s, f, originKey, bucket: bucket, seconds: seconds)
        }
    }

    /// A provider is about to send a notification again (see `Family.providerRetries`); `reason`
    /// is cut at its first ": " so label values stay a bounded set of codes.
    public func providerRetry(app: String, platform: Platform, reason: String) {
        let code = reason.split(separator: ":", maxSplits: 1).first.map(String.init) ?? reason
        inc(.providerRetries, ["app": app, "platform": platform.rawValue, "reason": code])
    }

    /// The value of a counter (tests, `health`).
    public func value(_ f: Family, _ labels: KeyValuePairs<String, String> = [:]) -> Double {
        let key = Self.labelString(labels)
        return state.withLock { $0.values[f.name]?[key] ?? 0 }
    }

    /// A gauge sample computed at scrape time.
    public struct Sample: Sendable {
        public var family: Family
        public var labels: [(String, String)]
        public var value: Double
        public init(_ family: Family, _ labels: [(String, String)] = [], _ value: Double) {
            self.family = family
            self.labels = labels
            self.value = value
        }
    }

    /// The exposition text: every family with samples, `# HELP` and `# TYPE` first.
    public func render(gauges: [Sample]) -> String {
        let snapshot = state.withLock { $0 }
        var extra: [String: [(String, Double)]] = [:]
        for g in gauges { extra[g.family.name, default: []].append((Self.labelString(g.labels), g.value)) }
        extra[Family.buildInfo.name] = [
            (Self.labelString([("version", PushlineVersion.daemon), ("protocol", PushlineVersion.proto)]), 1)]
        extra[Family.startTime.name] = [("", startedAt)]
        var out = ""
        for f in Family.all {
            let plain = (snapshot.values[f.name] ?? [:]).sorted { $0.key < $1.key } + (extra[f.name] ?? [])
            let hist = (snapshot.histograms[f.name] ?? [:]).sorted { $0.key < $1.key }
            out += "# HELP \(f.name) \(f.help)\n# TYPE \(f.name) \(f.kind.rawValue)\n"
            for (labels, v) in plain {
                out += "\(f.name)\(labels.isEmpty ? "" : "{\(labels)}") \(Self.number(v))\n"
            }
            for (labels, h) in hist {
                let sep = labels.isEmpty ? "" : ","
                var cumulative: UInt64 = 0
                for (i, bound) in f.buckets.enumerated() {
                    cumulative += h.counts[i]
                    out += "\(f.name)_bucket{\(labels)\(sep)le=\"\(Self.number(bound))\"} \(cumulative)\n"
                }
                out += "\(f.name)_bucket{\(labels)\(sep)le=\"+Inf\"} \(h.count)\n"
                out += "\(f.name)_sum\(labels.isEmpty ? "" : "{\(labels)}") \(Self.number(h.sum))\n"
                out += "\(f.name)_count\(labels.isEmpty ? "" : "{\(labels)}") \(h.count)\n"
            }
        }
        return out
    }

    /// `a="1",b="x"` with values escaped as the format requires (backslash, quote, newline).
    public static func labelString(_ labels: KeyValuePairs<String, String>) -> String {
        labelString(labels.map { ($0.key, $0.value) })
    }

    public static func labelString(_ labels: [(String, String)]) -> String {
        var s = ""
        s.reserveCapacity(labels.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count + 4 })
        for (i, (k, v)) in labels.enumerated() {
            if i > 0 { s += "," }
            s += k
            s += "=\""
            // Nearly every value (commands, outcomes, apps, platforms, codes) needs no escape:
            // appended whole instead of scalar by scalar (this runs several times per request).
            if !v.utf8.contains(where: { $0 == 0x5C || $0 == 0x22 || $0 == 0x0A }) {
                s += v
                s += "\""
                continue
            }
            for c in v.unicodeScalars {
                switch c {
                case "\\": s += "\\\\"
                case "\"": s += "\\\""
                case "\n": s += "\\n"
                default: s.unicodeScalars.append(c)
                }
            }
            s += "\""
        }
        return s
    }

    static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }
}
