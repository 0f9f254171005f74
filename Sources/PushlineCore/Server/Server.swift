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

/// epoll event bits, imported from <sys/epoll.h> through the shim header.
private enum Ev {
    static let `in` = EPOLLIN.rawValue
    static let out = EPOLLOUT.rawValue
    static let err = EPOLLERR.rawValue
    static let hup = EPOLLHUP.rawValue
    static let rdhup = EPOLLRDHUP.rawValue
}

/// The server's per-connection limits (config keys `max_connections`, `max_reply_buffer_bytes`).
public struct ServerLimits: Sendable {
    /// Connections served at once; one more gets a `busy` line and is closed.
    public var maxConnections: Int = 1024
    /// Reply bytes a connection may have waiting to be written (its client is not reading them)
    /// before the server stops reading that connection's requests; reading resumes once the
    /// client has read its replies. One reply larger than this is still written whole.
    public var maxReplyBufferBytes: Int = 1 << 20
    public init() {}
    public init(maxConnections: Int, maxReplyBufferBytes: Int) {
        self.maxConnections = maxConnections
        self.maxReplyBufferBytes = maxReplyBufferBytes
    }
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
        /// answers); large ones (a bulk's results) are queued as they are, never copied; spooled
        /// results are read from their file a piece at a time as the socket takes them.
        var writeQueue: [JSONSegment] = []
        var writeOffset = 0
        var nextSeq: UInt64 = 0
        var writeSeq: UInt64 = 0
        var ready: [UInt64: [JSONSegment]] = [:]
        var readClosed = false
        var wantWrite = false
        var readingPaused = false
        /// The socket is in the epoll set. A hung-up connection whose reading waits for its
        /// requests in flight leaves the set (see `updateInterest`).
        var watched = true
        /// The peer can no longer read (it hung up, or a write failed): replies are dropped,
        /// the requests it sent before hanging up are still read and run, and the connection
        /// closes at the end of its input.
        var peerGone = false
        /// Reply bytes produced and not yet written: `writeQueue` (less `writeOffset`) and `ready`.
        var unsentBytes = 0
        /// Requests that only wait for something to answer (`events` with `wait_ms`), by seq:
        /// canceled when the peer is gone, so a client that hung up holds nothing until its
        /// wait ends. Other requests run to their end (a send is not cut off half-way).
        var cancelOnGone: [UInt64: Task<Void, Never>] = [:]
        /// The peer's credentials (SO_PEERCRED), for logs.
        let pid: Int32
        let uid: UInt32
        init(id: UInt64, fd: Int32, pid: Int32, uid: UInt32, maxLineBytes: Int) {
            self.id = id
            self.fd = fd
            self.pid = pid
            self.uid = uid
            framer = LineFramer(maxLineBytes: maxLineBytes)
        }
        var inflight: UInt64 { nextSeq - writeSeq }
        /// Nothing is waiting to be written.
        var writeDone: Bool { writeQueue.isEmpty }

        /// Queues a response's segments behind what is already queued (dropped if the peer is gone).
        func queueWrite(_ segments: [JSONSegment]) {
            if peerGone { return }
            for segment in segments where segment.count > 0 {
                unsentBytes += segment.count
                if case .bytes(let bytes) = segment, bytes.count < Connection.coalesceBelow,
                    case .bytes(var last) = writeQueue.last, last.count < Connection.coalesceBelow * 4
                {
                    writeQueue[writeQueue.count - 1] = .bytes([])  // drops the queue's reference: no copy on append
                    last.append(contentsOf: bytes)
                    writeQueue[writeQueue.count - 1] = .bytes(last)
                } else {
                    writeQueue.append(segment)
                }
            }
        }
        /// Bytes of a spooled segment read per write.
        static let spoolReadSize = 256 * 1024
        /// Segments smaller than this are copied onto the previous one instead of queued alone.
        static let coalesceBelow = 64 * 1024
    }

    typealias LoopTask = @Sendable (Server) -> Void

    public let path: String
    private let listenFD: Int32
    private let epfd: Int32
    private let wakeFD: Int32
    private let maxLineBytes: Int
    private let limits: ServerLimits
    /// Who may connect (checked against each connection's SO_PEERCRED).
    public let peerPolicy: PeerPolicy
    private let handler: RequestHandler
    private let logger: Logger
    private var connections: [Int32: Connection] = [:]
    private var nextConnID: UInt64 = 1
    private let inbox = Mutex<[LoopTask]>([])
    private var stopping = false
    /// accept failed for want of descriptors or memory: the listening socket is not watched
    /// (it would wake the loop without end) until a connection closes or a second passes.
    private var acceptPaused = false
    /// Connections are accepted only while descriptor numbers stay below this (the soft
    /// RLIMIT_NOFILE less a reserve): running out of descriptors altogether fails what the
    /// daemon needs besides connections (provider connections, the database's files, result
    /// spools) and makes libdispatch's worker monitor trap when it cannot open /proc (SIGILL).
    /// Descriptors are handed out lowest first, so an accepted number at the ceiling means the
    /// table is that full: accepting pauses until a connection closes, as for EMFILE.
    private var acceptCeiling: Int32 = .max
    /// Accepting paused at `acceptCeiling`: only a closing connection resumes it (the
    /// once-a-second retry after EMFILE would take one more descriptor every second).
    private var pausedAtCeiling = false
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
    /// The buffer every read goes into (loop thread only; the framer copies what it keeps).
    private var readChunk = [UInt8](repeating: 0, count: 65536)
    private static let maxInflightPerConnection: UInt64 = 8192
    /// Lines up to this long are parsed on the I/O thread (a few microseconds); longer ones
    /// (up to `max_line_bytes`) are parsed by a task, so no line delays other connections.
    static let inlineParseLimit = 4096
    /// After a stop is requested and every request is answered, clients that read none of
    /// their replies for this long are closed so that the daemon exits.
    private static let stopWriteTimeout: Duration = .seconds(10)
    /// When write progress was last made (or the stop began), while stopping.
    private var lastWriteProgress = ContinuousClock.now

    /// Creates the listening socket. Refuses to take over a socket a live daemon
    /// answers on; removes a stale socket file; applies `mode` to the new socket.
    /// `access` decides who may connect (see `PeerPolicy`; its defaults depend on the socket's group).
    ///
    /// With `inheritedFD` (a listening socket passed by systemd) the socket is served as it
    /// is: nothing is created, probed, chmod-ed or removed at `path`.
    public init(path: String, mode: UInt32, maxLineBytes: Int, limits: ServerLimits = ServerLimits(),
                access: PeerAccess = PeerAccess(), handler: RequestHandler, logger: Logger,
                inheritedFD: Int32? = nil) throws(CommandError) {
        self.path = path
        self.maxLineBytes = maxLineBytes
        self.limits = limits
        self.handler = handler
        self.logger = logger
        self.inherited = inheritedFD != nil
        let fd: Int32
        if let inheritedFD {
            fd = inheritedFD
        } else {
            fd = try Self.listen(path: path, mode: mode)
        }
        listenFD = fd
        let inherited = self.inherited
        /// Undoes what `init` did to the listening socket (an inherited one is systemd's, left alone).
        func dropListener() {
            if !inherited {
                close(fd)
                unlink(path)
            }
        }
        Self.raiseDescriptorLimit(toServe: limits.maxConnections, logger: logger)
        acceptCeiling = Self.acceptCeiling()
        // The socket's group decides the default of who may connect: fstat works for an
        // inherited socket too, whose path may not be ours to look at.
        var sockStat = stat()
        guard fstat(fd, &sockStat) == 0 || stat(path, &sockStat) == 0 else {
            let e = String(cString: strerror(pl_errno()))
            dropListener()
            throw CommandError(.internalError, "cannot stat '\(path)': \(e)")
        }
        peerPolicy = PeerPolicy(access, socketGID: sockStat.st_gid, mode: mode, ownUID: geteuid())
        pingResponseTail = Server.pingTail
        do throws(SyscallError) {
            epfd = try syscall(where: "epoll_create1") { pl_epoll_create() }
            do throws(SyscallError) {
                wakeFD = try syscall(where: "eventfd") { pl_eventfd() }
            } catch {
                close(epfd)
                throw error
            }
        } catch {
            dropListener()
            throw CommandError(.internalError, "cannot create the event loop: \(error)")
        }
        do throws(SyscallError) {
            try syscall(where: "epoll_ctl(ADD, listening socket)") { pl_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, Ev.in) }
            try syscall(where: "epoll_ctl(ADD, eventfd)") { pl_epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, Ev.in) }
        } catch {
            close(epfd)
            close(wakeFD)
            dropListener()
            throw CommandError(.internalError, "cannot create the event loop: \(error)")
        }
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

    /// Raises the soft RLIMIT_NOFILE (often 1024) towards the hard limit so that
    /// `max_connections` connections fit beside the daemon's other descriptors.
    static func raiseDescriptorLimit(toServe connections: Int, logger: Logger) {
        var lim = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 else { return }
        let want = rlim_t(connections + 256)
        guard lim.rlim_cur < want else { return }
        let before = lim.rlim_cur
        lim.rlim_cur = min(want, lim.rlim_max)
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) != 0 || lim.rlim_cur < want {
            logger.warning("the descriptor limit is below max_connections plus the daemon's own", metadata: [
                "limit": "\(lim.rlim_cur)", "was": "\(before)", "max_connections": "\(connections)",
            ])
        }
    }

    /// The soft descriptor limit less a reserve of an eighth of it (at least 16) for what the
    /// daemon opens besides connections; `.max` when the limit is unknown or unlimited.
    static func acceptCeiling() -> Int32 {
        var lim = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0, lim.rlim_cur < rlim_t(Int32.max) else { return .max }
        let limit = Int32(lim.rlim_cur)
        return limit - max(16, limit / 8)
    }

    /// What follows `{"id":<id>` in a ping's response.
    static let pingTail: [UInt8] = Array(
        ",\"ok\":true,\"version\":\"\(PushlineVersion.daemon)\",\"protocol\":\"\(PushlineVersion.proto)\"}\n".utf8)

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
    ///
    /// Only the job that finds the inbox empty signals the eventfd: the loop drains the eventfd
    /// before it takes the inbox, so later jobs are either taken with that one or find the inbox
    /// empty again (one write per wake-up, not per answer, under load).
    func post(_ job: @escaping LoopTask) {
        let wasEmpty = inbox.withLock { q -> Bool in
            q.append(job)
            return q.count == 1
        }
        if wasEmpty { pl_eventfd_signal(wakeFD) }
    }

    /// Serves until stopped, then closes every connection and removes the socket.
    public func run() {
        pl_set_thread_name("pushline-io")
        var fds = [Int32](repeating: 0, count: 256)
        var evs = [UInt32](repeating: 0, count: 256)
        logger.info("listening", metadata: ["socket": "\(path)", "activated": "\(inherited)"])
        while true {
            if stopping && pendingTasks == 0 {
                if connections.values.allSatisfy({ $0.writeDone }) && drained() { break }
                if ContinuousClock.now - lastWriteProgress > Self.stopWriteTimeout {
                    let stuck = connections.values.filter { !$0.writeDone }
                    logger.warning("stopping: closing connections whose clients do not read their replies", metadata: [
                        "connections": "\(stuck.count)", "unsent_bytes": "\(stuck.reduce(0) { $0 + $1.unsentBytes })",
                    ])
                    break
                }
            }
            let timeout: Int32 = stopping ? 100 : (acceptPaused ? 1000 : (heapDirty ? 2000 : -1))
            let n: Int32
            do throws(SyscallError) {
                n = try syscall(where: "epoll_wait") {
                    fds.withUnsafeMutableBufferPointer { f in
                        evs.withUnsafeMutableBufferPointer { e in pl_epoll_wait(epfd, f.baseAddress, e.baseAddress, 256, timeout) }
                    }
                }
            } catch {
                logger.critical("event loop failed; stopping", metadata: ["error": "\(error)"])
                break
            }
            if n == 0 && acceptPaused && !pausedAtCeiling { resumeAccepting() }
            if n == 0 && heapDirty && pendingTasks == 0 {
                // Two quiet seconds after a burst: give freed memory back to the kernel.
                heapDirty = false
                _ = pl_malloc_trim()  // Returns whether anything was released; nothing to check.
                continue
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
                    // HUP: the peer closed both directions; ERR: the socket failed. Either way
                    // no reply can reach it any more (epoll reports both whatever the interest).
                    if ev & (Ev.hup | Ev.err) != 0 { peerGone(c) }
                    if connections[fd] === c && ev & Ev.out != 0 { flush(c) }
                    if connections[fd] === c && ev & (Ev.in | Ev.hup | Ev.err | Ev.rdhup) != 0 {
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
        lastWriteProgress = ContinuousClock.now
        onStopping?(pendingTasks)
        logger.info("stopping: no new connections, finishing in-flight requests", metadata: ["reason": "\(reason)", "pending": "\(pendingTasks)"])
        do throws(SyscallError) {
            try syscall(where: "epoll_ctl(DEL, listening socket)") { pl_epoll_ctl(epfd, EPOLL_CTL_DEL, listenFD, 0) }
        } catch {
            logger.error("cannot stop watching the listening socket", metadata: ["error": "\(error)"])
        }
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
            let fd: Int32
            do throws(SyscallError) {
                switch try syscall(blocking: true, where: "accept4", { pl_accept(listenFD) }) {
                case .processed(let r): fd = r
                case .wouldBlock: return
                }
            } catch {
                // ECONNABORTED: the client left before we accepted it.
                if error.errno == ECONNABORTED || error.errno == EPROTO { continue }
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays queued; try again once
                // a connection closes or in a second.
                logger.warning("accept failed; not accepting for now", metadata: ["error": "\(error)", "connections": "\(connections.count)"])
                pauseAccepting()
                return
            }
            admit(fd)
            if fd >= acceptCeiling {
                logger.warning("near the descriptor limit; not accepting until a connection closes", metadata: [
                    "connections": "\(connections.count)", "descriptor": "\(fd)", "ceiling": "\(acceptCeiling)"])
                pauseAccepting()
                pausedAtCeiling = acceptPaused
                return
            }
        }
    }

    private func pauseAccepting() {
        guard !acceptPaused, !stopping else { return }
        do throws(SyscallError) {
            try syscall(where: "epoll_ctl(MOD, listening socket)") { pl_epoll_ctl(epfd, EPOLL_CTL_MOD, listenFD, 0) }
            acceptPaused = true
        } catch {
            logger.error("cannot pause accepting", metadata: ["error": "\(error)"])
        }
    }

    private func resumeAccepting() {
        guard acceptPaused, !stopping else { return }
        do throws(SyscallError) {
            try syscall(where: "epoll_ctl(MOD, listening socket)") { pl_epoll_ctl(epfd, EPOLL_CTL_MOD, listenFD, Ev.in) }
            acceptPaused = false
        } catch {
            logger.error("cannot resume accepting", metadata: ["error": "\(error)"])
        }
    }

    /// Serves a new connection, or answers it one error line and closes it: `forbidden` if the
    /// peer's credentials are not allowed, `busy` beyond `max_connections`.
    private func admit(_ fd: Int32) {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        do throws(SyscallError) {
            try syscall(where: "getsockopt(SO_PEERCRED)") { pl_peer_cred(fd, &pid, &uid, &gid) }
        } catch {
            logger.warning("connection refused: cannot read its peer credentials", metadata: ["error": "\(error)"])
            close(fd)
            return
        }
        if !peerPolicy.admits(uid: uid, gid: gid, groups: { Self.peerGroups(fd) }) {
            logger.warning("connection refused: peer not in allowed_uids/allowed_gids", metadata: [
                "pid": "\(pid)", "uid": "\(uid)", "gid": "\(gid)",
            ])
            refuse(fd, CommandError(.forbidden, "uid \(uid) may not use this daemon (allowed_uids, allowed_gids)"))
            return
        }
        if connections.count >= limits.maxConnections {
            logger.warning("connection refused: max_connections reached", metadata: [
                "pid": "\(pid)", "uid": "\(uid)", "limit": "\(limits.maxConnections)",
            ])
            refuse(fd, CommandError(.busy, "the daemon serves max_connections (\(limits.maxConnections)) connections already",
                                    details: ["limit": .int(Int64(limits.maxConnections))]))
            return
        }
        do throws(SyscallError) {
            try syscall(where: "epoll_ctl(ADD, connection)") { pl_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, Ev.in | Ev.rdhup) }
        } catch {
            logger.error("cannot watch a new connection; closing it", metadata: ["error": "\(error)", "pid": "\(pid)"])
            close(fd)
            return
        }
        let c = Connection(id: nextConnID, fd: fd, pid: pid, uid: uid, maxLineBytes: maxLineBytes)
        nextConnID += 1
        connections[fd] = c
        activeConnections.add(1, ordering: .relaxed)
    }

    /// The supplementary groups of a connection's peer (SO_PEERGROUPS); empty if unavailable.
    static func peerGroups(_ fd: Int32) -> [UInt32] {
        var groups = [UInt32](repeating: 0, count: 64)
        while true {
            let capacity = groups.count
            let n = groups.withUnsafeMutableBufferPointer { pl_peer_groups(fd, $0.baseAddress, Int32(capacity)) }
            if n < 0 { return [] }
            if Int(n) <= capacity { return Array(groups.prefix(Int(n))) }
            groups = [UInt32](repeating: 0, count: Int(n))
        }
    }

    /// Writes one error line to a connection that is not served and closes it. The socket is
    /// new and its send buffer empty, so one non-blocking write takes the whole line; if it
    /// does not, the client loses only the explanation.
    private func refuse(_ fd: Int32, _ error: CommandError) {
        var line: [UInt8] = []
        for case .bytes(let s) in Self.encode(id: .null, result: .failure(error)) { line.append(contentsOf: s) }  // An error line is never spooled.
        do throws(SyscallError) {
            _ = try line.withUnsafeBytes { p in
                Result { () throws(SyscallError) in try syscall(blocking: true, where: "write") { write(fd, p.baseAddress, p.count) } }
            }.get()
        } catch {
            logger.debug("cannot tell a refused connection why", metadata: ["error": "\(error)"])
        }
        close(fd)
    }

    private func closeConnection(_ c: Connection) {
        guard connections[c.fd] === c else { return }
        do throws(SyscallError) {
            if c.watched { try syscall(where: "epoll_ctl(DEL, connection)") { pl_epoll_ctl(epfd, EPOLL_CTL_DEL, c.fd, 0) } }
        } catch {
            // Closing the fd removes it from the epoll set anyway.
            logger.debug("epoll_ctl DEL failed", metadata: ["error": "\(error)"])
        }
        cancelWaits(c)
        close(c.fd)
        connections[c.fd] = nil
        activeConnections.subtract(1, ordering: .relaxed)
        if acceptPaused {
            resumeAccepting()
            pausedAtCeiling = false
        }
    }

    /// The peer can no longer read: drop its unsent replies (they would be held forever) and
    /// read what it sent to the end; at the end of its input the connection closes. Requests
    /// still running complete; their replies are dropped.
    private func peerGone(_ c: Connection) {
        if !c.peerGone {
            c.peerGone = true
            c.writeQueue.removeAll()
            c.writeOffset = 0
            // Replies waiting for an earlier one are dropped, but their places are kept: `complete`
            // moves `writeSeq` past them when the earlier request finishes (without them the
            // requests in flight would never drop below the cap and reading would never resume).
            for seq in c.ready.keys { c.ready[seq] = [] }
            c.unsentBytes = 0
            c.wantWrite = false
            // Reading paused for the replies resumes now (or when the requests in flight drain),
            // starting with the lines the framer kept.
            if resumeReading(c) && connections[c.fd] !== c { return }
        }
        cancelWaits(c)
        if c.readClosed {
            closeConnection(c)
        } else {
            updateInterest(c)
        }
    }

    /// Ends the connection's waiting requests (see `Connection.cancelOnGone`).
    private func cancelWaits(_ c: Connection) {
        guard !c.cancelOnGone.isEmpty else { return }
        for t in c.cancelOnGone.values { t.cancel() }
        c.cancelOnGone.removeAll()
    }

    /// Whether a request only waits (canceled when its client hangs up).
    static func cancelableOnGone(_ request: JSONObject) -> Bool {
        request["cmd"]?.stringValue == "events"
    }

    /// Unpauses reading once the requests in flight and the unsent reply bytes are both under
    /// half their limits, and frames the lines the framer kept when reading paused (they come
    /// before anything read later). Never called while the framer is feeding: reading is not
    /// paused then. Returns whether reading was unpaused; the connection may have closed
    /// meanwhile (check `connections`), and its epoll interest is the caller's to update.
    private func resumeReading(_ c: Connection) -> Bool {
        guard c.readingPaused, c.inflight < Self.maxInflightPerConnection / 2,
            c.unsentBytes < limits.maxReplyBufferBytes / 2
        else { return false }
        c.readingPaused = false
        if !c.framer.buffer.isEmpty { c.framer.resume { frame(c, $0) } }
        return true
    }

    private func updateInterest(_ c: Connection) {
        // While reading is paused, not even RDHUP is watched: it is level-triggered and would
        // wake the loop for nothing until the client reads. HUP and ERR are always reported.
        var ev: UInt32 = 0
        if !c.readClosed && !c.readingPaused { ev |= Ev.in | Ev.rdhup }
        if c.wantWrite { ev |= Ev.out }
        if c.peerGone && ev == 0 {
            // Hung up, and reading waits for requests in flight to finish: epoll would report
            // the hang-up (level-triggered, whatever the interest) on every turn of the loop, so
            // the socket leaves the set until `complete` resumes reading.
            guard c.watched else { return }
            c.watched = false
            do throws(SyscallError) {
                try syscall(where: "epoll_ctl(DEL, hung-up connection)") { pl_epoll_ctl(epfd, EPOLL_CTL_DEL, c.fd, 0) }
            } catch {
                logger.error("cannot stop watching a connection; closing it", metadata: ["error": "\(error)", "pid": "\(c.pid)"])
                closeConnection(c)
            }
            return
        }
        do throws(SyscallError) {
            if c.watched {
                try syscall(where: "epoll_ctl(MOD, connection)") { pl_epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, ev) }
            } else {
                try syscall(where: "epoll_ctl(ADD, connection)") { pl_epoll_ctl(epfd, EPOLL_CTL_ADD, c.fd, ev) }
                c.watched = true
            }
        } catch {
            logger.error("cannot change a connection's events; closing it", metadata: ["error": "\(error)", "pid": "\(c.pid)"])
            closeConnection(c)
        }
    }

    private func readFrom(_ c: Connection) {
        var rounds = 0
        while !c.readClosed && !c.readingPaused && rounds < 16 {
            rounds += 1
            let r: IOResult<Int>
            do throws(SyscallError) {
                r = try readChunk.withUnsafeMutableBytes { p in
                    Result { () throws(SyscallError) in try syscall(blocking: true, where: "read") { read(c.fd, p.baseAddress, p.count) } }
                }.get()
            } catch {
                // ECONNRESET and the like: nothing more will come.
                c.readClosed = true
                break
            }
            guard case .processed(let n) = r else { return }
            if n > 0 {
                consume(c, readChunk, count: n)
                if connections[c.fd] !== c { return }
                // A short read emptied the socket: epoll (level-triggered) reports more data or
                // the peer's close, so the read that would only say EAGAIN is skipped.
                if n < readChunk.count { return }
                continue
            }
            c.readClosed = true
        }
        if c.readClosed {
            // Keep the connection until every response is written, unless the peer is gone.
            if c.peerGone || (c.inflight == 0 && c.writeDone) {
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
        if !c.readingPaused && mustPauseReading(c) {
            c.readingPaused = true
            updateInterest(c)
            return false
        }
        return true
    }

    /// Too many requests in flight, or too many reply bytes its client has not read.
    private func mustPauseReading(_ c: Connection) -> Bool {
        c.inflight >= Self.maxInflightPerConnection || c.unsentBytes >= limits.maxReplyBufferBytes
    }

    private func lineTooLong(_ c: Connection) {
        let seq = c.nextSeq
        c.nextSeq += 1
        let err = CommandError(.lineTooLong, "request line is longer than max_line_bytes (\(maxLineBytes)); it was discarded",
                               details: ["limit": .int(Int64(maxLineBytes))])
        complete(c, seq: seq, segments: Self.encode(id: .null, result: .failure(err)))
    }

    /// What a request line asks for: an answer known at once (a parse error, `ping`,
    /// `shutting_down`), or a request for the handler.
    enum Prepared: Sendable {
        case reply([JSONSegment])
        case request(id: JSONValue, JSONObject)
    }

    /// Parses and checks one request line. Pure: runs on the I/O thread for short lines
    /// and in a task for long ones.
    static func prepare(_ line: UnsafeBufferPointer<UInt8>, stopping: Bool) -> Prepared {
        let value: JSONValue
        do {
            value = try JSONValue.parse(line)
        } catch {
            return .reply(encode(id: .null, result: .failure(CommandError(.badJSON, "invalid JSON: \(error)"))))
        }
        guard case .object(var obj) = value else {
            return .reply(encode(id: .null, result: .failure(CommandError(.badJSON, "a request must be a JSON object, got \(value.typeName)"))))
        }
        let id = obj["id"] ?? .null
        switch id {
        case .null, .string, .int, .double: break
        default:
            return .reply(encode(id: .null, result: .failure(.invalid("id", "expected a string or a number, got \(id.typeName)"))))
        }
        if stopping {
            return .reply(encode(id: id, result: .failure(CommandError(.shuttingDown, "the daemon is shutting down"))))
        }
        // Fast path: ping needs nothing but the versions.
        if obj["cmd"] == .string("ping") && obj.pairs.count <= 2 {
            var out: [UInt8] = Array("{\"id\":".utf8)
            id.write(to: &out)
            out.append(contentsOf: pingTail)
            return .reply([.bytes(out)])
        }
        obj["id"] = nil
        return .request(id: id, obj)
    }

    private func handleLine(_ c: Connection, _ raw: UnsafeBufferPointer<UInt8>) {
        var line = raw
        if let last = line.last, last == 0x0D { line = UnsafeBufferPointer(rebasing: line.dropLast()) }
        // Ignore blank lines.
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { return }
        let seq = c.nextSeq
        c.nextSeq += 1
        // A stopping daemon refuses new requests, except on connections it accepted from an
        // inherited socket while it drains them (see `beginStop`).
        var refusing = stopping
        if stopping {
            let now = monotonicNanos()
            if now < drainUntil {
                refusing = false
                lastLineAt = now
            }
        }
        let connID = c.id
        let fd = c.fd
        let handler = self.handler
        if line.count > Self.inlineParseLimit {
            // A long line is parsed (and answered) off the I/O thread: however it is shaped,
            // other connections are not kept waiting for it.
            let bytes = Array(line)
            let stopping = refusing
            pendingTasks += 1
            heapDirty = true
            // Canceled if the peer goes; only a waiting request sees it (others run in a task
            // of their own, which a cancellation does not reach).
            c.cancelOnGone[seq] = Task {
                let prepared = bytes.withUnsafeBufferPointer { Server.prepare($0, stopping: stopping) }
                let segments: [JSONSegment]
                switch prepared {
                case .reply(let r): segments = r
                case .request(let id, let request):
                    if Server.cancelableOnGone(request) {
                        segments = await Server.run(handler, request, id: id)
                    } else {
                        segments = await Task { await Server.run(handler, request, id: id) }.value
                    }
                }
                self.post { s in
                    s.pendingTasks -= 1
                    guard let c = s.connections[fd], c.id == connID else { return }
                    c.cancelOnGone[seq] = nil
                    s.complete(c, seq: seq, segments: segments)
                }
            }
            return
        }
        switch Self.prepare(line, stopping: refusing) {
        case .reply(let segments):
            complete(c, seq: seq, segments: segments)
        case .request(let id, let request):
            pendingTasks += 1
            heapDirty = true
            let waits = Self.cancelableOnGone(request)
            let task = Task {
                let segments = await Server.run(handler, request, id: id)
                self.post { s in
                    s.pendingTasks -= 1
                    guard let c = s.connections[fd], c.id == connID else { return }
                    if waits { c.cancelOnGone[seq] = nil }
                    s.complete(c, seq: seq, segments: segments)
                }
            }
            if waits { c.cancelOnGone[seq] = task }
        }
    }

    /// Runs one request through the handler; its response line as segments.
    static func run(_ handler: RequestHandler, _ request: JSONObject, id: JSONValue) async -> [JSONSegment] {
        let result: Result<JSONObject, CommandError>
        do throws(CommandError) { result = .success(try await handler.handle(request)) } catch { result = .failure(error) }
        return encode(id: id, result: result)
    }

    /// The response line for a request, as segments to write in order (see `serializedSegments`).
    static func encode(id: JSONValue, result: Result<JSONObject, CommandError>) -> [JSONSegment] {
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
            o.pairs.append(contentsOf: e.reply.pairs)
        }
        var segments = JSONValue.object(o).serializedParts()
        if case .bytes(var last) = segments.last {
            segments[segments.count - 1] = .bytes([])
            last.append(0x0A)
            segments[segments.count - 1] = .bytes(last)
        } else {
            segments.append(.bytes([0x0A]))
        }
        return segments
    }

    private func complete(_ c: Connection, seq: UInt64, segments: [JSONSegment]) {
        if c.peerGone {
            // Nobody will read it: account for it and drop it.
            if seq == c.writeSeq {
                c.writeSeq += 1
                while c.ready.removeValue(forKey: c.writeSeq) != nil { c.writeSeq += 1 }
                // Reading paused for the requests in flight (the hung-up client sent more
                // before it left): go on reading them once enough have finished.
                if resumeReading(c) && connections[c.fd] === c { updateInterest(c) }
            } else {
                c.ready[seq] = []
            }
            return
        }
        if seq == c.writeSeq {
            c.queueWrite(segments)
            c.writeSeq += 1
            while let next = c.ready.removeValue(forKey: c.writeSeq) {
                for segment in next { c.unsentBytes -= segment.count }  // counted again by queueWrite
                c.queueWrite(next)
                c.writeSeq += 1
            }
        } else {
            c.ready[seq] = segments
            for segment in segments { c.unsentBytes += segment.count }
        }
        flush(c)
    }

    private func flush(_ c: Connection) {
        guard connections[c.fd] === c else { return }
        while let head = c.writeQueue.first {
            let r: IOResult<Int>
            do throws(SyscallError) {
                let offset = c.writeOffset
                switch head {
                case .bytes(let bytes):
                    r = try bytes.withUnsafeBytes { p in
                        Result { () throws(SyscallError) in
                            try syscall(blocking: true, where: "write") { write(c.fd, p.baseAddress.map { $0 + offset }, p.count - offset) }
                        }
                    }.get()
                case .spooled(let file):
                    // The next piece of a spooled response; what the socket does not take is read again next time.
                    switch file.read(at: offset, max: Connection.spoolReadSize) {
                    case .success(let piece):
                        r = try piece.withUnsafeBytes { p in
                            Result { () throws(SyscallError) in
                                try syscall(blocking: true, where: "write") { write(c.fd, p.baseAddress, p.count) }
                            }
                        }.get()
                    case .failure(let e):
                        // The response cannot be completed: the client sees the connection close.
                        logger.error("cannot write a response", metadata: ["error": "\(e.message)"])
                        closeConnection(c)
                        return
                    }
                }
            } catch {
                // EPIPE, ECONNRESET: the peer is gone. Its requests already sent still run.
                peerGone(c)
                return
            }
            guard case .processed(let n) = r else {
                if !c.wantWrite {
                    c.wantWrite = true
                    updateInterest(c)
                }
                return
            }
            c.writeOffset += n
            c.unsentBytes -= n
            if stopping { lastWriteProgress = ContinuousClock.now }
            if c.writeOffset >= head.count {
                // A spooled response's file is deleted off this thread: see `closeInBackground`.
                if case .spooled(let file) = head { file.closeInBackground() }
                c.writeQueue.removeFirst()  // A handful of segments: the shift is cheap.
                c.writeOffset = 0
            }
        }
        c.writeOffset = 0
        var changed = false
        if c.wantWrite {
            c.wantWrite = false
            changed = true
        }
        if resumeReading(c) {
            changed = true
            if connections[c.fd] !== c { return }
        }
        if c.readClosed && c.inflight == 0 {
            closeConnection(c)
            return
        }
        if changed { updateInterest(c) }
    }
}
