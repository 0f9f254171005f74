import CCurl
import CPushlineShims
import Glibc
import Synchronization

/// One request waiting for, or being served by, an event loop.
///
/// A class (immutable, so Sendable) rather than a struct: it is handed through several queues,
/// and copying one reference is cheaper than copying the request's many fields.
final class TransportJob: Sendable {
    let request: HTTPRequest
    /// `https://host[:port]`: the unit of the per-loop stream limit.
    let origin: String
    /// Most transfers of `origin` in flight on this job's loop: the connections the loop may
    /// use for the origin (see `HTTPTransport.route`) times the streams per connection.
    let streamLimit: Int
    /// CLOCK_MONOTONIC nanoseconds after which the request fails with `.timeout`.
    let deadline: UInt64
    /// Called exactly once, on the loop thread (or the enqueuing thread on refusal), with the outcome.
    let complete: @Sendable (Result<HTTPResponse, TransportError>) -> Void
    /// Times this request was sent again after `.connectionLost`.
    let attempts: Int
    /// Sent only when no other request of its origin waits (see `TransportPriority`).
    let background: Bool

    init(
        request: HTTPRequest, origin: String, streamLimit: Int, deadline: UInt64,
        complete: @escaping @Sendable (Result<HTTPResponse, TransportError>) -> Void, attempts: Int = 0,
        background: Bool = TransportPriority.background
    ) {
        self.request = request
        self.origin = origin
        self.streamLimit = streamLimit
        self.deadline = deadline
        self.complete = complete
        self.attempts = attempts
        self.background = background
    }

    /// The same request for its next attempt.
    func retry() -> TransportJob {
        TransportJob(
            request: request, origin: origin, streamLimit: streamLimit, deadline: deadline, complete: complete,
            attempts: attempts + 1, background: background)
    }
}

/// Requests made in `TransportPriority.$background.withValue(true) { ... }` (the outbox's large
/// batches) wait in their origin's queue behind every other request: a synchronous send, or a
/// small job accepted while a million-device job keeps thousands queued, takes the next free
/// stream instead of waiting for that backlog. (Read where the request is queued, in the
/// caller's task.)
public enum TransportPriority {
    @TaskLocal public static var background = false
}

/// State shared between callers and one loop thread, always accessed under the mutex.
struct LoopShared {
    var queue: [TransportJob] = []
    var closed = false
    var closedReason = "transport shut down"
    /// The loop is (about to be) blocked in curl_multi_poll and needs a wakeup to see `queue`.
    var sleeping = false
    /// A wakeup was sent since the loop last looked at `queue`.
    var wakeSent = false
    /// Connection pools retired since the loop last looked (`HTTPTransport.retireConnectionPool`).
    var retired: [UInt32] = []
}

/// The Sendable side of one event loop: its queue and counters.
final class LoopHandle: Sendable {
    let state = Mutex(LoopShared())
    /// The loop's wake-up eventfd (non-blocking; -1 if it could not be made), polled with the
    /// multi handle's sockets (an extra fd of curl_multi_poll): one write wakes the loop, one read
    /// drains it (curl_multi_wakeup's socketpair took a send and two recvs). It lives as long as
    /// this handle, so no caller ever touches the multi handle.
    let wakeFD: Int32
    /// errno of the failed eventfd() when `wakeFD` is -1.
    let wakeErrno: Int32
    let maxOutstanding: Int
    /// Accepted jobs not yet finished; decremented before a job's continuation is resumed, so a
    /// caller that got its result can always submit again.
    let outstanding = Atomic<Int>(0)
    let submitted = Atomic<Int>(0)
    let completed = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let retries = Atomic<Int>(0)
    /// Complete responses the server followed with RST_STREAM(NO_ERROR) before the request body was sent.
    let earlyResponses = Atomic<Int>(0)
    let connections = Atomic<Int>(0)
    /// See `TransportStats.restarted` and `TransportStats.expiredInFlight`.
    let restarted = Atomic<Int>(0)
    let expiredInFlight = Atomic<Int>(0)
    /// See `TransportStats.nudged` and `TransportStats.earlyAnswers`.
    let nudged = Atomic<Int>(0)
    let earlyAnswers = Atomic<Int>(0)
    /// Connections open now, by origin (`ConnectionLedger`).
    let openConnections = Mutex<[String: Int]>([:])
    /// Transfers attached to the multi handle now (HTTP/2 streams open or opening), by origin;
    /// published by the loop after each pass that started or finished one.
    let streams = Mutex<[String: Int]>([:])

    init(maxOutstanding: Int) {
        self.maxOutstanding = maxOutstanding
        wakeFD = pl_eventfd()
        wakeErrno = wakeFD < 0 ? pl_errno() : 0
    }

    deinit {
        if wakeFD >= 0 { _ = Glibc.close(wakeFD) }  // Nothing to do if close fails at teardown.
    }

    /// Wakes the loop (a write to its eventfd). If the write fails the loop still looks within its poll timeout.
    private func wake() {
        if wakeFD >= 0 { pl_eventfd_signal(wakeFD) }
    }

    /// Queues jobs for the loop under one lock (a whole `HTTPTransport.performAll` batch, or
    /// one request); those over the outstanding limit, or all of them if the loop is closed,
    /// fail at once with `.unavailable`.
    func enqueue(_ jobs: [TransportJob]) {
        var refused: [TransportJob] = []
        var reason = ""
        var mustWake = false
        state.withLock { s in
            if s.closed {
                refused = jobs
                reason = s.closedReason
                return
            }
            let room = max(0, maxOutstanding - outstanding.load(ordering: .relaxed))
            let taken = min(room, jobs.count)
            if taken < jobs.count {
                refused = Array(jobs[taken...])
                reason = "transport over its limit of \(maxOutstanding) outstanding requests per thread"
            }
            guard taken > 0 else { return }
            outstanding.add(taken, ordering: .relaxed)
            s.queue.append(contentsOf: jobs[..<taken])
            if s.sleeping, !s.wakeSent {
                s.wakeSent = true
                mustWake = true
            }
        }
        // Written after the lock: written under it, the woken loop (and any other submitter)
        // found the lock held through the write syscall and spun on it (Mutex.lockSlow was 4.6%
        // of the daemon's CPU in 32-client single sends). A write landing after the loop has
        // already taken the queue only makes its poll return once more, which the loop answers
        // without a pass (see `EventLoop.pollUntilWork`).
        if mustWake { wake() }
        submitted.add(jobs.count - refused.count, ordering: .relaxed)
        for job in refused { job.complete(.failure(TransportError(.unavailable, reason))) }
    }

    /// Tells the loop that `pool` is retired (see `EventLoop.retire`).
    ///
    /// Always wakes the loop (rare, so cheap): a loop about to poll only checks `queue`, and a
    /// wakeup sent before it polls makes that poll return at once. The loop must see the retired
    /// pool before the pool's transfers in flight end.
    func retire(_ pool: UInt32) {
        state.withLock { s in s.retired.append(pool) }
        wake()
    }

    /// Asks the loop to stop; it fails everything it holds with `.unavailable`.
    func close() {
        state.withLock { s in s.closed = true }
        wake()  // If it fails the loop still sees `closed` within 1 s.
    }

    /// The loop could not start: refuses new jobs and fails the queued ones with `reason`.
    func markDead(_ reason: String) {
        let jobs = state.withLock { s -> [TransportJob] in
            s.closed = true
            s.closedReason = reason
            let q = s.queue
            s.queue = []
            return q
        }
        for job in jobs {
            failed.add(1, ordering: .relaxed)
            outstanding.subtract(1, ordering: .relaxed)
            job.complete(.failure(TransportError(.unavailable, reason)))
        }
    }
}

/// Requests of one origin waiting for a free stream slot in one loop.
final class OriginQueue {
    var inFlight = 0
    /// Most transfers in flight: the `streamLimit` of the latest job queued.
    var limit = 1
    /// Sent again after `.connectionLost`: served before `jobs`.
    var retried: [TransportJob] = []
    var jobs = Lane()
    /// Background requests (`TransportPriority`): served after `jobs`, and only while fewer
    /// than nine tenths of `limit` are in flight (see `pop`).
    var background = Lane()

    var count: Int { jobs.count + background.count + retried.count }

    func push(_ job: TransportJob) {
        if job.background { background.push(job) } else { jobs.push(job) }
    }

    /// The next request to start; `draining`: any request, whatever is in flight (teardown).
    func pop(draining: Bool = false) -> TransportJob? {
        if let job = retried.popLast() { return job }
        if let job = jobs.pop() { return job }
        // Background requests leave a tenth of the streams free: a request of another lane
        // then starts at once instead of waiting for a background one to end (against a
        // provider that answers slowly, streams freed in waves a second or more apart and a
        // small outbox job accepted during a large one waited for the next wave: 0.35-0.9 s).
        return draining || inFlight < limit - limit / 10 ? background.pop() : nil
    }

    /// Removes and returns the jobs whose deadline is at or before `now`.
    func takeExpired(now: UInt64) -> [TransportJob] {
        var expired: [TransportJob] = []
        retried.removeAll { job in
            if job.deadline <= now { expired.append(job); return true }
            return false
        }
        jobs.takeExpired(now: now, into: &expired)
        background.takeExpired(now: now, into: &expired)
        return expired
    }

    /// Jobs in the order they were queued.
    struct Lane {
        var jobs: [TransportJob?] = []
        var head = 0

        var count: Int { jobs.count - head }

        mutating func push(_ job: TransportJob) { jobs.append(job) }

        mutating func pop() -> TransportJob? {
            guard head < jobs.count else { return nil }
            let job = jobs[head]
            jobs[head] = nil
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: jobs.count <= 4096)
                head = 0
            } else if head >= 1024, head * 2 >= jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            return job
        }

        mutating func takeExpired(now: UInt64, into expired: inout [TransportJob]) {
            let before = expired.count
            var i = head
            while i < jobs.count {
                if let job = jobs[i], job.deadline <= now {
                    expired.append(job)
                    jobs[i] = nil
                }
                i += 1
            }
            if expired.count > before {
                jobs = jobs[head...].filter { $0 != nil }
                head = 0
            }
        }
    }
}

/// One libcurl multi handle; confined to its loop thread.
final class CurlMulti {
    let raw: UnsafeMutableRawPointer
    /// Outlives curl_multi_cleanup (a stored property, released after `deinit`'s body), which
    /// closes cached connections through the ledger's close callback.
    let ledger: ConnectionLedger

    init(options: TransportOptions, ledger: ConnectionLedger) throws(TransportError) {
        self.ledger = ledger
        guard let m = curl_multi_init() else {
            throw TransportError(.unavailable, "curl_multi_init failed")
        }
        raw = m
        try set(CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX), "CURLMOPT_PIPELINING")
        try set(CURLMOPT_MAX_HOST_CONNECTIONS, options.maxConnectionsPerHost, "CURLMOPT_MAX_HOST_CONNECTIONS")
        try set(CURLMOPT_MAX_CONCURRENT_STREAMS, options.maxConcurrentStreams, "CURLMOPT_MAX_CONCURRENT_STREAMS")
        // Room in the connection cache for a few origins' connections.
        try set(CURLMOPT_MAXCONNECTS, max(16, options.maxConnectionsPerHost * 8), "CURLMOPT_MAXCONNECTS")
    }

    private func set(_ option: CURLMoption, _ value: Int, _ name: String) throws(TransportError) {
        let rc = pl_curl_multi_setopt_long(raw, option, value)
        if rc != CURLM_OK {
            throw TransportError(.unavailable, "curl_multi_setopt(\(name)) failed: \(multiMessage(rc))")
        }
    }

    deinit {
        _ = curl_multi_cleanup(raw)  // Only fails on a bad handle, which `raw` cannot be.
    }
}

func multiMessage(_ code: CURLMcode) -> String {
    if let text = curl_multi_strerror(code) { return String(cString: text) }
    return "CURLMcode \(code.rawValue)"
}

/// The event loop of one thread: owns a multi handle and its easy handles.
///
/// Not Sendable: created and run on its own thread only.
final class EventLoop {
    private let handle: LoopHandle
    private let options: TransportOptions
    private let multi: CurlMulti
    /// Transfers in flight; a transfer knows its slot here.
    private var active: [Transfer] = []
    /// Reset easy handles ready for reuse.
    private var idle: [Transfer] = []
    private var origins: [String: OriginQueue] = [:]
    /// Jobs waiting in `origins`.
    private var queued = 0
    private var nextScan: UInt64 = 0
    private var incoming: [TransportJob] = []
    /// Responses that came before their request body was sent (see `settleEarlyAnswers`).
    private let pass = LoopPass()
    private var earlyAnswered: [Transfer] = []
    /// Finished transfers of one pass (reused buffer).
    private var done: [(UnsafeMutableRawPointer, CURLcode)] = []

    /// How often queued jobs are checked against their deadline.
    private static let scanIntervalNanos: UInt64 = 20_000_000
    /// Idle easy handles kept once the loop is quiet.
    private static let keepIdle = 32
    /// How long the loop must have had nothing to do before it frees surplus handles.
    private static let quietNanos: UInt64 = 2_000_000_000
    /// When the loop last had transfers in flight or queued.
    private var lastBusy: UInt64 = 0
    /// When a transfer last finished, and when `watchActive` runs next.
    private var lastFinish: UInt64 = 0
    private var nextWatch: UInt64 = 0
    /// How often transfers in flight are checked (`watchActive`).
    private static let watchIntervalNanos: UInt64 = 250_000_000
    /// How long nothing must have finished before a transfer still waiting for a connection is restarted.
    static let stallNanos: UInt64 = 2_000_000_000
    /// How long after its header block a response libcurl has not ended is nudged (`watchActive`).
    static let nudgeNanos: UInt64 = 100_000_000
    /// How long after its deadline the loop ends a transfer libcurl has not ended.
    static let deadlineGraceNanos: UInt64 = 1_000_000_000

    init(handle: LoopHandle, options: TransportOptions) throws(TransportError) {
        self.handle = handle
        self.options = options
        guard handle.wakeFD >= 0 else {
            throw TransportError(.unavailable, "cannot create the loop's eventfd: \(String(cString: strerror(handle.wakeErrno)))")
        }
        self.multi = try CurlMulti(options: options, ledger: ConnectionLedger(handle: handle))
    }

    /// Runs until the handle is closed, then fails whatever is left with `.unavailable`.
    func run() {
        incoming.reserveCapacity(256)
        while true {
            let (closed, retired) = handle.state.withLock { s -> (Bool, [UInt32]) in
                swap(&incoming, &s.queue)
                s.sleeping = false
                s.wakeSent = false
                let r = s.retired
                if !r.isEmpty { s.retired = [] }
                return (s.closed, r)
            }
            if !retired.isEmpty { retire(retired) }
            if closed {
                teardown()
                return
            }
            for job in incoming { enqueueLocal(job) }
            incoming.removeAll(keepingCapacity: true)

            startQueued()
            var running: Int32 = 0
            pass.number &+= 1
            let rc = curl_multi_perform(multi.raw, &running)
            if rc != CURLM_OK {
                failAllActive(TransportError(.other, "curl_multi_perform failed: \(multiMessage(rc))"))
            }
            let finishedAny = readMessages()
            if !pass.earlyAnswers.isEmpty || !earlyAnswered.isEmpty { settleEarlyAnswers() }

            let now = monotonicNanos()
            if finishedAny { lastFinish = now }
            if !active.isEmpty, now >= nextWatch {
                watchActive(now: now)
                nextWatch = now &+ Self.watchIntervalNanos
            }
            if queued > 0, now >= nextScan {
                expireQueued(now: now)
                nextScan = now &+ Self.scanIntervalNanos
            }
            if finishedAny && queued > 0 { continue }  // Freed slots: start more before sleeping.
            if !active.isEmpty || queued > 0 {
                lastBusy = now
            } else if now &- lastBusy >= Self.quietNanos && (!origins.isEmpty || idle.count > Self.keepIdle) {
                // Quiet for a while after a burst (not just between two batches): drop the origin
                // queues (no transfer refers to them), free most easy handles (tens of KiB each)
                // and give the memory back to the system (the daemon's idle RSS budget is small).
                origins.removeAll()
                if idle.count > Self.keepIdle {
                    idle.removeLast(idle.count - Self.keepIdle)
                    _ = pl_malloc_trim()  // Returns whether memory was released; nothing to check.
                }
            }
            if streamsChanged { publishStreams() }
            // curl_multi_poll also returns at libcurl's own next timeout (request deadlines etc.).
            // With transfers in flight, `watchActive` must run on time even if nothing else wakes the loop.
            let timeout: Int32 = queued > 0 ? 20 : active.isEmpty ? 1000 : Int32(Self.watchIntervalNanos / 1_000_000)
            let mustPoll = handle.state.withLock { s -> Bool in
                if s.queue.isEmpty && !s.closed {
                    s.sleeping = true
                    return true
                }
                return false
            }
            if mustPoll { pollUntilWork(timeout: timeout) }
        }
    }

    /// Polls libcurl's sockets and the wake-up eventfd until something needs a pass: a socket
    /// event, libcurl's timer or the poll timeout, or a wake-up that finds work queued.
    ///
    /// Submitters write the eventfd after releasing the queue lock, so a write can land after
    /// the loop has taken the queue it announced: the poll then returns for the eventfd alone
    /// with nothing queued. Such a wake-up is drained and the loop polls again, without a pass
    /// of curl_multi_perform over every transfer. `wakeSent` is cleared there, under the lock,
    /// only when the queue is empty, so a job queued meanwhile is never left without a wake-up.
    /// (Skipping curl_multi_perform is safe: had libcurl's own timer expired too, the next
    /// curl_multi_poll, whose timeout it bounds, returns at once without the eventfd.)
    private func pollUntilWork(timeout: Int32) {
        while true {
            var fds: Int32 = 0
            var wake = curl_waitfd(fd: handle.wakeFD, events: Int16(CURL_WAIT_POLLIN), revents: 0)
            let prc = curl_multi_poll(multi.raw, &wake, 1, timeout, &fds)
            if wake.revents != 0 { pl_eventfd_drain(handle.wakeFD) }
            if prc != CURLM_OK {
                failAllActive(TransportError(.other, "curl_multi_poll failed: \(multiMessage(prc))"))
                usleep(1000)  // Do not spin if polling keeps failing.
                return
            }
            guard wake.revents != 0 && fds == 1 else { return }
            let nothingNew = handle.state.withLock { s -> Bool in
                guard s.queue.isEmpty && !s.closed && s.retired.isEmpty else { return false }
                s.wakeSent = false  // Still `sleeping`: the next submitter writes again.
                return true
            }
            if !nothingNew { return }
        }
    }

    /// A transfer was attached or detached since `publishStreams` last ran.
    private var streamsChanged = false

    /// Publishes the transfers in flight per origin (`LoopHandle.streams`) for metrics.
    private func publishStreams() {
        streamsChanged = false
        var now: [String: Int] = [:]
        for (origin, q) in origins where q.inFlight > 0 { now[origin] = q.inFlight }
        handle.streams.withLock { $0 = now }
    }

    /// Connection pools retired (`HTTPTransport.retireConnectionPool`); never reused as ids.
    private var retiredPools: Set<UInt32> = []

    /// Retires pools: the transfers of theirs in flight (and any started later) close their
    /// connection when they end, so those connections end with their last transfer. A retired
    /// pool's connection that is idle already is never used again (its pool gets no new
    /// requests): libcurl 7.88 has no call to close one idle connection, and drops it once it
    /// has been idle `idleTimeoutSeconds` (checked when a later transfer looks for a connection).
    private func retire(_ pools: [UInt32]) {
        if retiredPools.count > 4096 { retiredPools.removeAll() }  // Old pools' requests are long gone.
        retiredPools.formUnion(pools)
        for transfer in active where transfer.job != nil && retiredPools.contains(transfer.pool) {
            _ = transfer.forbidReuse()
        }
    }

    private func enqueueLocal(_ job: TransportJob) {
        let q: OriginQueue
        if let existing = origins[job.origin] {
            q = existing
        } else {
            q = OriginQueue()
            origins[job.origin] = q
        }
        q.limit = job.streamLimit
        q.push(job)
        queued += 1
    }

    private func startQueued() {
        guard queued > 0 else { return }
        for q in origins.values where q.inFlight < q.limit && q.count > 0 {
            while q.inFlight < q.limit, let job = q.pop() {
                queued -= 1
                start(job, q)
            }
        }
    }

    private func start(_ job: TransportJob, _ q: OriginQueue) {
        let now = monotonicNanos()
        guard now < job.deadline else {
            fail(job, TransportError(.timeout, "deadline of \(job.request.timeoutMs) ms passed while queued"))
            return
        }
        let remainingMs = Int((job.deadline - now + 999_999) / 1_000_000)
        let transfer: Transfer
        if let t = idle.popLast() {
            transfer = t
        } else {
            do {
                transfer = try Transfer(ledger: multi.ledger, pass: pass)
            } catch {
                fail(job, error)
                return
            }
        }
        do {
            try transfer.prepare(job, remainingMs: remainingMs, options: options)
        } catch {
            transfer.clear()
            idle.append(transfer)
            fail(job, error)
            return
        }
        let rc = curl_multi_add_handle(multi.raw, transfer.easy)
        guard rc == CURLM_OK else {
            transfer.clear()
            idle.append(transfer)
            fail(job, TransportError(.other, "curl_multi_add_handle failed: \(multiMessage(rc))"))
            return
        }
        if job.request.connectionPool != 0 && retiredPools.contains(job.request.connectionPool) {
            _ = transfer.forbidReuse()  // Late request of a retired pool: its connection closes after it.
        }
        transfer.queue = q
        transfer.attachedAt = now
        transfer.slot = active.count
        active.append(transfer)
        q.inFlight += 1
        streamsChanged = true
    }

    /// Handles finished transfers; returns whether any finished.
    ///
    /// All messages are read before any handle is removed: curl_multi_remove_handle scans the
    /// list of unread messages, so removing while reading would cost O(n^2) per batch.
    private func readMessages() -> Bool {
        var left: Int32 = 0
        while let msg = curl_multi_info_read(multi.raw, &left) {
            guard msg.pointee.msg == CURLMSG_DONE, let easy = msg.pointee.easy_handle else { continue }
            done.append((easy, msg.pointee.data.result))
        }
        guard !done.isEmpty else { return false }
        for (easy, code) in done {
            var priv: UnsafeMutableRawPointer?
            guard pl_curl_easy_getinfo_pointer(easy, CURLINFO_PRIVATE, &priv) == CURLE_OK, let priv else {
                _ = curl_multi_remove_handle(multi.raw, easy)  // Not ours: cannot happen, but do not spin on it.
                continue
            }
            finish(Unmanaged<Transfer>.fromOpaque(priv).takeUnretainedValue(), code)
        }
        done.removeAll(keepingCapacity: true)
        return true
    }

    /// Makes libcurl look again at the transfers whose response came before it had sent their
    /// request body, once the body is sent.
    ///
    /// libcurl 7.88 sends a POST body in DATA frames of its own, after the request's HEADERS and
    /// after it has read the socket (http.c: "In HTTP2, we send request body in DATA frame
    /// regardless of its size"; Curl_readwrite reads before it uploads). On loopback, or when
    /// the loop is slow to come back to a transfer, a HEADERS-only answer with END_STREAM (APNs,
    /// WebPush, WNS; nginx's `return 200;`) is read first: the stream is half-closed until
    /// libcurl's DATA frame with END_STREAM goes out, and nghttp2 closes it inside that send.
    /// http2.c `on_stream_close` marks a closed stream for reading again ("drain") only when it
    /// is not the transfer being served, and here it is: the transfer is left with its stream
    /// closed, its response complete and nothing telling libcurl to look at it again. It ends
    /// only if its socket happens to be readable on its turn, so after the last answers of a
    /// burst it waited for its timeout: 1-3 of a 100,000-device send failed after 30 s
    /// ("Operation timed out ... with 0 out of 0 bytes received; ... status 200 at 0 ms, header
    /// block complete, 0 body bytes").
    ///
    /// So once such a transfer's body is sent, it is nudged (`Transfer.nudge`): libcurl reads it
    /// again on its next pass and ends it. (Removing the transfer from libcurl and delivering
    /// the response here would not do: libcurl then resets the closed stream with RST_STREAM,
    /// a frame RFC 9113 section 5.1 forbids on a closed stream, and the test server answered
    /// it by closing the connection.) The nudge reaches the transfer only if it is the first of
    /// its connection that libcurl serves in that pass; if not, `watchActive` nudges again after
    /// 100 ms. Transfers still sending their body are looked at again after the next pass.
    private func settleEarlyAnswers() {
        earlyAnswered.append(contentsOf: pass.earlyAnswers)
        pass.earlyAnswers.removeAll(keepingCapacity: true)
        var waiting = 0
        for transfer in earlyAnswered {
            guard transfer.job != nil, transfer.answeredBeforeBodySent else { continue }  // Ended meanwhile.
            guard transfer.bodySent else {
                earlyAnswered[waiting] = transfer
                waiting += 1
                continue
            }
            if transfer.nudge() { handle.earlyAnswers.add(1, ordering: .relaxed) }
        }
        earlyAnswered.removeLast(earlyAnswered.count - waiting)
    }

    /// Removes `transfer` from the multi handle and from `active`, returning its job.
    private func detach(_ transfer: Transfer) -> TransportJob? {
        // Only fails for a handle not in this multi, which an active transfer always is.
        _ = curl_multi_remove_handle(multi.raw, transfer.easy)
        var connects = 0
        if pl_curl_easy_getinfo_long(transfer.easy, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK, connects > 0 {
            handle.connections.add(connects, ordering: .relaxed)
        }
        let slot = transfer.slot
        if slot >= 0 && slot < active.count && active[slot] === transfer {
            let last = active.removeLast()
            if slot < active.count {
                active[slot] = last
                last.slot = slot
            }
        }
        transfer.slot = -1
        transfer.queue?.inFlight -= 1
        streamsChanged = true
        transfer.queue = nil
        let job = transfer.job
        transfer.job = nil
        return job
    }

    private func finish(_ transfer: Transfer, _ code: CURLcode) {
        guard let job = detach(transfer) else {
            transfer.clear()
            idle.append(transfer)
            return
        }
        // A complete response followed by RST_STREAM(NO_ERROR) is a success (see completedBeforeUpload).
        if code == CURLE_OK || transfer.completedBeforeUpload(code) {
            if code != CURLE_OK { handle.earlyResponses.add(1, ordering: .relaxed) }
            var status = 0
            let src = pl_curl_easy_getinfo_long(transfer.easy, CURLINFO_RESPONSE_CODE, &status)
            let response = HTTPResponse(
                status: src == CURLE_OK ? status : transfer.status, rawHeaders: transfer.headers, body: transfer.body)
            transfer.clear()
            idle.append(transfer)
            handle.completed.add(1, ordering: .relaxed)
            handle.outstanding.subtract(1, ordering: .relaxed)
            job.complete(.success(response))
            return
        }
        let error = transfer.error(for: code, job: job)
        let gotResponse = transfer.gotResponse
        transfer.clear()
        idle.append(transfer)
        if error.kind == .connectionLost, !gotResponse, job.attempts < options.maxRetries,
            monotonicNanos() < job.deadline
        {
            handle.retries.add(1, ordering: .relaxed)
            let q = origins[job.origin] ?? OriginQueue()
            origins[job.origin] = q
            q.retried.append(job.retry())
            queued += 1
            return
        }
        fail(job, error)
    }

    /// Makes sure no transfer in flight outlives its deadline, and restarts transfers libcurl
    /// forgot while they waited for a connection.
    ///
    /// libcurl 7.88 parks a transfer that finds no usable connection (CURLMOPT_MAX_HOST_CONNECTIONS
    /// reached and the connection full, or marked for closing after a GOAWAY while it still
    /// finishes its streams) in its PENDING state, and does not check CURLOPT_TIMEOUT_MS there:
    /// measured, a 1 s request parked behind a held stream ended only when that one did, after
    /// 60 s (TransportTests `requestWaitingForAConnectionEndsAtItsTimeout`). A parked transfer is
    /// moved on only when another transfer of the multi handle ends (multi.c
    /// `process_pending_handles`, one per ending transfer, called from `multi_done` before the
    /// ending transfer leaves its connection); if that wakeup finds no room and nothing else ends,
    /// nothing wakes it again (the likely stall after GOAWAY; not caught in the act). So here:
    /// a transfer that has neither resolved a host nor sent anything while no transfer of the
    /// loop finished for `stallNanos` is removed and added again (it then looks for a connection
    /// afresh), and any transfer still in flight `deadlineGraceNanos` after its deadline is ended
    /// with `.timeout`.
    private func watchActive(now: UInt64) {
        let stalled = now &- lastFinish >= Self.stallNanos
        var i = 0
        while i < active.count {
            let transfer = active[i]
            guard let job = transfer.job else {
                i += 1
                continue
            }
            if now >= job.deadline &+ Self.deadlineGraceNanos {
                let progress = transfer.progressDescription
                _ = detach(transfer)  // Moves the last transfer into slot i.
                transfer.clear()
                idle.append(transfer)
                handle.expiredInFlight.add(1, ordering: .relaxed)
                fail(job, TransportError(.timeout, "no response within \(job.request.timeoutMs) ms (libcurl had not ended the transfer: \(progress))"))
                continue
            }
            if transfer.headersDone, pass.number > transfer.headersDonePass &+ 1,
                now &- transfer.headersDoneAt >= Self.nudgeNanos << UInt64(min(transfer.nudges, 3))
            {
                // A response whose header block arrived at least two passes and 100 ms ago
                // (doubling per nudge) that libcurl has not ended: libcurl misses a stream's end
                // in the case `settleEarlyAnswers` describes, and may in others not found yet.
                // It then looks at the transfer again only when its socket happens to be
                // readable on the transfer's turn. A nudge makes libcurl read the transfer again
                // (`Transfer.nudge`); a transfer still receiving its body just goes on.
                if transfer.nudge() { handle.nudged.add(1, ordering: .relaxed) }
            }
            if stalled, now &- transfer.attachedAt >= Self.stallNanos << UInt64(min(transfer.restarts, 4)),
                transfer.waitingForConnection
            {
                if !restart(transfer, job, now: now) { continue }
            }
            i += 1
        }
    }

    /// Removes `transfer` from the multi handle and adds it again; returns false if that failed
    /// (the job has then failed and the transfer left `active`).
    private func restart(_ transfer: Transfer, _ job: TransportJob, now: UInt64) -> Bool {
        _ = curl_multi_remove_handle(multi.raw, transfer.easy)  // Only fails for a handle not in the multi.
        let remainingMs = Int((job.deadline &- now + 999_999) / 1_000_000)
        var rc = CURLM_OK
        let src = pl_curl_easy_setopt_long(transfer.easy, CURLOPT_TIMEOUT_MS, max(1, remainingMs))
        if src == CURLE_OK { rc = curl_multi_add_handle(multi.raw, transfer.easy) }
        guard src == CURLE_OK, rc == CURLM_OK else {
            _ = detach(transfer)
            transfer.clear()
            idle.append(transfer)
            let why = src != CURLE_OK ? "curl_easy_setopt(CURLOPT_TIMEOUT_MS) failed: \(curlMessage(src))" : "curl_multi_add_handle failed: \(multiMessage(rc))"
            fail(job, TransportError(.other, why))
            return false
        }
        transfer.restarts += 1
        transfer.attachedAt = now
        handle.restarted.add(1, ordering: .relaxed)
        return true
    }

    private func fail(_ job: TransportJob, _ error: TransportError) {
        handle.failed.add(1, ordering: .relaxed)
        handle.outstanding.subtract(1, ordering: .relaxed)
        job.complete(.failure(error))
    }

    private func failAllActive(_ error: TransportError) {
        for transfer in active {
            if let job = detachForFailure(transfer) { fail(job, error) }
        }
        active.removeAll()
    }

    /// Like `detach` but leaves `active` to the caller (which clears it).
    private func detachForFailure(_ transfer: Transfer) -> TransportJob? {
        _ = curl_multi_remove_handle(multi.raw, transfer.easy)
        transfer.queue?.inFlight -= 1
        streamsChanged = true
        transfer.queue = nil
        transfer.slot = -1
        let job = transfer.job
        transfer.job = nil
        transfer.clear()
        idle.append(transfer)
        return job
    }

    private func expireQueued(now: UInt64) {
        for q in origins.values where q.count > 0 {
            let expired = q.takeExpired(now: now)
            queued -= expired.count
            for job in expired {
                fail(job, TransportError(.timeout, "deadline of \(job.request.timeoutMs) ms passed while queued"))
            }
        }
    }

    /// Fails every job (queued, local or in flight) with `.unavailable`.
    private func teardown() {
        let (left, reason) = handle.state.withLock { s -> ([TransportJob], String) in
            s.closed = true
            let q = s.queue
            s.queue = []
            return (q, s.closedReason)
        }
        let error = TransportError(.unavailable, reason)
        failAllActive(error)
        for job in incoming + left { fail(job, error) }
        incoming.removeAll()
        for q in origins.values {
            while let job = q.pop(draining: true) { fail(job, error) }
        }
        origins.removeAll()
        queued = 0
        idle.removeAll()  // Easy handles are freed before the multi handle (freed with `self`).
    }
}
