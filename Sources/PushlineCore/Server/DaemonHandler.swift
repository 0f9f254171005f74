import Logging
import Synchronization

/// What the server hands every request to: it answers the operations commands (`metrics`,
/// `health`, `reload`), passes the others to the current `Dispatcher`, and counts and times
/// every command for the metrics.
///
/// Live reload swaps the dispatcher (config and providers) as a whole: a request keeps the
/// dispatcher it started with, so in-flight requests finish on the old settings while new
/// ones use the new. The registry and the HTTP/2 transport are shared, so connections to
/// unchanged origins stay up.
public final class DaemonHandler: RequestHandler {
    /// How `serve` was started: the file to re-read and the command-line overrides to keep.
    public struct Source: Sendable {
        public var configPath: String?
        public var socket: String?
        public var database: String?
        public var logLevel: String?
        public init(configPath: String?, socket: String? = nil, database: String? = nil, logLevel: String? = nil) {
            self.configPath = configPath
            self.socket = socket
            self.database = database
            self.logLevel = logLevel
        }

        /// Reads the config file with the command-line overrides applied.
        public func load() throws(ConfigError) -> PushlineConfig {
            var c = try configPath.map { p throws(ConfigError) in try PushlineConfig.load(path: p) } ?? PushlineConfig()
            if let socket { c.socket = socket }
            if let database { c.database = database }
            if let logLevel { c.logLevel = logLevel }
            return c
        }
    }

    struct Live {
        var dispatcher: Dispatcher
        var transport: HTTPTransport?
        var generation: Int
    }

    public let registry: any DeviceRegistry
    let source: Source
    let logger: Logger
    let notifier: SystemdNotifier
    let connectionCount: @Sendable () -> Int
    private let live: Mutex<Live>
    /// One reload at a time.
    private let reloading = Atomic<Bool>(false)

    static let commands: Set<String> = [
        "ping", "register", "unregister", "devices", "update", "prune", "stats", "send", "bulk", "topic", "subscribe",
        "unsubscribe", "topics", "subscribers", "metrics", "health", "reload", "job", "jobs", "cancel", "events",
    ]

    /// `command="<cmd>"` of each known command (`Metrics.labelString`), and of the rest.
    static let commandLabels: [String: String] = Dictionary(
        uniqueKeysWithValues: commands.map { ($0, Metrics.labelString([("command", $0)])) })
    static let unknownCommandLabels = Metrics.labelString([("command", "unknown")])
    /// `command="<cmd>",outcome="ok"` of each known command: the label set of most requests.
    static let commandOKLabels: [String: String] = commandLabels.mapValues { $0 + ",outcome=\"ok\"" }

    public init(dispatcher: Dispatcher, registry: any DeviceRegistry, transport: HTTPTransport?, source: Source, notifier: SystemdNotifier,
                logger: Logger, connectionCount: @escaping @Sendable () -> Int) {
        self.registry = registry
        self.source = source
        self.logger = logger
        self.notifier = notifier
        self.connectionCount = connectionCount
        live = Mutex(Live(dispatcher: dispatcher, transport: transport, generation: 1))
    }

    public var dispatcher: Dispatcher { live.withLock { $0.dispatcher } }
    public var transport: HTTPTransport? { live.withLock { $0.transport } }

    public func handle(_ request: JSONObject) async throws(CommandError) -> JSONObject {
        let start = monotonicNanos()
        let cmd = request["cmd"]?.stringValue ?? ""
        let result: Result<JSONObject, CommandError>
        switch cmd {
        case "metrics", "health", "reload":
            var a = Arguments(request)
            do throws(CommandError) {
                _ = try a.string("cmd")
                try a.finish()
                switch cmd {
                case "metrics": result = .success(["format": "prometheus-text-0.0.4", "text": .string(await renderMetrics())])
                case "health": result = .success(await health())
                default: result = await reload(trigger: "command")
                }
            } catch {
                result = .failure(error)
            }
        default:
            let d = dispatcher
            do throws(CommandError) { result = .success(try await d.handle(request)) } catch { result = .failure(error) }
        }
        // Label sets rendered once per command (two per request were rendered here before).
        let labels = Self.commandLabels[cmd] ?? Self.unknownCommandLabels
        let outcomeLabels: String
        switch result {
        case .success: outcomeLabels = Self.commandOKLabels[cmd] ?? labels + ",outcome=\"ok\""
        // Error codes are lower-case words: nothing to escape.
        case .failure(let e): outcomeLabels = labels + ",outcome=\"" + e.code.rawValue + "\""
        }
        Metrics.shared.inc(.requests, renderedLabels: outcomeLabels)
        Metrics.shared.observe(.requestDuration, renderedLabels: labels, seconds: Double(monotonicNanos() - start) / 1e9)
        return try result.get()
    }

    // MARK: metrics

    /// The exposition text with the gauges read now.
    public func renderMetrics() async -> String {
        var gauges: [Metrics.Sample] = [
            .init(.socketConnections, [], Double(connectionCount())),
            .init(.pending, [], Double(dispatcher.pending.load(ordering: .relaxed))),
        ]
        if let stats = try? await registry.stats() {
            for row in stats.rows {
                gauges.append(.init(.registryDevices, [("app", row.app), ("platform", row.platform.rawValue), ("active", row.active ? "true" : "false")],
                                    Double(row.count)))
            }
        }
        if let outbox = dispatcher.outbox, let depth = try? await outbox.store.depth() {
            gauges.append(.init(.outboxQueued, [], Double(depth.queued)))
            gauges.append(.init(.outboxJobs, [], Double(depth.liveJobs)))
            let age = depth.oldestQueuedAt.map { max(0, Double(nowMillis() - $0) / 1000) } ?? 0
            gauges.append(.init(.outboxOldestAge, [], age))
        }
        if let log = dispatcher.eventLog {
            gauges.append(.init(.eventsWaiting, [], Double(log.eventSignal.waiting)))
        }
        if let t = transport {
            let s = t.stats
            gauges.append(.init(.transportRetries, [], Double(s.retries)))
            for (kind, n) in [("early_answer", s.earlyAnswers), ("nudged", s.nudged), ("restarted", s.restarted), ("expired", s.expiredInFlight)] {
                gauges.append(.init(.transportRecoveries, [("kind", kind)], Double(n)))
            }
            gauges.append(.init(.providerConnections, [], Double(s.connectionsOpened)))
            let open = t.openConnections
            for (origin, n) in open.connections.sorted(by: { $0.key < $1.key }) {
                gauges.append(.init(.providerOpenConnections, [("origin", origin)], Double(n)))
            }
            for (origin, n) in open.streams.sorted(by: { $0.key < $1.key }) {
                gauges.append(.init(.providerStreams, [("origin", origin)], Double(n)))
            }
        }
        return Metrics.shared.render(gauges: gauges)
    }

    // MARK: health

    /// Database reachable and writable, and each configured provider's recent history.
    public func health() async -> JSONObject {
        var healthy = true
        let start = monotonicNanos()
        var db: JSONObject
        do throws(CommandError) {
            try await registry.probeWritable()
            db = ["ok": true, "latency_ms": .double(Double(monotonicNanos() - start) / 1e6)]
        } catch {
            healthy = false
            db = ["ok": false, "error": .string(error.message)]
        }
        var list: [JSONValue] = []
        let open = transport?.openConnections.connections ?? [:]
        let keys = dispatcher.providers.providers.keys.sorted { ($0.app, $0.platform.rawValue) < ($1.app, $1.platform.rawValue) }
        for k in keys {
            let e = ProviderHealth.shared.entry(app: k.app, platform: k.platform)
            let ok = e.consecutiveFailures < ProviderHealth.unhealthyAfter
            if !ok { healthy = false }
            list.append(.object([
                "app": .string(k.app), "platform": .string(k.platform.rawValue), "healthy": .bool(ok),
                "last_success": e.lastSuccessMs.map { .int($0) } ?? .null,
                "last_failure": e.lastFailureMs.map { .int($0) } ?? .null,
                "last_failure_reason": e.lastFailureReason.map { .string($0) } ?? .null,
                "consecutive_failures": .int(Int64(e.consecutiveFailures)),
                "in_flight": .int(Int64(e.inFlight)),
                "open_connections": ProviderHealth.openConnections(dispatcher.providers.providers[k], open),
            ]))
        }
        return [
            "healthy": .bool(healthy), "database": .object(db), "providers": .array(list),
            "socket_connections": .int(Int64(connectionCount())),
        ]
    }

    // MARK: reload

    /// Re-reads the config and swaps in a new dispatcher; a config with any error is refused
    /// whole and the running one stays. `trigger` is `SIGHUP` or `command` (for the log).
    public func reload(trigger: String) async -> Result<JSONObject, CommandError> {
        guard !reloading.exchange(true, ordering: .acquiringAndReleasing) else {
            return .failure(CommandError(.busy, "a reload is already under way", details: ["retry_after_ms": 100]))
        }
        defer { reloading.store(false, ordering: .releasing) }
        notifier.reloading(status: "reloading the config (\(trigger))")
        let result = apply()
        switch result {
        case .success(let r):
            Metrics.shared.inc(.reloads, ["outcome": "ok"])
            notifier.send(["READY=1", "STATUS=serving; config reloaded (generation \(r["generation"]?.intValue ?? 0))"])
        case .failure(let e):
            Metrics.shared.inc(.reloads, ["outcome": "error"])
            logger.error("config reload refused; the running config stays", metadata: ["trigger": "\(trigger)", "error": "\(e.message)"])
            notifier.send(["READY=1", "STATUS=serving; last reload refused: \(e.message)"])
        }
        return result
    }

    private func apply() -> Result<JSONObject, CommandError> {
        guard source.configPath != nil else {
            return .failure(CommandError(.invalidArgument, "the daemon was started without a config file (--config or PUSHLINE_CONFIG): there is nothing to re-read",
                                         details: ["field": "config"]))
        }
        let new: PushlineConfig
        do throws(ConfigError) { new = try source.load() } catch {
            return .failure(CommandError(.invalidArgument, "config refused, the running one stays: \(error.description)",
                                         details: ["field": "config", "key": .string(error.path)]))
        }
        let (old, oldTransport, generation) = live.withLock { ($0.dispatcher, $0.transport, $0.generation) }
        var transport = oldTransport
        var createdTransport = false
        let needsTransport = new.apps.values.contains { !$0.connectionConfigs.isEmpty }
        if needsTransport && transport == nil {
            transport = HTTPTransport(options: new.transportOptions)
            createdTransport = true
        }
        var providers = ProviderSet()
        if let transport, needsTransport {
            do throws(ConfigError) {
                providers = try ProviderSet(config: new, context: ProviderContext(transport: transport, store: registry, logger: logger))
            } catch {
                if createdTransport { transport.shutdown() }
                return .failure(CommandError(.invalidArgument, "config refused, the running one stays: \(error.description)",
                                             details: ["field": "config", "key": .string(error.path)]))
            }
        }
        let changes = Self.describeChanges(old: old, new: new, newProviders: providers)
        let restartNeeded = Self.restartOnly(old: old.config, new: new)
        let dispatcher = Dispatcher(config: new, registry: registry, providers: providers, logger: logger,
                                    connectionCount: connectionCount, startedAt: old.startedAt, outbox: old.outbox)
        // `stats` counts since the daemon started, not since the reload.
        dispatcher.sentCount.add(old.sentCount.load(ordering: .relaxed), ordering: .relaxed)
        dispatcher.failedCount.add(old.failedCount.load(ordering: .relaxed), ordering: .relaxed)
        live.withLock { l in
            l.dispatcher = dispatcher
            l.transport = transport
            l.generation = generation + 1
        }
        logger.info("config reloaded", metadata: [
            "generation": "\(generation + 1)", "added": "\(changes.added.joined(separator: ","))",
            "removed": "\(changes.removed.joined(separator: ","))", "kept": "\(changes.kept.joined(separator: ","))",
        ])
        if !restartNeeded.isEmpty {
            logger.warning("config reload: these settings only change with a restart", metadata: ["keys": "\(restartNeeded.joined(separator: ","))"])
        }
        return .success([
            "reloaded": true, "generation": .int(Int64(generation + 1)),
            "providers": .array(providers.providers.keys.map { "\($0.app)/\($0.platform.rawValue)" }.sorted().map { .string($0) }),
            "added": .array(changes.added.map { .string($0) }), "removed": .array(changes.removed.map { .string($0) }),
            "restart_needed": .array(restartNeeded.map { .string($0) }),
        ])
    }

    static func describeChanges(old: Dispatcher, new: PushlineConfig, newProviders: ProviderSet)
        -> (added: [String], removed: [String], kept: [String])
    {
        let before = Set(old.providers.providers.keys.map { "\($0.app)/\($0.platform.rawValue)" })
        let after = Set(newProviders.providers.keys.map { "\($0.app)/\($0.platform.rawValue)" })
        return (after.subtracting(before).sorted(), before.subtracting(after).sorted(), after.intersection(before).sorted())
    }

    /// Settings a reload reads but cannot apply to a running daemon.
    static func restartOnly(old: PushlineConfig, new: PushlineConfig) -> [String] {
        var out: [String] = []
        if old.socket != new.socket { out.append("socket") }
        if old.socketMode != new.socketMode { out.append("socket_mode") }
        if old.database != new.database { out.append("database") }
        if old.databasePool != new.databasePool { out.append("database_pool") }
        if old.maxLineBytes != new.maxLineBytes { out.append("max_line_bytes") }
        if old.maxStreamsPerConnection != new.maxStreamsPerConnection { out.append("max_streams_per_connection") }
        if old.logLevel != new.logLevel { out.append("log_level") }
        if old.logFormat != new.logFormat { out.append("log_format") }
        if old.metricsListen != new.metricsListen { out.append("metrics_listen") }
        if old.leaseMs != new.leaseMs { out.append("lease_ms") }
        if old.shutdownTimeoutMs != new.shutdownTimeoutMs { out.append("shutdown_timeout_ms") }
        if old.databaseMaxPages != new.databaseMaxPages { out.append("database_max_pages") }
        return out
    }
}
