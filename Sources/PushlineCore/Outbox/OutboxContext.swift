import Synchronization

/// What the dispatcher needs of the outbox: the store, and a way to wake the worker when
/// something was accepted. Shared by every dispatcher a reload makes.
public final class OutboxContext: Sendable {
    public let store: any Outbox
    /// Moves on with every `wake()`; the worker waits on it instead of polling (issue 13: an
    /// idle daemon polled every 10 ms, 600 context switches a second with nothing to do).
    let signal = EventSignal()
    /// The worker's last view of the queue, for `metrics`.
    let lastDepth = Mutex<OutboxDepth?>(nil)

    public init(store: any Outbox) { self.store = store }

    /// Tells the worker to look for work now (an accept, a NOTIFY or the `poll_ms` tick, a
    /// cancel, SIGTERM).
    public func wake() { signal.notify() }

    /// Read before looking for work; a `wake()` after it ends the next `sleep` at once.
    var generation: UInt64 { signal.generation }

    /// Sleeps up to `ms` (one timer, no polling), returning early once `wake()` was called
    /// after `generation` read `seen`.
    func sleep(ms: Int64, seen: UInt64) async {
        await signal.wait(seen: seen, until: .now + .milliseconds(max(1, ms)))
    }
}
