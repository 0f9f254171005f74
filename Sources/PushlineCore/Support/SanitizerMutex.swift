#if PUSHLINE_TSAN
import Glibc

/// Only in ThreadSanitizer builds (`make test-sanitizers` passes `-DPUSHLINE_TSAN`; the product
/// build never does). On Linux, `Synchronization.Mutex` locks with raw futex system calls that
/// ThreadSanitizer cannot see, so it reports every access made under such a lock as a data race
/// (Tests/sanitizers/tsan_mutex.swift: two threads incrementing under a Mutex are reported).
/// This pthread-based lock with the same `withLock` shape shadows it inside PushlineCore so
/// that the sanitizer reports only real races.
final class Mutex<Value>: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    init(_ initialValue: Value) {
        lock = .allocate(capacity: 1)
        // A default mutex on fresh memory: pthread_mutex_init cannot fail (POSIX lists only
        // EAGAIN/ENOMEM/EPERM for attributes we do not use); checked anyway.
        precondition(pthread_mutex_init(lock, nil) == 0, "pthread_mutex_init failed")
        value = initialValue
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    func withLock<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        precondition(pthread_mutex_lock(lock) == 0, "pthread_mutex_lock failed")
        defer { pthread_mutex_unlock(lock) }
        return try body(&value)
    }
}
#endif
