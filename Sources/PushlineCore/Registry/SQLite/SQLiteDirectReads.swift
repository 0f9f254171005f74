import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Small registry reads (a `send` to a few tokens or ids) run on the calling thread, through
/// a read-only connection of that thread's own, instead of a round trip through the database
/// thread (issue 11, single-send cost).
///
/// The round trip cost a single send two thread wake-ups (the database thread's, then the
/// resumed task's) and the database thread's BEGIN/COMMIT around the one SELECT; a read here
/// is the SELECT alone, a few microseconds of an index lookup, on a thread that would only
/// have waited for it.
///
/// - Each thread gets one connection per registry (`ThreadReaders`, in thread-local storage):
///   a connection is used, and closed, only by the thread that opened it (SQLite's
///   multi-thread mode). It closes when its thread ends, or on that thread's next read after
///   the registry closed.
/// - WAL lets readers run beside the database thread's writes; a read sees what was committed
///   when it began. Everything the daemon answered before (a `register`, a deactivation
///   recorded by an earlier send) was committed before its answer, so a later read sees it.
/// - Only reads of at most `maxKeys` keys come here (a large target stays on the database
///   thread, which runs it in its own transaction and does not hold a task's thread).
/// - Any failure (opening the connection, preparing or running the query) falls back to the
///   database thread for that read, which reports the error if there is one; a connection
///   that failed is dropped. A database only this process's first connection can see (an
///   in-memory path) never reads here.
final class SQLiteDirectReads: Sendable {
    let path: String
    /// Distinguishes registries in a thread's `ThreadReaders`.
    let id: Int
    /// Cleared by `close()`; readers of a closed registry are closed by their threads.
    private let isOpen = Atomic<Bool>(true)
    /// Reads served here, and reads handed back to the database thread after a failure (tests).
    let served = Atomic<Int>(0)
    let fellBack = Atomic<Int>(0)

    /// Most tokens or ids read here at once.
    static let maxKeys = 64

    private static let lastID = Atomic<Int>(0)

    /// nil for a path another connection would not share (in-memory databases).
    init?(path: String) {
        let lower = path.lowercased()
        guard !path.isEmpty, path != ":memory:", !lower.hasPrefix("file:"), ThreadReaders.key != nil else { return nil }
        self.path = path
        id = Self.lastID.add(1, ordering: .relaxed).newValue
    }

    var open: Bool { isOpen.load(ordering: .acquiring) }

    /// Stops reads here; each thread closes its connection to this registry on its next read.
    func close() { isOpen.store(false, ordering: .releasing) }

    /// `body` run on this thread's connection, or nil when the caller must go through the
    /// database thread (closed, no connection, or the read failed).
    func read<T>(_ body: (SQLiteRegistryStore) throws -> T) -> T? {
        guard open, let readers = ThreadReaders.current() else { return nil }
        guard let store = readers.store(for: self) else {
            fellBack.add(1, ordering: .relaxed)
            return nil
        }
        do {
            let r = try body(store)
            served.add(1, ordering: .relaxed)
            return r
        } catch {
            // The database thread runs it again and reports what is wrong; this connection is
            // not trusted again.
            readers.drop(self)
            fellBack.add(1, ordering: .relaxed)
            return nil
        }
    }
}

/// One thread's read connections, by registry (`SQLiteDirectReads.id`). Confined to its
/// thread: reached only through that thread's thread-local slot, released by the slot's
/// destructor on that thread when it ends.
final class ThreadReaders {
    private var stores: [Int: (reads: SQLiteDirectReads, store: SQLiteRegistryStore?)] = [:]

    /// The thread-local slot; nil if the process ran out of keys (then no direct reads).
    static let key: pthread_key_t? = {
        var k = pthread_key_t()
        // Fails only with EAGAIN (no keys left) or ENOMEM: direct reads are then off.
        guard pthread_key_create(&k, threadReadersDestructor) == 0 else { return nil }
        return k
    }()

    /// This thread's readers, created on first use.
    static func current() -> ThreadReaders? {
        guard let key else { return nil }
        if let p = pthread_getspecific(key) { return Unmanaged<ThreadReaders>.fromOpaque(p).takeUnretainedValue() }
        let r = ThreadReaders()
        let p = Unmanaged.passRetained(r).toOpaque()
        // Fails only with ENOMEM: this thread then reads through the database thread.
        guard pthread_setspecific(key, p) == 0 else {
            Unmanaged<ThreadReaders>.fromOpaque(p).release()
            return nil
        }
        return r
    }

    /// The thread's store for `reads` (opened on first use; nil if it cannot be, or could
    /// not be before). Connections of closed registries are closed on the way.
    func store(for reads: SQLiteDirectReads) -> SQLiteRegistryStore? {
        if let e = stores[reads.id] { return e.store }
        for (id, e) in stores where !e.reads.open { stores[id] = nil }
        let store = try? SQLiteRegistryStore(readerOf: reads.path)
        stores[reads.id] = (reads, store)  // A failed open is remembered: not retried per read.
        return store
    }

    /// Closes the thread's connection to `reads` and does not open another.
    func drop(_ reads: SQLiteDirectReads) {
        stores[reads.id] = (reads, nil)
    }
}

/// The thread-local slot's destructor: the ending thread closes its own connections.
private func threadReadersDestructor(_ p: UnsafeMutableRawPointer?) {
    guard let p else { return }
    Unmanaged<ThreadReaders>.fromOpaque(p).release()
}
