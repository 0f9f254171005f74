import Synchronization

/// One entry of the `events` feed as read back: its `seq` and what was written.
///
/// `type` stays a string (not `PushEvent.Kind`) so that a feed written by a newer Pushline,
/// with kinds this one does not know, is still read and passed on as it is.
public struct FeedEvent: Sendable, Equatable {
    public var seq: Int64
    public var type: String
    /// Unix milliseconds.
    public var at: Int64
    public var fields: JSONObject

    public init(seq: Int64, type: String, at: Int64, fields: JSONObject) {
        self.seq = seq
        self.type = type
        self.at = at
        self.fields = fields
    }

    /// The protocol's form: `{"seq":n,"type":"...","at":"<RFC 3339 UTC>", ...fields}`. A field
    /// named like one of the three fixed members is left out (the fixed member wins).
    public var json: JSONValue {
        var o = JSONObject()
        o.pairs.reserveCapacity(3 + fields.pairs.count)
        o.pairs.append(("seq", .int(seq)))
        o.pairs.append(("type", .string(type)))
        o.pairs.append(("at", .string(formatTimestamp(at))))
        for (k, v) in fields.pairs where k != "seq" && k != "type" && k != "at" { o.pairs.append((k, v)) }
        return .object(o)
    }
}

/// The durable, ordered `events` feed as storage sees it (issue 13): the part of the storage
/// seam a backend implements beside `DeviceRegistry`. `SQLiteRegistry` (SQLite) implements it; a
/// PostgreSQL backend implements the same protocol.
///
/// Rules every implementation keeps:
/// - Events are appended inside the transaction that makes them true (`SQLiteRegistryStore.appendEvents`
///   on SQLite), so a reader never sees an event whose change was rolled back.
/// - `seq` only grows and is never reused, not even after pruning or a restart, so a reader's
///   cursor stays valid; `latestEventSeq` is the highest `seq` ever given (0 before the first),
///   even when pruning removed that event.
/// - After a transaction that appended events commits, the backend calls `eventSignal.notify()`
///   so that waiting readers look again (a spurious notify is harmless; a missed one delays a
///   reader until its `wait_ms` ends).
public protocol EventLog: Sendable {
    /// Up to `limit` events with `seq > after`, in `seq` order.
    func events(after: Int64, limit: Int) async throws(CommandError) -> [FeedEvent]
    /// The highest `seq` ever appended (0 if none), pruned or not.
    func latestEventSeq() async throws(CommandError) -> Int64
    /// Deletes the events that happened before `before` (Unix ms); how many were deleted.
    func pruneEvents(before: Int64) async throws(CommandError) -> Int
    /// Wakes readers waiting for newer events.
    var eventSignal: EventSignal { get }
}

/// Where `events` readers wait for newer events without holding a thread: each waiter is a
/// suspended continuation, resumed by `notify()` (a commit appended events), `close()` (the
/// daemon stops) or its own deadline (a sleeping task, which holds no thread either).
///
/// A reader reads `generation` before it queries the feed and waits with that value: an event
/// committed between the query and the wait has already moved the generation on, so the wait
/// returns at once and no wake-up is lost.
public final class EventSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var closed = false
        var nextID: UInt64 = 0
        /// Waiters between their start and their end (a deadline that fires in between counts).
        var pending: Set<UInt64> = []
        /// Waiters whose deadline fired before they suspended.
        var expired: Set<UInt64> = []
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Moves on with every `notify()`.
    public var generation: UInt64 { state.withLock { $0.generation } }

    /// `close()` was called: waits return at once.
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Readers currently suspended (for tests and metrics).
    public var waiting: Int { state.withLock { $0.waiters.count } }

    /// Newer events were committed: wakes every waiter.
    public func notify() {
        let woken = state.withLock { s in
            s.generation &+= 1
            let w = Array(s.waiters.values)
            s.waiters.removeAll()
            return w
        }
        for c in woken { c.resume() }
    }

    /// The daemon is stopping: wakes every waiter, and later waits return at once.
    public func close() {
        let woken = state.withLock { s in
            s.closed = true
            let w = Array(s.waiters.values)
            s.waiters.removeAll()
            return w
        }
        for c in woken { c.resume() }
    }

    /// Suspends until `generation` differs from `seen`, `close()`, `deadline`, or the task is
    /// canceled (its client hung up), whichever is first.
    public func wait(seen: UInt64, until deadline: ContinuousClock.Instant) async {
        let id: UInt64 = state.withLock { s in
            s.nextID &+= 1
            s.pending.insert(s.nextID)
            return s.nextID
        }
        let timer = Task { [self] in
            do { try await Task.sleep(until: deadline, clock: .continuous) } catch { return }
            expire(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now: Bool = state.withLock { s in
                    if s.closed || s.generation != seen || s.expired.contains(id) { return true }
                    s.waiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            // As the deadline: resumes the waiter, or makes it return at once if not yet suspended.
            expire(id)
        }
        timer.cancel()
        state.withLock { s in
            s.pending.remove(id)
            s.expired.remove(id)
            s.waiters[id] = nil
        }
    }

    private func expire(_ id: UInt64) {
        let c: CheckedContinuation<Void, Never>? = state.withLock { s in
            if let c = s.waiters.removeValue(forKey: id) { return c }
            if s.pending.contains(id) { s.expired.insert(id) }
            return nil
        }
        c?.resume()
    }
}

/// Event pruning in slices, one transaction each, so a large backlog never holds a database
/// connection in one long delete (both backends).
enum EventPruning {
    static let slice = 10_000

    /// Calls `deleteSlice(max)` until a slice deletes fewer than `slice` rows; the total deleted.
    static func run(_ deleteSlice: (Int) async throws(CommandError) -> Int) async throws(CommandError) -> Int {
        var total = 0
        while true {
            let n = try await deleteSlice(slice)
            total += n
            if n < slice { return total }
        }
    }
}
