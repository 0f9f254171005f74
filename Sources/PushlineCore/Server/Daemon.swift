import CPushlineShims
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Starts everything `pushline serve` runs and tears it down in order.
///
/// ```swift
/// let code = Daemon.run(config: config)   // blocks until SIGTERM/SIGINT
/// ```
public enum Daemon {
    /// Runs the daemon; returns the process exit code.
    public static func run(config: PushlineConfig, source: DaemonHandler.Source = DaemonHandler.Source(configPath: nil)) -> Int32 {
        let logger = Logger(label: "pushline")
        pl_ignore_sigpipe()
        // Until the server's handlers are in place, SIGTERM/SIGINT wait (every thread
        // started from here on inherits the mask; only this thread unblocks them).
        pl_block_term_signals()
        // Few malloc arenas, so burst memory of many threads is reused rather than stranded,
        // but not fewer than the threads that allocate on the send path (two transport loops,
        // two concurrency threads): with 2, those threads queued on the arena locks (futex
        // waits were 15% of a 100k bulk's profile) and the bulk ran at 25k/s instead of 30k/s.
        pl_malloc_arena_max(4)
        let notifier = SystemdNotifier(logger: logger)
        let activation: SocketActivation?
        do {
            activation = try SocketActivation.take()
        } catch {
            logger.critical("socket activation failed", metadata: ["error": "\(error.message)"])
            return 1
        }
        let location: DatabaseLocation
        do {
            location = try DatabaseLocation(config.database)
        } catch {
            logger.critical("invalid database", metadata: ["error": "\(error)"])
            return 1
        }
        let dirs = (activation == nil ? [config.socket] : []) + (location.sqlitePath.map { [$0] } ?? [])
        for path in dirs {
            if let failure = makeParentDirectories(of: path) {
                logger.critical("cannot create directory", metadata: ["path": "\(failure.path)", "error": "\(failure.error)"])
                return 1
            }
        }
        let registry: any DeviceRegistry
        do {
            registry = try location.open(poolSize: config.databasePool, pollMs: config.pollMs, logger: logger)
        } catch {
            logger.critical("cannot open database", metadata: ["database": "\(location.description)", "error": "\(error.message)"])
            return 1
        }
        // No provider block, no transport: libcurl and OpenSSL stay unloaded on the embedded default.
        let needsTransport = config.apps.values.contains { !$0.connectionConfigs.isEmpty }
        let transport: HTTPTransport? = needsTransport ? HTTPTransport(options: config.transportOptions) : nil
        var providers = ProviderSet()
        if let transport {
            do {
                providers = try ProviderSet(config: config, context: ProviderContext(transport: transport, store: registry, logger: logger))
            } catch {
                logger.critical("invalid provider configuration", metadata: ["error": "\(error)"])
                transport.shutdown()
                registry.close()
                return 1
            }
        }
        // The outbox and the events feed live in the registry's database: SQLite's file, or the
        // PostgreSQL database a fleet of daemons shares.
        let sqlite = registry as? SQLiteRegistry
        let postgres = registry as? PostgresRegistry
        if let pages = config.databaseMaxPages {
            guard let sqlite else {
                logger.critical("database_max_pages only applies to a SQLite database")
                registry.close()
                return 1
            }
            do throws(CommandError) { try await_(sqlite, pages) } catch {
                logger.critical("cannot set database_max_pages", metadata: ["error": "\(error.message)"])
                return 1
            }
        }
        let holder = ConnectionCounter()
        var outbox = sqlite.map { OutboxContext(store: SQLiteOutbox(registry: $0)) }
        var pgOutbox: PostgresOutbox?
        if let postgres {
            // This daemon in the fleet: its host and socket (a restart of it takes back its own leases at once).
            var host = [CChar](repeating: 0, count: 256)
            _ = gethostname(&host, host.count - 1)
            let instance = String(cString: host) + ":" + (activation?.socketPath ?? config.socket)
            let store = PostgresOutbox(registry: postgres, instance: instance, logger: logger)
            let context = OutboxContext(store: store)
            // Another daemon's commit (NOTIFY pushline_outbox) or the poll_ms tick wakes this one's worker.
            postgres.onOutboxWork { context.wake() }
            pgOutbox = store
            outbox = context
        }
        let dispatcher = Dispatcher(config: config, registry: registry, providers: providers, logger: logger,
                                    connectionCount: { holder.count() }, outbox: outbox)
        let handler = DaemonHandler(dispatcher: dispatcher, registry: registry, transport: transport, source: source, notifier: notifier,
                                    logger: logger, connectionCount: { holder.count() })
        var metricsServer: MetricsServer?
        if config.metricsListen != nil || activation?.metricsFD != nil {
            do {
                metricsServer = try MetricsServer(listen: config.metricsListen ?? "", inheritedFD: activation?.metricsFD, logger: logger) {
                    await handler.renderMetrics()
                }
            } catch {
                logger.critical("cannot serve metrics", metadata: ["error": "\(error.message)"])
                transport?.shutdown()
                registry.close()
                return 1
            }
        }
        let server: Server
        do {
            server = try Server(path: activation?.socketPath ?? config.socket, mode: config.socketMode,
                                maxLineBytes: config.maxLineBytes, limits: config.serverLimits, access: config.access,
                                handler: handler, logger: logger, inheritedFD: activation?.socketFD)
        } catch {
            logger.critical("cannot start server", metadata: ["error": "\(error.message)"])
            metricsServer?.stop()
            transport?.shutdown()
            registry.close()
            return 1
        }
        holder.server = server
        if let activation, activation.socketPath != config.socket {
            logger.notice("serving the socket systemd passed in, not the config's", metadata: [
                "socket": "\(activation.socketPath)", "config_socket": "\(config.socket)"])
        }
        let worker = outbox.map { OutboxWorker(context: $0, dispatcher: { handler.dispatcher }, logger: logger, leaseMs: config.leaseMs) }
        let eventLog = registry as? any EventLog
        server.onStopping = { pending in
            // Waiting `events` calls answer now (with what is there) instead of at their wait_ms.
            eventLog?.eventSignal.close()
            // SIGTERM: the outbox stops claiming; what is on the wire finishes below.
            worker?.beginStop()
            notifier.stopping(status: "stopping: finishing \(pending) in-flight requests")
        }
        server.onHangup = {
            logger.info("SIGHUP: reloading the config", metadata: ["config": "\(source.configPath ?? "(embedded default)")"])
            Task { _ = await handler.reload(trigger: "SIGHUP") }
        }
        server.installSignalHandlers()
        pl_unblock_term_signals()
        let watchdog = Watchdog()
        watchdog?.start(notifier: notifier, logger: logger, postToLoop: { body in server.onLoop(body) },
                        probeDatabase: {
                            do throws(CommandError) {
                                try await registry.probeWritable()
                                return true
                            } catch { return false }
                        })
        let configured = providers.providers.keys.map { "\($0.app)/\($0.platform.rawValue)" }.sorted().joined(separator: ",")
        logger.info("ready", metadata: [
            "version": "\(PushlineVersion.daemon)", "database": "\(location.description)",
            "providers": "\(configured.isEmpty ? "none" : configured)", "pid": "\(getpid())",
        ])
        metricsServer?.start()
        let eventPruner = eventLog.map { EventPruner.start(log: $0, logger: logger) { handler.dispatcher.config.eventRetentionSeconds } }
        pgOutbox?.start()
        worker?.start()
        notifier.ready(status: "serving \(server.path), providers: \(configured.isEmpty ? "none" : configured)")
        server.run()
        eventPruner?.cancel()
        if let worker, !worker.waitStopped(timeoutMs: config.shutdownTimeoutMs) {
            logger.warning("outbox deliveries still in flight at shutdown_timeout_ms; their leases are taken over at the next start",
                           metadata: ["shutdown_timeout_ms": "\(config.shutdownTimeoutMs)"])
        }
        pgOutbox?.stop()
        watchdog?.stop()
        metricsServer?.stop()
        handler.transport?.shutdown()
        registry.close()
        notifier.status("stopped cleanly")
        logger.info("stopped cleanly")
        return 0
    }

    /// Sets SQLite's `max_page_count` from a non-async context (startup, before serving).
    static func await_(_ registry: SQLiteRegistry, _ pages: Int) throws(CommandError) {
        let done = Atomic<Int>(0)
        let failure = Mutex<CommandError?>(nil)
        Task.detached {
            do throws(CommandError) { try await registry.setMaxPageCount(pages) } catch { failure.withLock { $0 = error } }
            done.store(1, ordering: .releasing)
        }
        while done.load(ordering: .acquiring) == 0 { usleep(1000) }
        if let e = failure.withLock({ $0 }) { throw e }
    }

    /// Creates the missing parent directories of `path` (as `mkdir -p`), each with mode
    /// 0750 and owned by the daemon's user; returns the directory that could not be made.
    static func makeParentDirectories(of path: String) -> (path: String, error: String)? {
        let dir = parentDirectory(path)
        guard !dir.isEmpty, access(dir, F_OK) != 0 else { return nil }
        if let failure = makeParentDirectories(of: dir) { return failure }
        if mkdir(dir, 0o750) == 0 {
            // mkdir applies the umask; the mode is meant as given.
            _ = chmod(dir, 0o750)
        } else if pl_errno() != EEXIST {
            return (dir, String(cString: strerror(pl_errno())))
        }
        return nil
    }

    static func parentDirectory(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[..<slash])
    }
}

/// Lets `stats` read the server's connection count without a reference cycle at construction.
final class ConnectionCounter: @unchecked Sendable {
    // Written once before the server runs, read afterwards: no concurrent write.
    var server: Server?
    func count() -> Int { server?.activeConnections.load(ordering: .relaxed) ?? 0 }
}

/// Deletes `events` older than `event_retention`, at start and then every quarter of the
/// retention (at least every second, at most every 10 minutes); the retention is read each
/// round, so a reload changes it.
enum EventPruner {
    static func period(retentionSeconds: Int64) -> Duration {
        .seconds(min(max(retentionSeconds / 4, 1), 600))
    }

    static func start(log: any EventLog, logger: Logger, retention: @escaping @Sendable () -> Int64) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                let seconds = retention()
                do throws(CommandError) {
                    let n = try await log.pruneEvents(before: nowMillis() - seconds * 1000)
                    if n > 0 { logger.info("events pruned", metadata: ["count": "\(n)", "retention_s": "\(seconds)"]) }
                } catch {
                    if error.code != .shuttingDown { logger.error("events: pruning failed", metadata: ["error": "\(error.message)"]) }
                }
                do { try await Task.sleep(for: period(retentionSeconds: seconds)) } catch { return }
            }
        }
    }
}
