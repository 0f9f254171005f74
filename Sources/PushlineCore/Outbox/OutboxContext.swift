import Synchronization

/// What the dispatcher needs of the outbox: the store, and a way to wake the worker when
/// something was accepted. Shared by every dispatcher a reload makes.
public final class OutboxContext: Sendable {
    public let store: any Outbox
    let woken = Atomic<Bool>(false)
    /// The worker's last view of the queue, for `metrics`.
    let lastDepth = Mutex<OutboxDepth?>(nil)

    public init(store: any Outbox) { self.store = store }

    /// Tells the worker to look for work now.
    public func wake() { woken.store(true, ordering: .releasing) }

    /// Sleeps up to `ms`, returning early when woken.
    func sleep(ms: Int64) async {
        var left = max(1, ms)
        while left > 0 {
            if woken.exchange(false, ordering: .acquiringAndReleasing) { return }
            let step = min(left, 10)
            try? await Task.sleep(nanoseconds: UInt64(step) * 1_000_000)
            left -= step
        }
    }
}
