import CPushlineShims
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The device registry: SQLite behind a Sendable, async facade.
///
/// The SQLite handle lives on one dedicated thread. Every method queues a job
/// for it and suspends until the job is done. The thread drains all queued jobs
/// at once and runs them in one transaction (group commit), each in its own
/// SAVEPOINT so a failing job rolls back only itself; results are delivered
/// after COMMIT. Every multi-row operation is all-or-nothing.
///
/// ```swift
/// let reg = try SQLiteRegistry(path: "/var/lib/pushline/registry.db")
/// let d = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "tok", "user": 7])
/// let out = try await reg.register([d], updateOnDuplicate: false)
/// out[0].device.id   // 1
/// reg.close()
/// ```
public final class SQLiteRegistry: Sendable {
    /// The reason recorded when a client deactivates a device.
    public static let clientDeactivationReason = "deactivated by client"

    let queue: RegistryJobQueue
    let logger: Logger?
    /// Small reads on the caller's thread (see `SQLiteDirectReads`); nil for in-memory databases.
    let direct: SQLiteDirectReads?
    /// Wakes `events` readers after a batch that appended events has committed (see `EventLog`).
    public let eventSignal = EventSignal()
    /// The outbox's leases, in memory (see `SQLiteOutboxLeases`): shared by every `SQLiteOutbox`
    /// of this registry, as the database is.
    let outboxLeases = SQLiteOutboxLeases()

    /// Opens (creating if needed) the database at `path`, migrates it and starts its thread.
    ///
    /// The parent directory must exist. Failures are `internal_error` with SQLite's message.
    public init(path: String, logger: Logger? = nil) throws(CommandError) {
        self.logger = logger
        let store: SQLiteRegistryStore
        do {
            store = try SQLiteRegistryStore(path: path)
        } catch {
            throw CommandError(.internalError, "cannot open the registry: \(error.description)")
        }
        queue = RegistryJobQueue()
        direct = SQLiteDirectReads(path: path)
        let q = queue
        let log = logger
        let signal = eventSignal
        do {
            try RegistryThread.start(queue: q) { [store] in
                pl_set_thread_name("pushline-db")
                while let batch = q.take(max: 1000) {
                    store.eventsAppended = 0
                    let committed = RegistryJobRunner.run(batch, store: store, logger: log)
                    // Readers are woken only once the events they will read are committed.
                    if committed && store.eventsAppended > 0 { signal.notify() }
                    store.eventsAppended = 0
                }
                // `store` (and the connection) is released when this closure ends, on this thread.
            }
        } catch {
            throw CommandError(.internalError, "cannot start the registry thread: \(error)")
        }
    }

    deinit { close() }

    /// Finishes the queued jobs, closes the database and joins its thread.
    ///
    /// Later calls of any method fail with `shutting_down`. Calling it twice is harmless.
    public func close() {
        direct?.close()
        queue.closeAndJoin()
    }

    /// Runs `body` on the database thread and returns its result (after COMMIT for writes).
    ///
    /// `durable`: the batch that carries it commits with `synchronous=FULL` (the outbox's
    /// writes survive power loss; other batches keep WAL's `NORMAL`).
    /// `background`: the outbox worker's own work (resolving, claiming, completing): it runs in
    /// batches of its own, taken in turn with the others' (see `RegistryJobQueue.take`), so a
    /// client's request waits for at most one background batch, not for a batch of them.
    func run<T: Sendable>(write: Bool, durable: Bool = false, background: Bool = false, _ body: @escaping @Sendable (SQLiteRegistryStore) throws -> T) async throws(CommandError) -> T {
        let result: Result<T, CommandError> = await withCheckedContinuation { c in
            var job = RegistryJob(
                write: write,
                run: { store in
                    let r: Result<T, CommandError>
                    do {
                        r = .success(try body(store))
                    } catch let e as CommandError {
                        r = .failure(e)
                    } catch let e as DatabaseError {
                        r = .failure(e.commandError)
                    } catch let e as RegistryFailure {
                        r = .failure(e.commandError)
                    } catch {
                        r = .failure(CommandError(.internalError, "\(error)"))
                    }
                    let ok: Bool
                    if case .success = r { ok = true } else { ok = false }
                    return (ok, { @Sendable commitError in
                        if ok, let commitError { c.resume(returning: .failure(commitError)) } else { c.resume(returning: r) }
                    })
                },
                abort: { @Sendable e in c.resume(returning: .failure(e)) })
            job.durable = durable
            job.background = background
            if !queue.push(job) {
                c.resume(returning: .failure(CommandError(.shuttingDown, "the registry is closed")))
            }
        }
        return try result.get()
    }

    // MARK: public API

    /// Caps the database file (`PRAGMA max_page_count`): writes past it fail with SQLITE_FULL,
    /// as on a full disk (`database_max_pages`, for tests).
    public func setMaxPageCount(_ pages: Int) async throws(CommandError) {
        try await run(write: false) { s in _ = try s.db.query("PRAGMA max_page_count = \(pages)") { $0.int(0) } }
    }

    /// Registers devices, all or nothing, in one transaction.
    ///
    /// A token already registered (same app and platform) fails with
    /// `duplicate_registration` naming `devices[i]`, unless `updateOnDuplicate`: then
    /// that row's name, user, device_id, p256dh, auth, browser and active state are
    /// replaced by the new registration's (inactive reason cleared when active).
    /// The same token twice in one batch is always an error.
    public func register(_ inputs: [DeviceInput], updateOnDuplicate: Bool) async throws(CommandError) -> [RegisterOutcome] {
        try await run(write: true) { s in try s.register(inputs, updateOnDuplicate: updateOnDuplicate, now: nowMillis()) }
    }

    /// Deletes devices (and their topic subscriptions); `missing` lists the indexes of keys not found.
    public func unregister(_ keys: [DeviceKey]) async throws(CommandError) -> (deleted: Int, missing: [Int]) {
        let r = try await run(write: true) { s in
            let r = try s.unregister(keys)
            return UnregisterResult(deleted: r.deleted, missing: r.missing)
        }
        return (r.deleted, r.missing)
    }

    /// Devices matching `f`, ordered by id ascending.
    public func devices(_ f: DeviceFilter) async throws(CommandError) -> [Device] {
        // A few ids (a send to `ids`): read on this thread.
        if let ids = f.ids, ids.count <= SQLiteDirectReads.maxKeys, let direct,
            let found = direct.read({ s in try s.devices(f) })
        {
            return found
        }
        return try await run(write: false) { s in try s.devices(f) }
    }

    /// Up to `limit` devices of `parts` (filters read one after another, each by id), from
    /// `cursor`; with the cursor of the next page, or nil after the last.
    ///
    /// Give parts whose listing is an index search (one `user`; or `app`, `platform` and
    /// `active`): then each page costs what it returns, whatever the registry's size.
    /// `page`'s ids, read from the index the page walks (issue 13: the outbox's resolution
    /// read each device's whole row, and read it again when it sent to it).
    public func pageIds(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int) async throws(CommandError) -> ([Int64], PageCursor?) {
        let r = try await run(write: false, background: true) { s in
            let (ids, next) = try s.pageIds(parts, from: cursor, limit: limit)
            return PageIdsResult(ids: ids, next: next)
        }
        return (r.ids, r.next)
    }

    public func page(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int) async throws(CommandError) -> ([Device], PageCursor?) {
        let r = try await run(write: false) { s in
            let (devices, next) = try s.page(parts, from: cursor, limit: limit)
            return PageResult(devices: devices, next: next)
        }
        return (r.devices, r.next)
    }

    /// The (app, platform) groups a filter selects, with their sizes.
    public func groups(_ f: DeviceFilter) async throws(CommandError) -> [DeviceGroup] {
        var all = f
        all.afterId = nil
        all.limit = nil
        let filter = all
        // A few ids (an async send to `ids` is planned by its groups): read on this thread,
        // as `devices` does; the database thread then only stores the job (one job and one
        // wake-up an accept instead of two).
        if let ids = filter.ids, ids.count <= SQLiteDirectReads.maxKeys, let direct,
            let found = direct.read({ s in try s.groups(filter) })
        {
            return found
        }
        return try await run(write: false) { s in try s.groups(filter) }
    }

    /// One device, or nil.
    public func device(_ key: DeviceKey) async throws(CommandError) -> Device? {
        try await run(write: false) { s in try s.device(key) }
    }

    /// Updates one device and returns it; `not_found` if missing.
    ///
    /// `active = true` clears the inactive reason; `active = false` records
    /// "deactivated by client" and the time.
    public func update(_ key: DeviceKey, _ u: DeviceUpdate) async throws(CommandError) -> Device {
        try await run(write: true) { s in try s.update(key, u, now: nowMillis()) }
    }

    /// Deletes inactive devices (only those gone inactive before `inactiveBefore`, Unix ms, if given).
    public func prune(inactiveBefore: Int64?) async throws(CommandError) -> Int {
        try await run(write: true) { s in try s.prune(inactiveBefore: inactiveBefore) }
    }

    public func stats() async throws(CommandError) -> RegistryStats {
        try await run(write: false) { s in try s.stats() }
    }

    /// Marks devices inactive in one transaction; returns the ids actually deactivated.
    ///
    /// Devices already inactive or missing are not in the result; nor is a device
    /// updated after `invalidSince` (re-registered after the provider's verdict).
    /// Errors are logged and give an empty set.
    public func deactivate(_ list: [Deactivation]) async -> Set<Int64> {
        do {
            return try await run(write: true) { s in try s.deactivate(list) }
        } catch {
            logger?.error("registry: deactivate failed: \(error.description)")
            return []
        }
    }

    /// Looks tokens up (normalised as `register` does); the result is parallel to `tokens`.
    public func resolveTokens(app: String, platform: Platform, _ tokens: [String]) async throws(CommandError) -> [Device?] {
        // A few tokens (a single send): read on this thread.
        if tokens.count <= SQLiteDirectReads.maxKeys, let direct,
            let found = direct.read({ s in try s.resolveTokens(app: app, platform: platform, tokens) })
        {
            return found
        }
        return try await run(write: false) { s in try s.resolveTokens(app: app, platform: platform, tokens) }
    }

    /// A provider-state value, or nil (also on error, which is logged).
    public func kvGet(_ key: String) async -> String? {
        do {
            return try await run(write: false) { s in try s.kvGet(key) }
        } catch {
            logger?.error("registry: kv get failed: \(error.description)")
            return nil
        }
    }

    /// Stores a provider-state value (errors are logged).
    public func kvSet(_ key: String, _ value: String) async {
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

    /// Writes a timestamp to the kv table and commits (the watchdog's and `health`'s check
    /// that the database is reachable and writable); throws the database's error.
    public func probeWritable() async throws(CommandError) {
        try await run(write: true) { s in try s.kvSet("pushline.probe", String(nowMillis())) }
    }

    /// Subscribes devices to a topic (idempotent); `not_found` if a device is missing, then nothing is written.
    public func subscribe(_ deviceIds: [Int64], topic: TopicName) async throws(CommandError) {
        try await run(write: true) { s in try s.subscribe(deviceIds, topic: topic, now: nowMillis()) }
    }

    /// Unsubscribes devices from a topic (missing subscriptions are ignored).
    public func unsubscribe(_ deviceIds: [Int64], topic: TopicName) async throws(CommandError) {
        try await run(write: true) { s in try s.unsubscribe(deviceIds, topic: topic) }
    }

    /// The topics of each device (every requested id is a key; sorted topic names).
    public func topics(of deviceIds: [Int64]) async throws(CommandError) -> [Int64: [String]] {
        try await run(write: false) { s in try s.topics(of: deviceIds) }
    }

    /// Devices subscribed to `topic` (active or not; of `app` only if given), ordered by id.
    public func subscribers(of topic: TopicName, app: String? = nil) async throws(CommandError) -> [Device] {
        try await run(write: false) { s in try s.subscribers(of: topic, app: app) }
    }
}

extension SQLiteRegistry: KeyValueStore {
    public func get(_ key: String) async -> String? { await kvGet(key) }
    public func set(_ key: String, _ value: String) async { await kvSet(key, value) }
}


// MARK: - the database thread

/// One queued operation for the database thread.
struct RegistryJob: Sendable {
    /// Whether it writes (the batch then starts with BEGIN IMMEDIATE).
    let write: Bool
    /// Runs on the database thread inside the batch transaction. Returns whether it
    /// succeeded (its savepoint is kept) and a function delivering its result once
    /// the batch is committed (`nil`) or failed to commit (the error).
    let run: @Sendable (SQLiteRegistryStore) -> (ok: Bool, finish: @Sendable (CommandError?) -> Void)
    /// Fails the job without running it (or discards its result).
    let abort: @Sendable (CommandError) -> Void
    /// Its batch commits with `synchronous=FULL`.
    var durable = false
    /// The outbox worker's work: batched apart from the others (`RegistryJobQueue.take`).
    var background = false
}

/// The job queue between callers and the database thread: a pthread mutex and condition variable.
///
/// `@unchecked Sendable` is safe: `jobs`, `closed` and `thread` are only read or
/// written while `mutex` is held, and the mutex/condition live in heap memory that
/// never moves and is freed only in `deinit`, when no thread can use them.
final class RegistryJobQueue: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private var jobs: [RegistryJob] = []
    /// Background jobs (`RegistryJob.background`), taken in batches of their own.
    private var background: [RegistryJob] = []
    /// Whether the last batch taken was of background jobs (true at first: clients go first).
    private var tookBackground = true
    private var closed = false
    private var thread: pthread_t?

    init() {
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

    /// Runs `body` with the mutex held. The lock/unlock results are not checked: a
    /// default (non-error-checking) mutex that was initialised cannot fail them.
    private func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Queues a job; false once closed.
    func push(_ job: RegistryJob) -> Bool {
        withLock {
            if closed { return false }
            let wasEmpty = jobs.isEmpty && background.isEmpty
            if job.background { background.append(job) } else { jobs.append(job) }
            if wasEmpty { pthread_cond_signal(cond) }
            return true
        }
    }

    /// Waits for jobs and takes up to `max`; nil when closed and drained.
    ///
    /// Clients' jobs and background jobs never share a batch, and while both are queued the
    /// batches alternate: a client's request (an async accept, a send's read) waits for at most
    /// the one background batch running, instead of sharing a transaction with the worker's
    /// 5,000-row appends and 1,000-row completions, and a stream of accepts cannot starve the
    /// worker. (A bound, not a measured speed-up: on a quiet machine the accept latency during
    /// a 100,000-device job was p99 34-41 ms with and without it, the cores being busy with the
    /// delivery; see the README.)
    func take(max: Int) -> [RegistryJob]? {
        withLock {
            while jobs.isEmpty && background.isEmpty && !closed { pthread_cond_wait(cond, mutex) }
            if jobs.isEmpty && background.isEmpty { return nil }
            let fromBackground = jobs.isEmpty || (!background.isEmpty && !tookBackground)
            tookBackground = fromBackground
            if fromBackground { return Self.takeFirst(&background, max) }
            return Self.takeFirst(&jobs, max)
        }
    }

    private static func takeFirst(_ list: inout [RegistryJob], _ max: Int) -> [RegistryJob] {
        if list.count <= max {
            let all = list
            list.removeAll(keepingCapacity: true)
            return all
        }
        let some = Array(list[0..<max])
        list.removeFirst(max)
        return some
    }

    func setThread(_ t: pthread_t) { withLock { thread = t } }

    /// Refuses new jobs, lets the thread finish the queued ones, and joins it (once).
    func closeAndJoin() {
        let t: pthread_t? = withLock {
            closed = true
            pthread_cond_broadcast(cond)
            let t = thread
            thread = nil
            return t
        }
        guard let t else { return }
        if pthread_equal(t, pthread_self()) != 0 {
            // Closing from the database thread itself (no job captures the SQLiteRegistry, so
            // this should not happen): detach instead of deadlocking.
            _ = pthread_detach(t)
            return
        }
        // pthread_join fails only for an invalid or already-joined thread; `thread` is
        // taken under the lock above, so it is joined exactly once.
        _ = pthread_join(t, nil)
    }
}

/// Starts the database thread (through `PosixThread`).
enum RegistryThread {
    typealias StartError = PosixThread.StartError

    /// Runs `body` on a new joinable thread (the body names it `pushline-db`); `sending` lets
    /// the compiler check that what it captures (the non-Sendable store) is used by that thread only.
    ///
    /// The thread is not named before the body runs: naming it there (an allocation as the
    /// thread's first act) left the daemon's RSS about 25 MB higher after registering 100,000
    /// devices (apns_bench: 73 vs 48 MB, peak unchanged), as glibc then served this thread
    /// from another malloc arena.
    static func start(queue: RegistryJobQueue, _ body: sending @escaping () -> Void) throws(StartError) {
        queue.setThread(try PosixThread.start(name: nil, body))
    }
}

/// Runs one batch of jobs in one transaction (group commit).
enum RegistryJobRunner {
    /// Returns whether the batch's transaction committed (false: nothing of it was kept).
    @discardableResult
    static func run(_ jobs: [RegistryJob], store: SQLiteRegistryStore, logger: Logger?) -> Bool {
        let db = store.db
        let anyWrite = jobs.contains { $0.write }
        let useSavepoints = jobs.count > 1
        // `synchronous` cannot change inside a transaction: set around it, for this batch only.
        let durable = jobs.contains { $0.durable }
        if durable { try? db.execute("PRAGMA synchronous = FULL") }
        defer { if durable { try? db.execute("PRAGMA synchronous = NORMAL") } }
        do {
            try db.execute(anyWrite ? "BEGIN IMMEDIATE" : "BEGIN")
        } catch {
            for j in jobs { j.abort(error.commandError) }
            logger?.error("registry: \(error.description)")
            return false
        }
        var finishers: [(ok: Bool, finish: @Sendable (CommandError?) -> Void)] = []
        finishers.reserveCapacity(jobs.count)
        var fatal: DatabaseError?
        for j in jobs {
            if useSavepoints && j.write {
                do { try db.execute("SAVEPOINT job") } catch { fatal = error; break }
            }
            let r = j.run(store)
            finishers.append(r)
            // Some errors (SQLITE_FULL, IOERR, ...) roll the whole transaction back by themselves:
            // then the savepoint is gone too, and SQLite's own message says why.
            if !r.ok && !db.inTransaction {
                fatal = DatabaseError(code: 1, message: "transaction rolled back by SQLite after an error (\(db.lastErrorMessage))", sql: nil)
                break
            }
            if useSavepoints && j.write {
                do {
                    if !r.ok { try db.execute("ROLLBACK TO job") }
                    try db.execute("RELEASE job")
                } catch { fatal = error; break }
            }
            // Some errors (SQLITE_FULL, IOERR, ...) roll the whole transaction back by themselves.
            if !db.inTransaction {
                fatal = DatabaseError(code: 1, message: "transaction rolled back by SQLite after an error (\(db.lastErrorMessage))", sql: nil)
                break
            }
        }
        if fatal == nil {
            if !useSavepoints, let only = finishers.first, !only.ok {
                do { try db.execute("ROLLBACK") } catch { fatal = error }
            } else {
                do { try db.execute("COMMIT") } catch { fatal = error }
            }
        }
        if let fatal {
            if db.inTransaction { try? db.execute("ROLLBACK") }
            logger?.error("registry: batch of \(jobs.count) failed: \(fatal.description)")
            // Every job of the batch fails: what ran was rolled back.
            for j in jobs { j.abort(fatal.commandError) }
            return false
        }
        for f in finishers { f.finish(nil) }
        // A lone failing job was rolled back: what it appended is gone.
        return useSavepoints || finishers.first?.ok == true
    }
}
