// Shows why ThreadSanitizer builds swap Synchronization.Mutex for a pthread lock
// (Sources/PushlineCore/Support/SanitizerMutex.swift): two threads increment counters only
// under a Mutex, the totals are right, and TSan still reports a "Swift access race",
// because Mutex locks with futex system calls it does not intercept.
//   swiftc -sanitize=thread -g Tests/sanitizers/tsan_mutex.swift -o /tmp/tsan_mutex && /tmp/tsan_mutex
import Glibc
import Synchronization

final class Box: @unchecked Sendable { var n = 0 }
let counter = Mutex<Int>(0)
let boxed = Mutex<Box>(Box())
var threads: [pthread_t] = []
for _ in 0..<2 {
    var t = pthread_t()
    pthread_create(&t, nil, { _ in
        for _ in 0..<10000 {
            counter.withLock { $0 += 1 }
            boxed.withLock { $0.n += 1 }
        }
        return nil
    }, nil)
    threads.append(t)
}
for t in threads { pthread_join(t, nil) }
print("totals:", counter.withLock { $0 }, boxed.withLock { $0.n }, "(20000 each expected)")
