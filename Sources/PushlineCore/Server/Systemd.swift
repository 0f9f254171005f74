import CPushlineShims
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The sd_notify(3) protocol, spoken directly: one datagram of `KEY=value` lines to the
/// socket named by `$NOTIFY_SOCKET` (no libsystemd). Without `$NOTIFY_SOCKET` every call
/// does nothing, so the daemon runs the same outside systemd.
///
/// ```swift
/// let notifier = SystemdNotifier()
/// notifier.send(["READY=1", "STATUS=serving"])
/// ```
public struct SystemdNotifier: Sendable {
    public let socketPath: String?
    let logger: Logger

    public init(logger: Logger, environment: [String: String] = SystemdNotifier.environment()) {
        self.logger = logger
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    public var enabled: Bool { socketPath != nil }

    /// Sends the fields as one message. A failure is logged at debug, never fatal: the
    /// service manager may be gone while the daemon still serves.
    public func send(_ fields: [String]) {
        guard let socketPath else { return }
        let msg = fields.joined(separator: "\n")
        let r = pl_sd_notify(socketPath, msg)
        if r != 0 {
            logger.debug("sd_notify failed", metadata: ["socket": "\(socketPath)", "error": "\(String(cString: strerror(-r)))"])
        }
    }

    public func ready(status: String) { send(["READY=1", "STATUS=\(status)", "MAINPID=\(getpid())"]) }
    public func status(_ s: String) { send(["STATUS=\(s)"]) }
    /// `RELOADING=1` with the CLOCK_MONOTONIC time in µs, as systemd's notify-reload expects.
    public func reloading(status: String) {
        send(["RELOADING=1", "MONOTONIC_USEC=\(monotonicNanos() / 1000)", "STATUS=\(status)"])
    }
    public func stopping(status: String) { send(["STOPPING=1", "STATUS=\(status)"]) }
    public func watchdog() { send(["WATCHDOG=1"]) }

    /// The variables the systemd protocols read.
    public static func environment() -> [String: String] {
        var out: [String: String] = [:]
        for name in ["NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            if let v = getenv(name) { out[name] = String(cString: v) }
        }
        return out
    }
}

/// Socket activation (sd_listen_fds(3)): descriptors from fd 3 on, counted by `LISTEN_FDS`,
/// meant for this process when `LISTEN_PID` is its pid, named by `LISTEN_FDNAMES`.
public struct SocketActivation: Sendable {
    /// The listening Unix socket for the protocol, and the path it is bound to.
    public var socketFD: Int32
    public var socketPath: String
    /// A listening socket named `metrics` (TCP or Unix), if systemd passed one.
    public var metricsFD: Int32?

    /// The activated sockets, or nil when none were passed to this process. Throws when
    /// `LISTEN_FDS` is meant for this process but holds no listening Unix stream socket.
    /// The variables are removed from the environment, as sd_listen_fds(1) does.
    public static func take(environment: [String: String] = SystemdNotifier.environment()) throws(CommandError) -> SocketActivation? {
        guard let pidText = environment["LISTEN_PID"], let countText = environment["LISTEN_FDS"] else { return nil }
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pid = Int32(pidText), pid == getpid() else { return nil }
        guard let count = Int32(countText), count >= 1, count <= 64 else {
            throw CommandError(.internalError, "LISTEN_FDS is '\(countText)': expected a count of passed descriptors (1-64)")
        }
        let names = (environment["LISTEN_FDNAMES"] ?? "").split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        var main: Int32?
        var firstUnix: Int32?
        var metrics: Int32?
        for i in 0..<count {
            let fd = pl_listen_fds_start() + i
            let name = Int(i) < names.count ? names[Int(i)] : ""
            let isUnix = pl_is_unix_stream_listener(fd) == 1
            if name == "metrics" && (isUnix || pl_is_inet_stream_listener(fd) == 1) {
                metrics = fd
            } else if isUnix && name == "pushline" {
                main = fd
            } else if isUnix && firstUnix == nil {
                firstUnix = fd
            }
        }
        guard let fd = main ?? firstUnix else {
            throw CommandError(.internalError, "systemd passed \(count) descriptor(s) (LISTEN_FDS) but none is a listening Unix stream socket")
        }
        for f in [fd, metrics].compactMap({ $0 }) {
            let r = pl_adopt_fd(f)
            guard r == 0 else {
                throw CommandError(.internalError, "cannot set up passed descriptor \(f): \(String(cString: strerror(-r)))")
            }
        }
        var buf = [CChar](repeating: 0, count: 120)
        let n = pl_unix_socket_path(fd, &buf, Int32(buf.count))
        let path = n > 0 ? String(decoding: buf[0..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "(unnamed)"
        return SocketActivation(socketFD: fd, socketPath: path, metricsFD: metrics)
    }
}

/// Sends `WATCHDOG=1` every half of `$WATCHDOG_USEC`, but only while the event loop and
/// the database make progress: each period it posts a job to the server's loop and a
/// small write to the database, and pets the watchdog only when both came back since the
/// last period. A stuck loop or database lets systemd's watchdog fire.
public final class Watchdog: Sendable {
    public let interval: UInt64
    private let loopBeat = Atomic<UInt64>(0)
    private let dbBeat = Atomic<UInt64>(0)
    private let dbBusy = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)

    /// Nil when `$WATCHDOG_USEC` is unset or meant for another process (`$WATCHDOG_PID`).
    public init?(environment: [String: String] = SystemdNotifier.environment()) {
        guard let usecText = environment["WATCHDOG_USEC"], let usec = UInt64(usecText), usec > 0 else { return nil }
        if let pidText = environment["WATCHDOG_PID"], Int32(pidText) != getpid() { return nil }
        interval = usec * 1000 / 2
    }

    /// Starts the periodic check. `postToLoop` runs a closure on the server's event loop;
    /// `probeDatabase` writes to the database and returns whether it succeeded.
    public func start(notifier: SystemdNotifier, logger: Logger,
                      postToLoop: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void,
                      probeDatabase: @escaping @Sendable () async -> Bool) {
        let interval = self.interval
        Task.detached { [self] in
            var lastLoop = loopBeat.load(ordering: .acquiring)
            var lastDB = dbBeat.load(ordering: .acquiring)
            var warned = false
            while !stopped.load(ordering: .acquiring) {
                postToLoop { [self] in _ = loopBeat.add(1, ordering: .releasing) }
                if !dbBusy.exchange(true, ordering: .acquiringAndReleasing) {
                    Task.detached { [self] in
                        if await probeDatabase() { _ = dbBeat.add(1, ordering: .releasing) }
                        dbBusy.store(false, ordering: .releasing)
                    }
                }
                try? await Task.sleep(nanoseconds: interval)
                if stopped.load(ordering: .acquiring) { break }
                let l = loopBeat.load(ordering: .acquiring)
                let d = dbBeat.load(ordering: .acquiring)
                if l != lastLoop && d != lastDB {
                    notifier.watchdog()
                    if warned {
                        logger.notice("watchdog: event loop and database make progress again")
                        warned = false
                    }
                } else if !warned {
                    logger.warning("watchdog: no progress, not notifying systemd",
                                   metadata: ["event_loop": "\(l != lastLoop ? "ok" : "stuck")", "database": "\(d != lastDB ? "ok" : "stuck")"])
                    warned = true
                }
                lastLoop = l
                lastDB = d
            }
        }
    }

    public func stop() { stopped.store(true, ordering: .releasing) }
}
