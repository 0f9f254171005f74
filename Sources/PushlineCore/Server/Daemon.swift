import CPushlineShims
import Logging

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
    public static func run(config: PushlineConfig) -> Int32 {
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
        for path in [config.socket, config.database] {
            let dir = parentDirectory(path)
            if !dir.isEmpty && access(dir, F_OK) != 0 && mkdir(dir, 0o750) != 0 {
                logger.critical("cannot create directory", metadata: ["path": "\(dir)", "error": "\(String(cString: strerror(pl_errno())))"])
                return 1
            }
        }
        let registry: Registry
        do {
            registry = try Registry(path: config.database, logger: logger)
        } catch {
            logger.critical("cannot open database", metadata: ["error": "\(error.message)"])
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
        let holder = ConnectionCounter()
        let dispatcher = Dispatcher(config: config, registry: registry, providers: providers, logger: logger,
                                    connectionCount: { holder.count() })
        let server: Server
        do {
            server = try Server(path: config.socket, mode: config.socketMode, maxLineBytes: config.maxLineBytes,
                                limits: config.serverLimits, access: config.access, handler: dispatcher, logger: logger)
        } catch {
            logger.critical("cannot start server", metadata: ["error": "\(error.message)"])
            registry.close()
            return 1
        }
        holder.server = server
        server.installSignalHandlers()
        pl_unblock_term_signals()
        let configured = providers.providers.keys.map { "\($0.app)/\($0.platform.rawValue)" }.sorted().joined(separator: ",")
        logger.info("ready", metadata: [
            "version": "\(PushlineVersion.daemon)", "database": "\(config.database)",
            "providers": "\(configured.isEmpty ? "none" : configured)", "pid": "\(getpid())",
        ])
        server.run()
        transport?.shutdown()
        registry.close()
        logger.info("stopped cleanly")
        return 0
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
