import CPushlineShims
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `metrics_listen`: a minimal HTTP/1.1 endpoint for Prometheus. `GET /metrics` answers the
/// exposition text (`text/plain; version=0.0.4`), anything else 404 or 405; one request per
/// connection (`Connection: close`), as Prometheus scrapes. It runs on its own thread with
/// blocking sockets and 5-second timeouts, so a stuck scraper never touches the event loop.
///
/// ```swift
/// let m = try MetricsServer(listen: "127.0.0.1:9464", logger: log) { await renderMetrics() }
/// m.start()
/// m.stop()
/// ```
public final class MetricsServer: Sendable {
    public let address: String
    private let fd: Int32
    private let unixPath: String?
    private let render: @Sendable () async -> String
    private let logger: Logger
    private let thread = Mutex<TransportThread?>(nil)
    private let stopped = Atomic<Bool>(false)

    /// Listens on `listen`: `host:port` (numeric IPv4, `[IPv6]`, or `localhost`) or a Unix
    /// socket path (starting with `/` or `.`). `inheritedFD` (socket activation) is used as is.
    public init(listen: String, inheritedFD: Int32? = nil, logger: Logger,
                render: @escaping @Sendable () async -> String) throws(CommandError) {
        self.logger = logger
        self.render = render
        if let inheritedFD {
            fd = inheritedFD
            unixPath = nil
            _ = pl_set_blocking(inheritedFD)
            address = "(socket activation)"
            return
        }
        switch MetricsListen.parse(listen) {
        case .failure(let e):
            throw CommandError(.internalError, "metrics_listen: \(e.message)")
        case .success(.unix(let path)):
            var st = stat()
            if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(path) }
            let f = pl_unix_listen(path, 64)
            guard f >= 0 else {
                throw CommandError(.internalError, "cannot listen for metrics on '\(path)': \(String(cString: strerror(pl_errno())))")
            }
            _ = pl_set_blocking(f)
            fd = f
            unixPath = path
            address = path
        case .success(.tcp(let host, let port)):
            let f = pl_tcp_listen(host, Int32(port), 64)
            guard f >= 0 else {
                throw CommandError(.internalError, "cannot listen for metrics on \(listen): \(String(cString: strerror(-f)))")
            }
            fd = f
            unixPath = nil
            let bound = pl_local_port(f)
            address = host.contains(":") ? "[\(host)]:\(bound)" : "\(host):\(bound)"
        }
    }

    deinit { stop() }

    public func start() {
        let fd = self.fd
        let logger = self.logger
        let render = self.render
        do throws(TransportError) {
            let t = try TransportThread(name: "pl-metrics") { [self] in
                while !self.stopped.load(ordering: .acquiring) {
                    let c = pl_accept_blocking(fd)
                    if c < 0 {
                        if self.stopped.load(ordering: .acquiring) { break }
                        let e = pl_errno()
                        if e == EMFILE || e == ENFILE || e == ENOMEM { usleep(100_000) }
                        continue
                    }
                    MetricsServer.serve(c, render: render)
                    close(c)
                }
            }
            thread.withLock { $0 = t }
            logger.info("metrics listening", metadata: ["address": "\(address)"])
        } catch {
            logger.error("cannot start the metrics thread", metadata: ["error": "\(error.message)"])
        }
    }

    /// Stops accepting and joins the thread; removes a Unix socket it created.
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = pl_shutdown(fd)
        if let t = thread.withLock({ t in let x = t; t = nil; return x }) { t.join() }
        close(fd)
        if let unixPath { unlink(unixPath) }
    }

    /// Reads one request head (up to 16 KB), answers it.
    static func serve(_ c: Int32, render: @escaping @Sendable () async -> String) {
        _ = pl_set_socket_timeouts(c, 5000)
        var head: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while head.count < 16384 {
            let n = buf.withUnsafeMutableBytes { pl_read(c, $0.baseAddress, 4096) }
            if n <= 0 { return }
            head.append(contentsOf: buf[0..<n])
            if Self.headEnd(head) != nil { break }
        }
        guard let lineEnd = head.firstIndex(of: 0x0D) ?? head.firstIndex(of: 0x0A) else { return }
        let requestLine = String(decoding: head[..<lineEnd], as: UTF8.self).split(separator: " ")
        guard requestLine.count >= 2 else {
            respond(c, status: "400 Bad Request", body: "bad request\n")
            return
        }
        let method = requestLine[0]
        let target = requestLine[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard target == "/metrics" else {
            respond(c, status: "404 Not Found", body: "only /metrics is served here\n")
            return
        }
        guard method == "GET" || method == "HEAD" else {
            respond(c, status: "405 Method Not Allowed", body: "use GET\n", extra: "Allow: GET, HEAD\r\n")
            return
        }
        let text = BlockingBox.run(render)
        respond(c, status: "200 OK", body: text, contentType: "text/plain; version=0.0.4; charset=utf-8", headOnly: method == "HEAD")
    }

    static func headEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 0x0D && b[i + 1] == 0x0A && b[i + 2] == 0x0D && b[i + 3] == 0x0A { return i }
        for i in 0...(b.count - 2) where b[i] == 0x0A && b[i + 1] == 0x0A { return i }
        return nil
    }

    static func respond(_ c: Int32, status: String, body: String, contentType: String = "text/plain; charset=utf-8",
                        extra: String = "", headOnly: Bool = false) {
        let bytes = Array(body.utf8)
        var out = Array("HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bytes.count)\r\n\(extra)Connection: close\r\n\r\n".utf8)
        if !headOnly { out += bytes }
        writeAll(c, out)
    }
}

/// Runs an async function from a plain thread and waits for its result (the metrics thread
/// is not part of Swift concurrency; rendering reads the registry, which is async).
enum BlockingBox {
    final class Box: @unchecked Sendable {
        // Guarded by `lock` and `cond`.
        var value: String?
        var lock = pthread_mutex_t()
        var cond = pthread_cond_t()
        init() {
            pthread_mutex_init(&lock, nil)
            pthread_cond_init(&cond, nil)
        }
        deinit {
            pthread_cond_destroy(&cond)
            pthread_mutex_destroy(&lock)
        }
    }

    static func run(_ body: @escaping @Sendable () async -> String) -> String {
        let box = Box()
        Task {
            let v = await body()
            pthread_mutex_lock(&box.lock)
            box.value = v
            pthread_cond_signal(&box.cond)
            pthread_mutex_unlock(&box.lock)
        }
        pthread_mutex_lock(&box.lock)
        while box.value == nil { pthread_cond_wait(&box.cond, &box.lock) }
        let v = box.value ?? ""
        pthread_mutex_unlock(&box.lock)
        return v
    }
}

/// A parsed `metrics_listen` value.
public enum MetricsListen: Sendable, Equatable {
    case tcp(host: String, port: Int)
    case unix(path: String)

    public static func parse(_ s: String) -> Result<MetricsListen, ConfigError> {
        if s.hasPrefix("/") || s.hasPrefix(".") {
            guard s.utf8.count < 108 else { return .failure(ConfigError("metrics_listen", "a Unix socket path is at most 107 bytes")) }
            return .success(.unix(path: s))
        }
        var host: Substring
        var portText: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]"), s[s.index(after: close)...].hasPrefix(":") else {
                return .failure(ConfigError("metrics_listen", "expected [IPv6]:port, got \"\(s)\""))
            }
            host = s[s.index(after: s.startIndex)..<close]
            portText = s[s.index(close, offsetBy: 2)...]
        } else {
            guard let colon = s.lastIndex(of: ":") else {
                return .failure(ConfigError("metrics_listen", "expected host:port (such as 127.0.0.1:9464) or a Unix socket path, got \"\(s)\""))
            }
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
        }
        if host == "localhost" { host = "127.0.0.1" }
        guard let port = Int(portText), (0...65535).contains(port) else {
            return .failure(ConfigError("metrics_listen", "port must be 0-65535, got \"\(portText)\""))
        }
        let isV4 = host.split(separator: ".", omittingEmptySubsequences: false).count == 4
            && host.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { UInt8($0) != nil }
        let isV6 = host.contains(":") && host.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        guard isV4 || isV6 else {
            return .failure(ConfigError("metrics_listen", "host must be a numeric IPv4 or IPv6 address or localhost, got \"\(host)\""))
        }
        return .success(.tcp(host: String(host), port: port))
    }
}
