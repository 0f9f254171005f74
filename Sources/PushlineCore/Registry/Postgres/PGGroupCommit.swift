import Synchronization

/// Group commit on the PostgreSQL pool: calls made at once share one transaction and one COMMIT
/// (or, with `write: false`, one read: `PostgresRegistry`'s device counts of id lists).
///
/// `submit` queues a call; the first call with nothing queued before it pushes one pool job,
/// which takes every call queued when it starts (up to `maxBatch`) and runs `body` on them in
/// its transaction. Calls arriving meanwhile queue the next job, which another pool connection
/// may run at the same time. Each call is answered after its batch's COMMIT (or with the error
/// that failed the batch, when nothing of it was committed). `body` answers each call of its
/// batch, in order; what concerns one call alone must be that call's answer, never a throw (a
/// throw fails every call of the batch). A retried batch (deadlock, a connection lost before
/// COMMIT) runs `body` again on the same calls.
///
/// This is what SQLite's registry does for every write (`RegistryJobRunner`); on PostgreSQL it
/// matters where each transaction waits for a durable commit (`synchronous_commit = on`): one
/// flush for a whole batch instead of one per call, and one hold of a shared row's lock.
final class PGGroupCommit<Input: Sendable, Output: Sendable>: Sendable {
    typealias Answer = Result<Output, CommandError>
    struct Pending: Sendable {
        var input: Input
        var cont: CheckedContinuation<Answer, Never>
    }

    let pool: PGPool
    let maxBatch: Int
    /// Whether a batch runs in a transaction (false: reads, each batch one statement).
    let write: Bool
    let body: @Sendable (PostgresStore, [Input]) throws -> [Answer]
    /// Calls waiting for a pool connection, and whether a batch job is queued in the pool to take them.
    private let queue = Mutex<(pending: [Pending], scheduled: Bool)>(([], false))
    /// Transactions run (tests check that concurrent calls share them).
    let transactions = Atomic<Int>(0)

    init(pool: PGPool, maxBatch: Int, write: Bool = true, _ body: @escaping @Sendable (PostgresStore, [Input]) throws -> [Answer]) {
        self.pool = pool
        self.maxBatch = maxBatch
        self.write = write
        self.body = body
    }

    func submit(_ input: Input) async -> Answer {
        await withCheckedContinuation { cont in
            let first = queue.withLock { q -> Bool in
                q.pending.append(Pending(input: input, cont: cont))
                defer { q.scheduled = true }
                return !q.scheduled
            }
            if first { schedule() }
        }
    }

    private func schedule() {
        let taken = Mutex<[Pending]?>(nil)
        let takeOnce: @Sendable () -> [Pending] = { [self] in
            taken.withLock { t in
                if t == nil { t = self.take() }
                return t ?? []
            }
        }
        let job = PGJob(
            write: write,
            run: { [self] s in
                let batch = takeOnce()
                guard !batch.isEmpty else { return {} }
                self.transactions.add(1, ordering: .relaxed)
                let answers = try self.body(s, batch.map(\.input))
                return {
                    for (k, p) in batch.enumerated() {
                        p.cont.resume(returning: k < answers.count
                            ? answers[k] : .failure(CommandError(.internalError, "call \(k) of a batch was not answered")))
                    }
                }
            },
            fail: { e in for p in takeOnce() { p.cont.resume(returning: .failure(e)) } })
        if !pool.push(job) {
            let all = queue.withLock { q in
                defer { q.pending = []; q.scheduled = false }
                return q.pending
            }
            for p in all { p.cont.resume(returning: .failure(CommandError(.shuttingDown, "the registry is closed"))) }
        }
    }

    /// The calls waiting now (up to `maxBatch`); more left waiting get a batch job of their own.
    private func take() -> [Pending] {
        let (batch, more) = queue.withLock { q -> ([Pending], Bool) in
            let n = min(q.pending.count, maxBatch)
            let batch = Array(q.pending.prefix(n))
            q.pending.removeFirst(n)
            q.scheduled = !q.pending.isEmpty
            return (batch, !q.pending.isEmpty)
        }
        if more { schedule() }
        return batch
    }
}
