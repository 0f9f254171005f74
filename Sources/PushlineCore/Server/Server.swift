import CPushlineShims
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Handles one parsed request off the event loop and returns its response members
/// (without `id`); a thrown `CommandError` becomes an `ok: false` response.
public protocol RequestHandler: Sendable {
    func handle(_ request: JSONObject) async throws(CommandError) -> JSONObject
}

/// epoll event bits (macros in <sys/epoll.h>, not imported by Swift's Glibc).
private enum Ev {
    static let `in`: UInt32 = 0x001
    static let out: UInt32 = 0x004
    static let err: UInt32 = 0x008
    static let hup: UInt32 = 0x010
    static let rdhup: UInt32 = 0x2000
}

/// The Unix-socket server: one epoll thread owns every connection, frames lines,
/// answers `ping` inline, hands other requests to the `RequestHandler` as tasks and
/// writes responses back in request order.
///
/// ```swift
/// let server = try Server(path: "./var/pushline.sock", mode: 0o660, maxLineBytes: 1 << 20, handler: dispatcher, logger: log)
/// server.run()   // blocks until SIGTERM/SIGINT and every in-flight request is answered
/// ```
///
/// Thread confinement: everything but `post(_:)` and `requestStop()` runs on the
/// thread that called `run()`; those two only touch the Mutex-protected inbox and
/// the eventfd. That is why the class can be `@unchecked Sendable`.
public final class Server: @unchecked Sendable {
    final class Connection {
        let id: UInt64
        let fd: Int32
        var readBuffer: [UInt8] = []
        /// Bytes to write, in order; `writeOffset` is how much of the first segment is written.
        /// Small responses are appended to the last segment (one write for many pipelined
        /// answers); large ones (a bulk's results) are queued as they are, never copied.
        var writeQueue: [[UInt8]] = []
        var writeOffset = 0
        var discarding = false
        var nextSeq: UInt64 = 0
        var writeSeq: UInt64 = 0
        var ready: [UInt64: [[UInt8]]] = [:]
        var readClosed = false
        var wantWrite = false
        var readingPaused = false
        /// Removed from epoll after the peer hung up while responses were still due.
        var detached = false
        init(id: UInt64, fd: Int32) {
            self.id = id
            self.fd = fd
        }
        var inflight: UInt64 { nextSeq - writeSeq }
        /// Nothing is waiting to be written.
        var writeDone: Bool { writeQueue.isEmpty }

        /// Queues a response's segments behind what is already queued.
        func queueWrite(_ segments: [[UInt8]]) {
            for segment in segments where !segment.isEmpty {
                if segment.count < Connection.coalesceBelow, !writeQueue.isEmpty,
                    writeQueue[writeQueue.count - 1].count < Connection.coalesceBelow * 4
                {
                    writeQueue[writeQueue.count - 1].append(contentsOf: segment)
                } else {
                    writeQueue.append(segment)
                }
            }
        }
        /// Segments smaller than this are copied onto the previous one instead of queued alone.
        static let coalesceBelow = 64 * 1024
    }

    typealias Job = @Sendable (Server) -> Void

    public let path: String
    private let listenFD: Int32
    private let epfd: Int32
    private let wakeFD: Int32
    private let maxLineBytes: Int
    private let handler: RequestHandler
    private let logger: Logger
    private var connections: [Int32: Connection] = [:]
    private var nextConnID: UInt64 = 1
    private let inbox = Mutex<[Job]>([])
    private var stopping = false
    /// The listening socket came from systemd (socket activation): the socket file is not
    /// ours to remove, and stopping drains (see `beginStop`).
    private let inherited: Bool
    /// While stopping, requests read before this time (monotonic ns) are still served.
    private var drainUntil: UInt64 = 0
    /// When the last request line was read (monotonic ns).
    private var lastLineAt: UInt64 = 0
    /// How long a stopping daemon with an inherited socket keeps serving the connections it
    /// has already accepted, and how long they must be quiet before it exits.
    private static let drainMax: UInt64 = 5_000_000_000
    private static let drainQuiet: UInt64 = 300_000_000
    private var pendingTasks = 0
    /// Requests were handled since the heap was last trimmed.
    private var heapDirty = false
    public let activeConnections = Atomic<Int>(0)
    /// Called on the loop thread when SIGHUP arrives (after `installSignalHandlers`). Set before `run()`.
    public var onHangup: (@Sendable () -> Void)?
    /// Called on the loop thread when stopping begins. Set before `run()`.
    public var onStopping: (@Sendable (_ pending: Int) -> Void)?
    private let pingResponseTail: [UInt8]
    private static let maxInflightPerConnection: UInt64 = 8192
    private static let maxWriteBuffer = 16 << 20

    /// Creates the listening socket. Refuses to take over a socket a live daemon
    /// answers on; removes a stale socket file; applies `mode` to the new socket.
    ///
    /// With `inheritedFD` (a listening socket passed by systemd) the socket is served as it
    /// is: nothing is created, probed, chmod-ed or removed at `path`.
    public init(path: String, mode: UInt32, maxLineBytes: Int, handler: RequestHandler, logger: Logger,
                inheritedFD: Int32? = nil) throws(CommandError) {
        self.path = path
        self.maxLineBytes = maxLineBytes
        self.handler = handler
        self.logger = logger
        self.inherited = inheritedFD != nil
        if let inheritedFD {
            listenFD = inheritedFD
        } else {
            listenFD = try Self.listen(path: path, mode: mode)
        }
        epfd = pl_epoll_create()
        wakeFD = pl_eventfd()
        guard epfd >= 0, wakeFD >= 0 else {
            if !inherited {
                close(listenFD)
                unlink(path)
            }
            throw CommandError(.internalError, "cannot create epoll/eventfd: \(String(cString: strerror(pl_errno())))")
        }
        pingResponseTail = Array(
            ",\"ok\":true,\"version\":\"\(PushlineVersion.daemon)\",\"protocol\":\"\(PushlineVersion.proto)\"}\n".utf8)
        _ = pl_epoll_ctl(epfd, pl_epoll_ctl_add(), listenFD, Ev.in)
        _ = pl_epoll_ctl(epfd, pl_epoll_ctl_add(), wakeFD, Ev.in)
    }

    /// Creates the listening socket at `path` (see `init`); returns its descriptor.
    private static func listen(path: String, mode: UInt32) throws(CommandError) -> Int32 {
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw CommandError(.internalError, "'\(path)' exists and is not a socket; refusing to replace it")
            }
            let probe = pl_unix_connect(path)
            if probe >= 0 {
                close(probe)
                throw CommandError(.internalError, "another daemon is serving '\(path)'; refusing to steal its socket")
            }
            unlink(path)
        }
        let fd = pl_unix_listen(path, 1024)
        guard fd >= 0 else {
            throw CommandError(.internalError, "cannot listen on '\(path)': \(String(cString: strerror(pl_errno())))")
        }
        guard chmod(path, mode_t(mode)) == 0 else {
            let e = String(cString: strerror(pl_errno()))
            close(fd)
            unlink(path)
            throw CommandError(.internalError, "cannot chmod '\(path)': \(e)")
        }
        return fd
    }

    deinit {
        close(epfd)
        close(wakeFD)
    }

    /// Installs SIGTERM/SIGINT handlers that stop this server.
    public func installSignalHandlers() {
        pl_install_signal_handlers(wakeFD)
        pl_install_hup_handler(wakeFD)
    }

    /// Runs `body` on the loop thread (the watchdog's check that the loop turns). Safe from any thread.
    public func onLoop(_ body: @escaping @Sendable () -> Void) {
        post { _ in body() }
    }

    /// Asks the loop to stop (same as SIGTERM). Safe from any thread.
    public func requestStop() {
        post { s in s.beginStop(reason: "requested") }
    }

    /// Runs `job` on the loop thread. Safe from any thread.
    func post(_ job: @escaping Job) {
        inbox.withLock { $0.append(job) }
        pl_eventfd_signal(wakeFD)
    }

    /// Serves until stopped, then closes every connection and removes the socket.
    public func run() {
        pl_set_thread_name("pushline-io")
        var fds = [Int32](repeating: 0, count: 256)
        var evs = [UInt32](repeating: 0, count: 256)
        logger.info("listening", metadata: ["socket": "\(path)", "activated": "\(inherited)"])
        while true {
            if stopping && pendingTasks == 0 && connections.values.allSatisfy({ $0.writeDone }) && drained() {
                break
            }
            let n = fds.withUnsafeMutableBufferPointer { f in
                evs.withUnsafeMutableBufferPointer { e in
                    pl_epoll_wait(epfd, f.baseAddress, e.baseAddress, 256, stopping ? 100 : (heapDirty ? 2000 : -1))
                }
            }
            if n == 0 && heapDirty && pendingTasks == 0 {
                // Two quiet seconds after a burst: give freed memory back to the kernel.
                heapDirty = false
                _ = pl_malloc_trim()  // Returns whether anything was released; nothing to check.
                continue
            }
            if n < 0 {
                logger.error("epoll_wait failed", metadata: ["errno": "\(pl_errno())"])
                break
            }
            for i in 0..<Int(n) {
                let fd = fds[i]
                let ev = evs[i]
                if fd == listenFD {
                    acceptAll()
                } else if fd == wakeFD {
                    pl_eventfd_drain(wakeFD)
                    if pl_pending_signal() != 0 && !stopping {
                        beginStop(reason: pl_pending_signal() == SIGINT ? "SIGINT" : "SIGTERM")
                    }
                    if pl_take_hup() != 0 && !stopping { onHangup?() }
                    let jobs = inbox.withLock { q in
                        let j = q
                        q.removeAll(keepingCapacity: true)
                        return j
                    }
                    for job in jobs { job(self) }
                } else if let c = connections[fd] {
                    if c.readClosed && ev & (Ev.hup | Ev.err) != 0 {
                        // The peer is gone and its answers are still being computed: stop
                        // watching the fd (HUP is level-triggered) until they are ready.
                        _ = pl_epoll_ctl(epfd, pl_epoll_ctl_del(), c.fd, 0)
                        c.detached = true
                        continue
                    }
                    if ev & Ev.out != 0 { flush(c) }
                    if ev & (Ev.in | Ev.hup | Ev.err | Ev.rdhup) != 0 {
                        readFrom(c)
                    }
                }
            }
        }
        for c in Array(connections.values) { closeConnection(c) }
        if listenFD >= 0 && !stopping { close(listenFD) }
        logger.info("server stopped")
    }

    private func beginStop(reason: String) {
        guard !stopping else { return }
        stopping = true
        onStopping?(pendingTasks)
        logger.info("stopping: no new connections, finishing in-flight requests", metadata: ["reason": "\(reason)", "pending": "\(pendingTasks)"])
        _ = pl_epoll_ctl(epfd, pl_epoll_ctl_del(), listenFD, 0)
        close(listenFD)
        if inherited {
            // systemd keeps the socket: new clients wait in its backlog for the next daemon.
            // Clients this one already accepted are still served until they are quiet (a
            // client that connected just before the stop sends its request after it).
            drainUntil = monotonicNanos() + Self.drainMax
            lastLineAt = monotonicNanos()
        } else {
            unlink(path)
        }
    }

    /// A stopping daemon may exit: its socket was its own, or its accepted connections are
    /// all closed or quiet, or the drain time is over.
    private func drained() -> Bool {
        guard inherited, !connections.isEmpty else { return true }
        let now = monotonicNanos()
        return now >= drainUntil || now - lastLineAt >= Self.drainQuiet
    }

    private func acceptAll() {
        while true {
            let fd = pl_accept(listenFD)
            if fd < 0 {
                let e = pl_errno()
                if e != EAGAIN && e != EWOULDBLOCK && e != ECONNABORTED {
                    logger.warning("accept failed", metadata: ["error": "\(String(cString: strerror(e)))"])
                }
                return
            }
            let c = Connection(id: nextConnID, fd: fd)
            nextConnID += 1
            connections[fd] = c
            activeConnections.add(1, ordering: .relaxed)
            _ = pl_epoll_ctl(epfd, pl_epoll_ctl_add(), fd, (Ev.in | Ev.rdhup))
        }
    }

    private func closeConnection(_ c: Connection) {
        guard connections[c.fd] === c else { return }
        if !c.detached { _ = pl_epoll_ctl(epfd, pl_epoll_ctl_del(), c.fd, 0) }
        close(c.fd)
        connections[c.fd] = nil
        activeConnections.subtract(1, ordering: .relaxed)
    }

    private func updateInterest(_ c: Connection) {
        guard !c.detached else { return }
        var ev: UInt32 = c.readClosed ? 0 : Ev.rdhup
        if !c.readClosed && !c.readingPaused { ev |= Ev.in }
        if c.wantWrite { ev |= Ev.out }
        _ = pl_epoll_ctl(epfd, pl_epoll_ctl_mod(), c.fd, ev)
    }

    private func readFrom(_ c: Connection) {
        var chunk = [UInt8](repeating: 0, count: 65536)
        var rounds = 0
        while !c.readClosed && !c.readingPaused && rounds < 16 {
            rounds += 1
            let n = chunk.withUnsafeMutableBytes { pl_read(c.fd, $0.baseAddress, 65536) }
            if n > 0 {
                consume(c, chunk, count: n)
                if connections[c.fd] !== c { return }
                continue
            }
            if n == 0 {
                c.readClosed = true
                break
            }
            let e = pl_errno()
            if e == EAGAIN || e == EWOULDBLOCK { return }
            c.readClosed = true
            break
        }
        if c.readClosed {
            // Keep the connection until every response is written (or the peer is gone).
            if c.inflight == 0 && c.writeDone {
                closeConnection(c)
            } else {
                updateInterest(c)
            }
        }
    }

    private func consume(_ c: Connection, _ chunk: [UInt8], count: Int) {
        var start = 0
        while start < count {
            // Find the next newline in chunk[start..<count].
            var nl = -1
            chunk.withUnsafeBufferPointer { p in
                if let base = p.baseAddress, let hit = memchr(base + start, 0x0A, count - start) {
                    nl = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                }
            }
            if c.discarding {
                if nl < 0 { return }
                c.discarding = false
                start = nl + 1
                continue
            }
            if nl < 0 {
                c.readBuffer.append(contentsOf: chunk[start..<count])
                if c.readBuffer.count > maxLineBytes {
                    c.readBuffer.removeAll(keepingCapacity: false)
                    c.discarding = true
                    lineTooLong(c)
                }
                return
            }
            if c.readBuffer.isEmpty {
                if nl - start > maxLineBytes {
                    lineTooLong(c)
                } else {
                    chunk.withUnsafeBufferPointer { p in
                        handleLine(c, UnsafeBufferPointer(rebasing: p[start..<nl]))
                    }
                }
            } else {
                c.readBuffer.append(contentsOf: chunk[start..<nl])
                if c.readBuffer.count > maxLineBytes {
                    lineTooLong(c)
                } else {
                    let line = c.readBuffer
                    line.withUnsafeBufferPointer { handleLine(c, $0) }
                }
                // A long line's buffer (a 100k-device bulk is ~7 MB) is not kept for the next one.
                c.readBuffer.removeAll(keepingCapacity: c.readBuffer.capacity <= 1 << 20)
            }
            start = nl + 1
            if c.inflight >= Self.maxInflightPerConnection && !c.readingPaused {
                // Keep the rest of this chunk for later and stop reading until responses drain.
                if start < count { c.readBuffer.append(contentsOf: chunk[start..<count]) }
                c.readingPaused = true
                updateInterest(c)
                return
            }
        }
    }

    private func lineTooLong(_ c: Connection) {
        let seq = c.nextSeq
        c.nextSeq += 1
        let err = CommandError(.lineTooLong, "request line is longer than max_line_bytes (\(maxLineBytes)); it was discarded",
                               details: ["limit": .int(Int64(maxLineBytes))])
        complete(c, seq: seq, segments: Self.encode(id: .null, result: .failure(err)))
    }

    private func handleLine(_ c: Connection, _ raw: UnsafeBufferPointer<UInt8>) {
        var line = raw
        if let last = line.last, last == 0x0D { line = UnsafeBufferPointer(rebasing: line.dropLast()) }
        // Ignore blank lines.
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { return }
        let seq = c.nextSeq
        c.nextSeq += 1
        let value: JSONValue
        do {
            value = try JSONValue.parse(line)
        } catch {
            complete(c, seq: seq, segments: Self.encode(id: .null, result: .failure(CommandError(.badJSON, "invalid JSON: \(error)"))))
            return
        }
        guard case .object(var obj) = value else {
            complete(c, seq: seq, segments: Self.encode(id: .null, result: .failure(CommandError(.badJSON, "a request must be a JSON object, got \(value.typeName)"))))
            return
        }
        let id = obj["id"] ?? .null
        switch id {
        case .null, .string, .int, .double: break
        default:
            complete(c, seq: seq, segments: Self.encode(id: .null, result: .failure(.invalid("id", "expected a string or a number, got \(id.typeName)"))))
            return
        }
        if stopping {
            let now = monotonicNanos()
            if now >= drainUntil {
                complete(c, seq: seq, segments: Self.encode(id: id, result: .failure(CommandError(.shuttingDown, "the daemon is shutting down"))))
                return
            }
            lastLineAt = now
        }
        // Fast path: ping needs nothing but the versions.
        if obj["cmd"] == .string("ping") && obj.pairs.count <= 2 {
            var out: [UInt8] = Array("{\"id\":".utf8)
            id.write(to: &out)
            out.append(contentsOf: pingResponseTail)
            complete(c, seq: seq, segments: [out])
            return
        }
        obj["id"] = nil
        pendingTasks += 1
        heapDirty = true
        let connID = c.id
        let fd = c.fd
        let handler = self.handler
        let request = obj
        Task {
            let result: Result<JSONObject, CommandError>
            do throws(CommandError) { result = .success(try await handler.handle(request)) } catch { result = .failure(error) }
            let segments = Server.encode(id: id, result: result)
            self.post { s in
                s.pendingTasks -= 1
                guard let c = s.connections[fd], c.id == connID else { return }
                s.complete(c, seq: seq, segments: segments)
            }
        }
    }

    /// The response line for a request, as segments to write in order (see `serializedSegments`).
    static func encode(id: JSONValue, result: Result<JSONObject, CommandError>) -> [[UInt8]] {
        var o = JSONObject()
        o.pairs.reserveCapacity(8)
        o.pairs.append(("id", id))
        switch result {
        case .success(let r):
            o.pairs.append(("ok", .bool(true)))
            o.pairs.append(contentsOf: r.pairs)
        case .failure(let e):
            o.pairs.append(("ok", .bool(false)))
            o.pairs.append(("error", e.json))
        }
        var segments = JSONValue.object(o).serializedSegments()
        segments[segments.count - 1].append(0x0A)
        return segments
    }

    private func complete(_ c: Connection, seq: UInt64, segments: [[UInt8]]) {
        if seq == c.writeSeq {
            c.queueWrite(segments)
            c.writeSeq += 1
            while let next = c.ready.removeValue(forKey: c.writeSeq) {
                c.queueWrite(next)
                c.writeSeq += 1
            }
        } else {
            c.ready[seq] = segments
        }
        flush(c)
    }

    private func flush(_ c: Connection) {
        guard connections[c.fd] === c else { return }
        while !c.writeQueue.isEmpty {
            let n = c.writeQueue[0].withUnsafeBytes { p in
                pl_write(c.fd, p.baseAddress.map { $0 + c.writeOffset }, p.count - c.writeOffset)
            }
            if n > 0 {
                c.writeOffset += n
                if c.writeOffset >= c.writeQueue[0].count {
                    c.writeQueue.removeFirst()  // A handful of segments: the shift is cheap.
                    c.writeOffset = 0
                }
                continue
            }
            let e = pl_errno()
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) {
                if !c.wantWrite {
                    c.wantWrite = true
                    updateInterest(c)
                }
                return
            }
            // The peer is gone: drop the connection; in-flight work still completes.
            closeConnection(c)
            return
        }
        c.writeOffset = 0
        var changed = false
        if c.wantWrite {
            c.wantWrite = false
            changed = true
        }
        if c.readingPaused && c.inflight < Self.maxInflightPerConnection / 2 {
            c.readingPaused = false
            changed = true
            // Process lines already buffered before reading more.
            if !c.readBuffer.isEmpty {
                let pending = c.readBuffer
                c.readBuffer.removeAll(keepingCapacity: true)
                consume(c, pending, count: pending.count)
                if connections[c.fd] !== c { return }
            }
        }
        if c.readClosed && c.inflight == 0 {
            closeConnection(c)
            return
        }
        if changed { updateInterest(c) }
    }
}
