import CPushlineShims
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The device registry on PostgreSQL: `DeviceRegistry` over a pool of libpq connections.
///
/// `poolSize` threads each own one connection (made on first use, re-made after a loss) and run
/// one job at a time: a write in its own transaction (BEGIN ... COMMIT; a deadlock or a
/// serialization failure is retried), a read as it comes. While the database cannot be reached
/// every command fails at once with `unavailable` and `retry_after_ms` (one connection attempt
/// per `retryAfterMs` at most, so nothing waits on a dead server); the first command after the
/// database is back reconnects. A job cut off by a lost connection before COMMIT is retried once
/// on a new connection (nothing of it was committed); one cut off during COMMIT answers
/// `unavailable` (its outcome is unknown).
///
/// ```swift
/// let reg = try PostgresRegistry(conninfo: "postgresql://pushline@/pushline?host=/run/postgresql")
/// let out = try await reg.register([input], updateOnDuplicate: false)
/// reg.close()
/// ```
public final class PostgresRegistry: Sendable {
    /// The delay a client is told to wait (and between two connection attempts) while the database is down.
    static let retryAfterMs = 500

    let pool: PGPool
    let logger: Logger?
    /// What logs may show: the connection string without its password.
    public let redactedLocation: String
    /// Wakes this daemon's `events` readers (see `EventLog`): after a local commit that wrote
    /// events, and from the listener when another daemon's commit did.
    public let eventSignal = EventSignal()
    /// LISTEN/NOTIFY on a connection of its own, with a `pollMs` fallback.
    let listener: PGListener
    /// `groups` of id lists (every send to `ids`, async or not, counts its devices first),
    /// batched: one statement answers the calls made at once (`PostgresStore.idGroups`).
    let idGroups: PGGroupCommit<DeviceFilter, [DeviceGroup]>

    /// Connects once, migrates (under the advisory lock) and starts `poolSize` threads.
    /// Fails with `unavailable` when the database cannot be reached, `internal_error` otherwise.
    public init(conninfo: String, poolSize: Int = 4, pollMs: Int = 1000, logger: Logger? = nil) throws(CommandError) {
        self.logger = logger
        redactedLocation = DatabaseLocation.redact(conninfo)
        do {
            let c = try PGConnection(conninfo: conninfo)
            try PostgresMigrations.migrate(c)
        } catch {
            var e = error.failure.commandError
            e.message = "cannot open the registry at \(DatabaseLocation.redact(conninfo)): \(error.description)"
            throw e
        }
        pool = PGPool(conninfo: conninfo, logger: logger)
        idGroups = PGGroupCommit(pool: pool, maxBatch: 1000, write: false) { s, filters in try s.idGroups(filters).map { .success($0) } }
        listener = PGListener(conninfo: conninfo, pollMs: max(10, pollMs), signal: eventSignal, logger: logger)
        do {
            for i in 0..<max(1, poolSize) { try pool.startWorker(index: i) }
            try listener.start()
        } catch {
            pool.closeAndJoin()
            listener.closeAndJoin()
            throw CommandError(.internalError, "cannot start the registry threads: \(error)")
        }
    }

    deinit { close() }

    /// Finishes the queued jobs, closes the connections and joins the threads (idempotent).
    public func close() {
        listener.closeAndJoin()
        pool.closeAndJoin()
    }

    /// Called (on the listener's thread) when another daemon may have queued outbox work:
    /// a `pushline_outbox` NOTIFY, or every `pollMs`.
    public func onOutboxWork(_ body: @escaping @Sendable () -> Void) { listener.outboxWake.withLock { $0 = body } }

    /// Runs `body` on a pool connection (in a transaction for a write) and returns its result after COMMIT.
    /// `urgent` jobs go ahead of the queue (the outbox heartbeat: a lease must not lapse while
    /// the heartbeat waits behind a backlog).
    func run<T: Sendable>(write: Bool, urgent: Bool = false, _ body: @escaping @Sendable (PostgresStore) throws -> T) async throws(CommandError) -> T {
        let result: Result<T, CommandError> = await withCheckedContinuation { cont in
            let job = PGJob(
                write: write,
                run: { store in
                    let value = try body(store)
                    return { cont.resume(returning: .success(value)) }
                },
                fail: { e in cont.resume(returning: .failure(e)) })
            if !pool.push(job, urgent: urgent) { cont.resume(returning: .failure(CommandError(.shuttingDown, "the registry is closed"))) }
        }
        return try result.get()
    }

    public func register(_ inputs: [DeviceInput], updateOnDuplicate: Bool) async throws(CommandError) -> [RegisterOutcome] {
        try await run(write: true) { s in try s.register(inputs, updateOnDuplicate: updateOnDuplicate, now: nowMillis()) }
    }

    public func unregister(_ keys: [DeviceKey]) async throws(CommandError) -> (deleted: Int, missing: [Int]) {
        let r = try await run(write: true) { s in
            let r = try s.unregister(keys)
            return UnregisterResult(deleted: r.deleted, missing: r.missing)
        }
        return (r.deleted, r.missing)
    }

    public func devices(_ f: DeviceFilter) async throws(CommandError) -> [Device] {
        try await run(write: false) { s in try s.devices(f) }
    }

    public func page(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int) async throws(CommandError) -> ([Device], PageCursor?) {
        let r = try await run(write: false) { s in
            let (devices, next) = try s.page(parts, from: cursor, limit: limit)
            return PageResult(devices: devices, next: next)
        }
        return (r.devices, r.next)
    }

    public func groups(_ f: DeviceFilter) async throws(CommandError) -> [DeviceGroup] {
        var all = f
        all.afterId = nil
        all.limit = nil
        let filter = all
        if PostgresStore.idGroupsApply(filter) { return try await idGroups.submit(filter).get() }
        return try await run(write: false) { s in try s.groups(filter) }
    }

    public func device(_ key: DeviceKey) async throws(CommandError) -> Device? {
        try await run(write: false) { s in try s.device(key) }
    }

    public func update(_ key: DeviceKey, _ u: DeviceUpdate) async throws(CommandError) -> Device {
        try await run(write: true) { s in try s.update(key, u, now: nowMillis()) }
    }

    public func prune(inactiveBefore: Int64?) async throws(CommandError) -> Int {
        try await run(write: true) { s in try s.prune(inactiveBefore: inactiveBefore) }
    }

    public func stats() async throws(CommandError) -> RegistryStats {
        try await run(write: false) { s in try s.stats() }
    }

    public func deactivate(_ list: [Deactivation]) async -> Set<Int64> {
        do {
            let done = try await run(write: true) { s in try s.deactivate(list) }
            if !done.isEmpty { eventSignal.notify() }
            return done
        } catch {
            logger?.error("registry: deactivate failed: \(error.description)")
            return []
        }
    }

    public func resolveTokens(app: String, platform: Platform, _ tokens: [String]) async throws(CommandError) -> [Device?] {
        try await run(write: false) { s in try s.resolveTokens(app: app, platform: platform, tokens) }
    }

    public func subscribe(_ deviceIds: [Int64], topic: TopicName) async throws(CommandError) {
        try await run(write: true) { s in try s.subscribe(deviceIds, topic: topic, now: nowMillis()) }
    }

    public func unsubscribe(_ deviceIds: [Int64], topic: TopicName) async throws(CommandError) {
        try await run(write: true) { s in try s.unsubscribe(deviceIds, topic: topic) }
    }

    public func topics(of deviceIds: [Int64]) async throws(CommandError) -> [Int64: [String]] {
        try await run(write: false) { s in try s.topics(of: deviceIds) }
    }

    public func subscribers(of topic: TopicName, app: String?) async throws(CommandError) -> [Device] {
        try await run(write: false) { s in try s.subscribers(of: topic, app: app) }
    }

    public func get(_ key: String) async -> String? {
        do {
            return try await run(write: false) { s in try s.kvGet(key) }
        } catch {
            logger?.error("registry: kv get failed: \(error.description)")
            return nil
        }
    }

    public func set(_ key: String, _ value: String) async {
        do {
            try await run(write: true) { s in try s.kvSet(key, value) }
        } catch {
            logger?.error("registry: kv set failed: \(error.description)")
        }
    }

    /// Swaps a provider-state value if it is still `expected` (see `KeyValueStore`); `.unavailable` (logged) on error.
    public func compareAndSet(_ key: String, expected: String?, new: String) async -> KVSwap {
        do {
            return try await run(write: true) { s in try s.kvCompareAndSet(key, expected: expected, new: new) }
        } catch {
            logger?.error("registry: kv compare-and-set failed: \(error.description)")
            return .unavailable
        }
    }

    public func probeWritable() async throws(CommandError) {
        try await run(write: true) { s in try s.kvSet("pushline.probe", String(nowMillis())) }
    }
}

extension PostgresRegistry: DeviceRegistry {}

extension PostgresRegistry: EventLog {
    public func events(after: Int64, limit: Int) async throws(CommandError) -> [FeedEvent] {
        try await run(write: false) { s in try s.events(after: after, limit: limit) }
    }

    public func latestEventSeq() async throws(CommandError) -> Int64 {
        try await run(write: false) { s in try s.latestEventSeq() }
    }

    public func pruneEvents(before: Int64) async throws(CommandError) -> Int {
        try await EventPruning.run { max throws(CommandError) in
            try await run(write: true) { s in try s.pruneEvents(before: before, max: max) }
        }
    }
}

/// The eventfd that ends `PGListener`'s wait when it closes.
///
/// `@unchecked Sendable`: the descriptor is only written (`signal`) from other threads and read
/// by `poll` on the listener's; an eventfd is safe to use so. Closed in `deinit`.
final class ListenerCloseFD: @unchecked Sendable {
    let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    /// Nil when no eventfd could be made (the listener then polls in 100 ms steps).
    static func make() -> ListenerCloseFD? {
        let fd = pl_eventfd()
        return fd >= 0 ? ListenerCloseFD(fd: fd) : nil
    }

    func signal() { pl_eventfd_signal(fd) }

    deinit { _ = Glibc.close(fd) }
}

/// A thread with a connection of its own that LISTENs on `pushline_events` and
/// `pushline_outbox` and wakes this daemon's events readers and outbox worker when another
/// daemon commits. Every `pollMs` (and while it cannot listen) it also looks at the events
/// counter and wakes the outbox worker, so everything still works where NOTIFY never comes
/// (PgBouncer in transaction mode), only later.
///
/// `@unchecked Sendable`: `closed` is an atomic; the connection lives on the thread only.
final class PGListener: @unchecked Sendable {
    let conninfo: String
    let pollMs: Int
    let signal: EventSignal
    let logger: Logger?
    let outboxWake = Mutex<(@Sendable () -> Void)?>(nil)
    private let closed = Atomic<Bool>(false)
    private let thread = Mutex<pthread_t?>(nil)
    /// Ends the thread's wait at once on `closeAndJoin`, so it can wait for the socket until the
    /// next `pollMs` tick instead of 100 ms at a time (10 idle wake-ups a second). Nil if no
    /// eventfd could be made: then it waits 100 ms at a time, as before.
    private let closeFD = ListenerCloseFD.make()

    init(conninfo: String, pollMs: Int, signal: EventSignal, logger: Logger?) {
        self.conninfo = conninfo
        self.pollMs = pollMs
        self.signal = signal
        self.logger = logger
    }

    func start() throws(PGPool.StartError) {
        let box = Unmanaged.passRetained(PGPool.Box { [self] in
            pl_set_thread_name("pushline-pglisten")
            self.work()
        }).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { p in
            // `p` is the retained Box passed below; it is never nil.
            guard let p else { return nil }
            Unmanaged<PGPool.Box>.fromOpaque(p).takeRetainedValue().body()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<PGPool.Box>.fromOpaque(box).release()
            throw PGPool.StartError(rc: rc)
        }
        thread.withLock { $0 = tid }
    }

    func closeAndJoin() {
        closed.store(true, ordering: .releasing)
        closeFD?.signal()
        guard let t = thread.withLock({ t -> pthread_t? in defer { t = nil }; return t }) else { return }
        if pthread_equal(t, pthread_self()) != 0 { _ = pthread_detach(t); return }
        _ = pthread_join(t, nil)
    }

    private func wakeOutbox() { outboxWake.withLock { $0 }?() }

    private func work() {
        var conn: PGConnection?
        var lastSeq: Int64 = -1
        var nextPoll = monotonicNanos()
        var nextConnect: UInt64 = 0
        while !closed.load(ordering: .acquiring) {
            let now = monotonicNanos()
            if conn == nil && now >= nextConnect {
                do {
                    let c = try PGConnection(conninfo: conninfo)
                    try c.exec("LISTEN pushline_events; LISTEN pushline_outbox")
                    conn = c
                    // Whatever was committed while we were not listening.
                    signal.notify()
                    wakeOutbox()
                } catch {
                    nextConnect = now + UInt64(PostgresRegistry.retryAfterMs) * 1_000_000
                }
            }
            if now >= nextPoll {
                nextPoll = now + UInt64(pollMs) * 1_000_000
                // The fallback: a feed that moved on without a NOTIFY reaching us.
                if let c = conn, let r = try? c.query("SELECT last FROM pushline_event_counter WHERE id = 1"), r.rows == 1 {
                    let seq = r.int(0, 0)
                    if seq != lastSeq {
                        if lastSeq >= 0 { signal.notify() }
                        lastSeq = seq
                    }
                } else {
                    signal.notify()
                }
                wakeOutbox()
            }
            // Waits for the socket (or, not connected, for the next attempt) until the next poll
            // tick; `closeAndJoin` ends the wait through `closeFD` (without one: 100 ms at a time).
            var until = nextPoll
            if conn == nil || !(conn?.isOK ?? false) { until = min(until, max(nextConnect, now + 1_000_000)) }
            let cap: UInt64 = closeFD == nil ? 100 : UInt64(Int32.max)
            let waitMs = Int32(max(1, min(cap, until > now ? (until - now + 999_999) / 1_000_000 : 1)))
            var pfds = [pollfd(fd: closeFD?.fd ?? -1, events: Int16(POLLIN), revents: 0)]
            guard let c = conn, c.isOK else {
                conn = nil
                _ = poll(&pfds, 1, waitMs)
                continue
            }
            pfds.append(pollfd(fd: c.socket, events: Int16(POLLIN), revents: 0))
            let rc = poll(&pfds, 2, waitMs)
            if rc > 0 && pfds[1].revents != 0 {
                do {
                    var events = false
                    var outbox = false
                    for ch in try c.notifications() {
                        if ch == "pushline_events" { events = true } else if ch == "pushline_outbox" { outbox = true }
                    }
                    if events { signal.notify() }
                    if outbox { wakeOutbox() }
                } catch {
                    conn = nil
                }
            }
        }
    }
}

/// One queued operation for a pool thread. `run` returns what delivers its result (called after
/// COMMIT); it may run twice (a retry after a deadlock or a lost connection), never half-committed.
struct PGJob: Sendable {
    let write: Bool
    let run: @Sendable (PostgresStore) throws -> @Sendable () -> Void
    let fail: @Sendable (CommandError) -> Void
}

/// The pool: a job queue shared by the connection threads, and whether the database is down.
///
/// `@unchecked Sendable` is safe: `jobs`, `closed`, `threads` and `downUntil` are only touched
/// with `mutex` held; the mutex and condition live in heap memory freed only in `deinit`.
final class PGPool: @unchecked Sendable {
    let conninfo: String
    let logger: Logger?
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private var jobs: [PGJob] = []
    private var head = 0
    private var closed = false
    private var threads: [pthread_t] = []
    /// Monotonic ns before which no connection is attempted (the database was just found down).
    private var downUntil: UInt64 = 0
    private var down = false

    init(conninfo: String, logger: Logger?) {
        self.conninfo = conninfo
        self.logger = logger
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        // With default attributes glibc's init functions cannot fail (they always return 0).
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    private func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    func push(_ job: PGJob, urgent: Bool = false) -> Bool {
        withLock {
            if closed { return false }
            if urgent { jobs.insert(job, at: head) } else { jobs.append(job) }
            pthread_cond_signal(cond)
            return true
        }
    }

    func take() -> PGJob? {
        withLock {
            while head == jobs.count && !closed { pthread_cond_wait(cond, mutex) }
            if head == jobs.count { return nil }
            let j = jobs[head]
            head += 1
            if head > 1024 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            return j
        }
    }

    /// Milliseconds left before the next connection attempt, or nil if one may be made now.
    func downRemainingMs() -> Int? {
        let now = monotonicNanos()
        return withLock { now < downUntil ? max(1, Int((downUntil - now) / 1_000_000)) : nil }
    }

    func markDown(_ e: PGError) {
        let first = withLock {
            downUntil = monotonicNanos() + UInt64(PostgresRegistry.retryAfterMs) * 1_000_000
            defer { down = true }
            return !down
        }
        if first { logger?.error("registry: PostgreSQL unreachable; commands answer unavailable until it is back", metadata: ["error": "\(e.description)"]) }
    }

    func markUp() {
        let was = withLock {
            defer { down = false; downUntil = 0 }
            return down
        }
        if was { logger?.notice("registry: PostgreSQL reachable again") }
    }

    struct StartError: Error, CustomStringConvertible {
        var rc: Int32
        var description: String { "pthread_create failed: \(String(cString: strerror(rc)))" }
    }

    /// Holds the worker body while it crosses into the new thread through pthread_create's raw pointer.
    final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    func startWorker(index: Int) throws(StartError) {
        let box = Unmanaged.passRetained(Box { [self] in
            pl_set_thread_name("pushline-pg\(index)")
            self.work()
        }).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { p in
            // `p` is the retained Box passed below; it is never nil.
            guard let p else { return nil }
            Unmanaged<Box>.fromOpaque(p).takeRetainedValue().body()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw StartError(rc: rc)
        }
        withLock { threads.append(tid) }
    }

    /// Refuses new jobs, lets the threads finish the queued ones, and joins them (once).
    func closeAndJoin() {
        let ts: [pthread_t] = withLock {
            closed = true
            pthread_cond_broadcast(cond)
            defer { threads = [] }
            return threads
        }
        for t in ts {
            if pthread_equal(t, pthread_self()) != 0 { _ = pthread_detach(t); continue }
            _ = pthread_join(t, nil)
        }
    }

    /// A pool thread: its connection lives (and is closed) here only.
    private func work() {
        var conn: PGConnection?
        while let job = take() {
            var attempt = 0
            while true {
                attempt += 1
                if let c = conn, !c.isOK { conn = nil }
                if conn == nil {
                    if let wait = downRemainingMs() {
                        job.fail(CommandError(.unavailable, "the database is unreachable (retrying)", details: ["retry_after_ms": .int(Int64(wait))]))
                        break
                    }
                    do {
                        conn = try PGConnection(conninfo: conninfo)
                        markUp()
                    } catch {
                        markDown(error)
                        job.fail(RegistryFailure.unavailable(error.description, retryAfterMs: PostgresRegistry.retryAfterMs).commandError)
                        break
                    }
                }
                guard let c = conn else { break }
                var committing = false
                do {
                    if job.write { try c.exec("BEGIN") }
                    let finish = try job.run(PostgresStore(c: c))
                    if job.write {
                        committing = true
                        try c.exec("COMMIT")
                    }
                    finish()
                    break
                } catch let e as CommandError {
                    if c.isOK && c.inTransaction { try? c.exec("ROLLBACK") }
                    job.fail(e)
                    break
                } catch {
                    if c.isOK && c.inTransaction { try? c.exec("ROLLBACK") }
                    let failure: RegistryFailure
                    var lost = false
                    var transient = false
                    if let e = error as? PGError {
                        failure = e.failure
                        lost = e.connectionLost || !c.isOK
                        transient = e.isTransient
                    } else if let f = error as? RegistryFailure {
                        failure = f
                    } else {
                        failure = .other("\(error)")
                    }
                    if lost {
                        conn = nil
                        if committing {
                            job.fail(RegistryFailure.unavailable(
                                "the connection was lost during COMMIT: the write may or may not have happened",
                                retryAfterMs: PostgresRegistry.retryAfterMs).commandError)
                            break
                        }
                        if attempt < 2 { continue }
                    } else if transient && attempt < 4 {
                        continue
                    }
                    if case .unavailable = failure {} else { logger?.error("registry: \(failure.description)") }
                    job.fail(failure.commandError)
                    break
                }
            }
        }
    }
}
