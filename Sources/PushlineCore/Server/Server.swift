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
        /// Splits the byte stream into request lines (see `LineFramer`).
        var framer: LineFramer
        /// Bytes to write, in order; `writeOffset` is how much of the first segment is written.
        /// Small responses are appended to the last segment (one write for many pipelined
        /// answers); large ones (a bulk's results) are queued as they are, never copied.
        var writeQueue: [[UInt8]] = []
        var writeOffset = 0
        var nextSeq: UInt64 = 0
        var writeSeq: UInt64 = 0
        var ready: [UInt64: [[UInt8]]] = [:]
        var readClosed = false
        var wantWrite = false
        var readingPaused = false
        /// Removed from epoll after the peer hung up while responses were still due.
        var detached = false
        init(id: UInt64, fd: Int32, maxLineBytes: Int) {
            self.id = id
            self.fd = fd
            framer = LineFramer(maxLineBytes: maxLineBytes)
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
    private var pendingTasks = 0
    /// Requests were handled since the heap was last trimmed.
    private var heapDirty = false
    public let activeConnections = Atomic<Int>(0)
    private let pingResponseTail: [UInt8]
    private static let maxInflightPerConnection: UInt64 = 8192
    private static let maxWriteBuffer = 16 << 20

    /// Creates the listening socket. Refuses to take over a socket a live daemon
    /// answers on; removes a stale socket file; applies `mode` to the new socket.
    public init(path: String, mode: UInt32, maxLineBytes: Int, handler: RequestHandler, logger: Logger) throws(CommandError) {
        self.path = path
        self.maxLineBytes = maxLineBytes
        self.handler = handler
        self.logger = logger
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
        listenFD = fd
        epfd = pl_epoll_create()
        wakeFD = pl_eventfd()
        guard epfd >= 0, wakeFD >= 0 else {
            close(fd)
            unlink(path)
            throw CommandError(.internalError, "cannot create epoll/eventfd: \(String(cString: strerror(pl_errno())))")
        }
        pingResponseTail = Array(
            ",\"ok\":true,\"version\":\"\(PushlineVersion.daemon)\",\"protocol\":\"\(PushlineVersion.proto)\"}\n".utf8)
        _ = pl_epoll_ctl(epfd, pl_epoll_ctl_add(), listenFD, Ev.in)
        _ = pl_epoll_ctl(epfd, pl_epoll_ctl_add(), wakeFD, Ev.in)
    }

    deinit {
        close(epfd)
        close(wakeFD)
    }

    /// Installs SIGTERM/SIGINT handlers that stop this server.
    public func installSignalHandlers() {
        pl_install_signal_handlers(wakeFD)
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
        logger.info("listening", metadata: ["socket": "\(path)"])
        while true {
            if stopping && pendingTasks == 0 && connections.values.allSatisfy({ $0.writeDone }) {
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
        logger.info("stopping: no new connections, finishing in-flight requests", metadata: ["reason": "\(reason)", "pending": "\(pendingTasks)"])
        _ = pl_epoll_ctl(epfd, pl_epoll_ctl_del(), listenFD, 0)
        close(listenFD)
        unlink(path)
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
            let c = Connection(id: nextConnID, fd: fd, maxLineBytes: maxLineBytes)
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
        chunk.withUnsafeBufferPointer { p in
            c.framer.feed(UnsafeBufferPointer(rebasing: p[0..<count])) { frame(c, $0) }
        }
    }

    /// Handles one framing event; returns false to stop reading this connection until its
    /// responses drain (the framer keeps the rest of the chunk).
    private func frame(_ c: Connection, _ event: LineFramer.Event) -> Bool {
        switch event {
        case .line(let line): handleLine(c, line)
        case .tooLong: lineTooLong(c)
        }
        if c.inflight >= Self.maxInflightPerConnection && !c.readingPaused {
            c.readingPaused = true
            updateInterest(c)
            return false
        }
        return true
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
            complete(c, seq: seq, segments: Self.encode(id: id, result: .failure(CommandError(.shuttingDown, "the daemon is shutting down"))))
            return
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
            if !c.framer.buffer.isEmpty {
                c.framer.resume { frame(c, $0) }
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
