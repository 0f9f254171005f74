/// The daemon's configuration: the JSON config file, or the embedded default.
///
/// ```swift
/// let config = try PushlineConfig.load(path: "pushline.json")
/// config.apps["default"]?.apns?.topic
/// ```
public struct PushlineConfig: Sendable {
    public var socket: String = "./var/pushline.sock"
    public var socketMode: UInt32 = 0o660
    public var database: String = "./var/pushline.db"
    /// PostgreSQL connections per daemon (`database_pool`); unused on SQLite.
    public var databasePool: Int = 4
    public var updateOnDuplicateRegId: Bool = false
    public var maxLineBytes: Int = 1 << 20
    /// Who may connect (`allowed_uids`, `allowed_gids`); nil lists take the defaults (see `PeerPolicy`).
    public var access = PeerAccess()
    /// `max_connections` and `max_reply_buffer_bytes`.
    public var serverLimits = ServerLimits()
    /// Notifications queued or in flight across the daemon before commands get `busy`.
    public var maxPending: Int = 250_000
    /// The durable outbox (issue 13): notifications queued by async requests before `busy`.
    public var maxQueued: Int = 10_000_000
    /// An async notification's deadline without `expiration` or `time_to_live` (seconds).
    public var maxDeliveryDelay: Int64 = 86_400
    /// Finished jobs and their results are kept this long (seconds).
    public var jobRetention: Int64 = 7 * 86_400
    /// On SIGTERM, how long in-flight outbox deliveries may take to finish (ms).
    public var shutdownTimeoutMs: Int = 10_000
    /// How long a claimed delivery stays leased to this daemon (ms).
    public var leaseMs: Int = 30_000
    /// PostgreSQL: how often a daemon looks for new events and outbox work when no NOTIFY
    /// arrives (PgBouncer in transaction mode) (ms).
    public var pollMs: Int = 1000
    /// Caps the database file at this many pages (SQLite `max_page_count`), nil: no cap.
    /// Meant for tests of a full disk.
    public var databaseMaxPages: Int?
    /// HTTP/2 streams in flight per provider connection (the server's own limit still rules).
    /// Each costs about 35 KB while in flight; 500 keeps two connections busy over a WAN.
    public var maxStreamsPerConnection: Int = 500
    /// `trace`, `debug`, `info`, `notice`, `warning`, `error`, `critical`.
    public var logLevel: String = "info"
    /// `text` (one `key=value` line per event) or `json` (one JSON object per line).
    public var logFormat: String = "text"
    /// Where Prometheus scrapes `GET /metrics`: `host:port` or a Unix socket path; nil: off.
    public var metricsListen: String?
    public var apps: [String: AppConfig] = ["default": AppConfig()]
    /// How long the `events` feed keeps an event (`event_retention`), in seconds; 7 days.
    public var eventRetentionSeconds: Int64 = 7 * 86_400

    /// Transport settings derived from the provider blocks: one curl event loop per
    /// connection up to two loops (the machine's cores), and the largest `max_connections`
    /// of any block split across them. Each block's own `max_connections` travels with its
    /// requests (`HTTPRequest.maxConnections`) and caps that block's connections per origin.
    public var transportOptions: TransportOptions {
        let maxConnections = apps.values.flatMap(\.connectionConfigs).map(\.maxConnections).max() ?? 2
        let threads = max(1, min(2, maxConnections))
        return TransportOptions(
            threads: threads, maxConnectionsPerHost: (maxConnections + threads - 1) / threads,
            maxConcurrentStreams: maxStreamsPerConnection)
    }

    /// The embedded default: one app `default` with no provider credentials.
    public init() {}

    public static func load(path: String) throws(ConfigError) -> PushlineConfig {
        guard let bytes = readFile(path) else { throw ConfigError("", "cannot read config file '\(path)'") }
        let value: JSONValue
        do { value = try JSONValue.parse(blankingLineComments(bytes)) } catch {
            throw ConfigError("", "config file '\(path)' is not valid JSON: \(error)")
        }
        return try PushlineConfig(json: value)
    }

    /// Replaces every line whose first non-blank characters are `//` with spaces, so a
    /// config file (the packaged /etc/pushline/pushline.json) can carry commented-out
    /// defaults while offsets, lines and columns stay where they were. Unambiguous: a JSON
    /// string cannot span lines, so such a line is never inside a value.
    public static func blankingLineComments(_ bytes: [UInt8]) -> [UInt8] {
        var out = bytes
        var i = 0
        while i < out.count {
            var j = i
            while j < out.count && (out[j] == 0x20 || out[j] == 0x09) { j += 1 }
            var end = j
            while end < out.count && out[end] != 0x0A { end += 1 }
            if j + 1 < end && out[j] == 0x2F && out[j + 1] == 0x2F {
                for k in j..<end { out[k] = 0x20 }
            }
            i = end + 1
        }
        return out
    }

    /// A duration in seconds: a whole number of seconds, or a string of one number and a unit
    /// (`"45s"`, `"30m"`, `"12h"`, `"7d"`).
    static func duration(_ v: JSONValue, key: String, range: ClosedRange<Int64>) throws(ConfigError) -> Int64 {
        let seconds: Int64
        if let i = v.intValue {
            seconds = i
        } else if let s = v.stringValue, let unit = s.last, let n = Int64(s.dropLast()), n >= 0 {
            let mult: Int64
            switch unit {
            case "s": mult = 1
            case "m": mult = 60
            case "h": mult = 3600
            case "d": mult = 86_400
            default: throw ConfigError(key, "expected seconds (a whole number) or a string such as \"45s\", \"30m\", \"12h\", \"7d\", got \"\(s)\"")
            }
            let (p, overflow) = n.multipliedReportingOverflow(by: mult)
            seconds = overflow ? Int64.max : p
        } else {
            throw ConfigError(key, "expected seconds (a whole number) or a string such as \"45s\", \"30m\", \"12h\", \"7d\", got \(v.typeName == "string" ? "\"\(v.stringValue ?? "")\"" : v.typeName)")
        }
        guard range.contains(seconds) else {
            throw ConfigError(key, "must be between \(range.lowerBound) second(s) and \(range.upperBound / 86_400) days")
        }
        return seconds
    }

    public init(json: JSONValue) throws(ConfigError) {
        var r = try ConfigReader(json, path: "")
        socket = try r.string("socket") ?? socket
        if let m = r.value("socket_mode") {
            switch m {
            case .string(let s):
                guard let v = UInt32(s.hasPrefix("0o") ? String(s.dropFirst(2)) : s, radix: 8), v <= 0o777 else {
                    throw ConfigError("socket_mode", "expected an octal mode such as \"0660\", got \"\(s)\"")
                }
                socketMode = v
            default: throw ConfigError("socket_mode", "expected an octal mode as a string such as \"0660\"")
            }
        }
        database = try r.string("database") ?? database
        _ = try DatabaseLocation(database)
        databasePool = try r.int("database_pool", range: 1...256) ?? databasePool
        updateOnDuplicateRegId = try r.bool("update_on_duplicate_reg_id") ?? false
        maxLineBytes = try r.int("max_line_bytes", range: 1024...(256 << 20)) ?? maxLineBytes
        maxPending = try r.int("max_pending", range: 1...100_000_000) ?? maxPending
        maxQueued = try r.int("max_queued", range: 1...1_000_000_000) ?? maxQueued
        maxDeliveryDelay = Int64(try r.int("max_delivery_delay", range: 1...(30 * 86_400)) ?? Int(maxDeliveryDelay))
        if let v = r.value("job_retention") {
            jobRetention = try Self.duration(v, key: "job_retention", range: 1...(366 * 86_400))
        }
        shutdownTimeoutMs = try r.int("shutdown_timeout_ms", range: 0...600_000) ?? shutdownTimeoutMs
        leaseMs = try r.int("lease_ms", range: 1000...3_600_000) ?? leaseMs
        pollMs = try r.int("poll_ms", range: 10...60_000) ?? pollMs
        databaseMaxPages = try r.int("database_max_pages", range: 16...Int(Int32.max))
        serverLimits.maxConnections = try r.int("max_connections", range: 1...1_000_000) ?? serverLimits.maxConnections
        serverLimits.maxReplyBufferBytes =
            try r.int("max_reply_buffer_bytes", range: (64 << 10)...(1 << 30)) ?? serverLimits.maxReplyBufferBytes
        access.allowedUIDs = try Self.ids(&r, "allowed_uids", kind: "user", resolve: PeerPolicy.uid(named:))
        access.allowedGIDs = try Self.ids(&r, "allowed_gids", kind: "group", resolve: PeerPolicy.gid(named:))
        maxStreamsPerConnection = try r.int("max_streams_per_connection", range: 1...10_000) ?? maxStreamsPerConnection
        if let l = try r.string("log_level") {
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(l) else {
                throw ConfigError("log_level", "expected one of trace, debug, info, notice, warning, error, critical")
            }
            logLevel = l
        }
        if let f = try r.string("log_format") {
            guard ["text", "json"].contains(f) else { throw ConfigError("log_format", "expected \"text\" or \"json\", got \"\(f)\"") }
            logFormat = f
        }
        if let m = try r.string("metrics_listen") {
            if case .failure(let e) = MetricsListen.parse(m) { throw e }
            metricsListen = m
        }
        if let v = r.value("event_retention") {
            eventRetentionSeconds = try Self.duration(v, key: "event_retention", range: 1...(3650 * 86_400))
        }
        if let a = r.value("apps") {
            guard let ao = a.objectValue else { throw ConfigError("apps", "expected an object of app name to app block") }
            guard !ao.isEmpty else { throw ConfigError("apps", "must name at least one app") }
            var apps: [String: AppConfig] = [:]
            for (name, block) in ao.pairs {
                guard AppConfig.isValidName(name) else {
                    throw ConfigError("apps.\(name)", "app names use letters, digits, '.', '_' and '-' (1-64 characters)")
                }
                apps[name] = try AppConfig(json: block, path: "apps.\(name)")
            }
            self.apps = apps
        }
        try r.finish()
    }
}

extension PushlineConfig {
    /// A list of users or groups, each a number or a name, resolved to ids now.
    static func ids(_ r: inout ConfigReader, _ key: String, kind: String, resolve: (String) -> UInt32?) throws(ConfigError) -> [UInt32]? {
        guard let v = r.value(key) else { return nil }
        guard let items = v.arrayValue else { throw ConfigError(key, "expected an array of \(kind) names or numeric ids, got \(v.typeName)") }
        var out: [UInt32] = []
        for (i, item) in items.enumerated() {
            switch item {
            case .int(let n):
                guard n >= 0, n < Int64(UInt32.max) else { throw ConfigError("\(key)[\(i)]", "\(n) is not a valid \(kind) id") }
                out.append(UInt32(n))
            case .string(let name):
                guard !name.isEmpty, let id = resolve(name) else { throw ConfigError("\(key)[\(i)]", "no \(kind) named '\(name)'") }
                out.append(id)
            default:
                throw ConfigError("\(key)[\(i)]", "expected a \(kind) name or a numeric id, got \(item.typeName)")
            }
        }
        return out
    }
}

/// One app's provider credentials; a nil block means that platform is not configured.
public struct AppConfig: Sendable {
    public var apns: APNsConfig?
    public var fcm: FCMConfig?
    public var webpush: WebPushConfig?
    public var wns: WNSConfig?

    public init() {}

    public init(json: JSONValue, path: String) throws(ConfigError) {
        var r = try ConfigReader(json, path: path)
        if let v = r.value("apns") {
            var br = try ConfigReader(v, path: r.keyPath("apns"))
            apns = try APNsConfig(reading: &br)
            try br.finish()
        }
        if let v = r.value("fcm") {
            var br = try ConfigReader(v, path: r.keyPath("fcm"))
            fcm = try FCMConfig(reading: &br)
            try br.finish()
        }
        if let v = r.value("webpush") {
            var br = try ConfigReader(v, path: r.keyPath("webpush"))
            webpush = try WebPushConfig(reading: &br)
            try br.finish()
        }
        if let v = r.value("wns") {
            var br = try ConfigReader(v, path: r.keyPath("wns"))
            wns = try WNSConfig(reading: &br)
            try br.finish()
        }
        try r.finish()
    }

    /// The connection settings of every configured block.
    public var connectionConfigs: [ProviderConnectionConfig] {
        [apns?.connection, fcm?.connection, webpush?.connection, wns?.connection].compactMap { $0 }
    }

    public func isConfigured(_ p: Platform) -> Bool {
        switch p {
        case .apns: return apns != nil
        case .fcm: return fcm != nil
        case .webpush: return webpush != nil
        case .wns: return wns != nil
        }
    }

    public static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64
            && s.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
            }
    }
}
