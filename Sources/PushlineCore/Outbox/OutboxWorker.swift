import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Delivers the outbox's jobs in the background (issue 13, "Delivery").
///
/// One loop: due jobs have their target resolved one chunk per job per round (a job to a
/// million devices is read `chunkSize` devices at a time, a small job accepted meanwhile gets
/// its chunk in the next round); pending deliveries are claimed under a lease, a batch per job,
/// least recently served job first, and sent through the dispatcher's `deliver` (the same
/// providers and transport as synchronous sends) with up to `maxInFlight` batches on the wire.
/// A batch's results are committed together, fenced by the claim. Transient failures are
/// rescheduled (jittered exponential backoff, Retry-After honoured) until the notification's
/// deadline; an app whose provider fails therefore only reschedules its own rows.
public final class OutboxWorker: Sendable {
    let context: OutboxContext
    let dispatcher: @Sendable () -> Dispatcher
    let logger: Logger
    /// This process's lease owner name.
    public let owner: String
    let stopping = Atomic<Bool>(false)
    let finished = Atomic<Bool>(false)
    let inFlight = Atomic<Int>(0)
    let leaseMs: Int64

    /// Deliveries claimed per job per round.
    static let batch = 1000
    /// Jobs served per round.
    static let jobsPerRound = 1000
    /// Jobs whose targets are resolved (a chunk each) per round.
    static let resolvePerRound = 256
    /// Devices resolved per round, all jobs together (bounds the worker's memory).
    static let resolveBudget = 20_000
    /// Devices resolved per job per round.
    static let resolveChunk = 5000

    public init(context: OutboxContext, dispatcher: @escaping @Sendable () -> Dispatcher, logger: Logger, leaseMs: Int) {
        self.context = context
        self.dispatcher = dispatcher
        self.logger = logger
        self.leaseMs = Int64(leaseMs)
        owner = "pid\(getpid())-\(Dispatcher.randomTag())"
    }

    /// Starts the loop in a task.
    public func start() {
        Task.detached { [self] in
            await self.run()
            self.finished.store(true, ordering: .releasing)
        }
    }

    /// Stops claiming new work; in-flight batches finish (their results are committed).
    public func beginStop() {
        stopping.store(true, ordering: .releasing)
        context.wake()
    }

    /// Blocks the calling thread until the loop ended or `timeoutMs` passed; true if it ended.
    public func waitStopped(timeoutMs: Int) -> Bool {
        beginStop()
        var left = timeoutMs
        while !finished.load(ordering: .acquiring) && left > 0 {
            usleep(10_000)
            left -= 10
        }
        return finished.load(ordering: .acquiring)
    }

    var store: any Outbox { context.store }

    func run() async {
        do throws(CommandError) {
            let n = try await store.recover(owner: owner, now: nowMillis())
            if n > 0 { logger.notice("outbox: resumed deliveries leased by a previous process", metadata: ["count": "\(n)"]) }
        } catch {
            logger.error("outbox: recovery failed", metadata: ["error": "\(error.message)"])
        }
        var lastHousekeeping: Int64 = 0
        var notifications: [String: [PushNotification?]] = [:]
        // Child tasks return a delivered batch's job ids, nil for the waker: a task that ends
        // when an accept (or SIGTERM) wakes the loop while batches are on the wire, so a new
        // job is resolved and claimed at once instead of after the next batch ends.
        await withTaskGroup(of: [String]?.self) { group in
            var running = 0
            /// Batches on the wire per job (an extra claim on a wake-up leaves these jobs out).
            var onWire: [String: Int] = [:]
            func landed(_ jobs: [String]) {
                running -= 1
                inFlight.subtract(1, ordering: .relaxed)
                for j in jobs {
                    let left = (onWire[j] ?? 1) - 1
                    onWire[j] = left > 0 ? left : nil
                }
            }
            var waker = false
            var woken = false
            // Idle waits on something due but not claimable (a row leased but not on the wire,
            // after a failed completion) back off from 5 ms up to `maxIdleMs`.
            var pastDueMs: Int64 = 5
            while !stopping.load(ordering: .acquiring) {
                // Read before looking for work: an accept after this ends the idle wait at once.
                let seen = context.generation
                let d = dispatcher()
                let now = nowMillis()
                if now - lastHousekeeping > 2000 {
                    lastHousekeeping = now
                    await housekeeping(d, now: now)
                    if notifications.count > 1000 { notifications.removeAll() }
                }
                var worked = await resolveRound(d, now: now)
                let (limit, extra) = Self.claimLimit(
                    running: running, woken: woken, syncPending: d.pending.load(ordering: .relaxed) > 0, wakeUpsAddBatches: store.wakeUpsAddBatches)
                woken = false
                if running < limit {
                    let claims: [OutboxClaim]
                    do throws(CommandError) {
                        claims = try await store.claim(
                            owner: owner, now: nowMillis(), leaseMs: leaseMs, perJob: extra ? Self.smallClaim : Self.batch, maxJobs: Self.jobsPerRound,
                            maxRows: extra ? Self.extraRows : Self.batch, excluding: extra ? Set(onWire.keys) : [])
                    } catch {
                        logger.error("outbox: claim failed", metadata: ["error": "\(error.message)"])
                        claims = []
                    }
                    if !claims.isEmpty {
                        logger.debug("outbox: claimed", metadata: [
                            "jobs": "\(claims.map { "\($0.job.id.prefix(8)):\($0.deliveries.count)" }.joined(separator: ","))",
                            "running": "\(running)"])
                        var ns: [String: [PushNotification?]] = [:]
                        for c in claims {
                            if notifications[c.job.id] == nil { notifications[c.job.id] = Self.parse(c.job, d) }
                            ns[c.job.id] = notifications[c.job.id] ?? []
                        }
                        running += 1
                        inFlight.add(1, ordering: .relaxed)
                        let ids = claims.map(\.job.id)
                        for j in ids { onWire[j, default: 0] += 1 }
                        group.addTask {
                            await self.deliver(claims, notifications: ns, d)
                            return ids
                        }
                        worked = true
                    }
                }
                if running >= limit || (!worked && running > 0) {
                    if !waker {
                        waker = true
                        group.addTask { await self.waitWoken(seen: seen) }
                    }
                    guard let next = await group.next() else { continue }
                    if let jobs = next {
                        landed(jobs)
                    } else {
                        waker = false
                        woken = true
                    }
                    continue
                }
                if worked {
                    pastDueMs = 5
                    continue
                }
                // Idle: until the next due time (a `send_at`, a retry, a lease of a dead daemon;
                // at most `maxIdleMs`), or until woken (an accept, NOTIFY or the `poll_ms` tick on
                // PostgreSQL, SIGTERM). One timer, no polling.
                var wait = Self.maxIdleMs
                if let due = try? await store.nextDue() {
                    let left = due - nowMillis()
                    if left > 0 {
                        wait = min(wait, left)
                        pastDueMs = 5
                    } else {
                        wait = pastDueMs
                        pastDueMs = min(pastDueMs * 2, Self.maxIdleMs)
                    }
                }
                await context.sleep(ms: wait, seen: seen)
            }
            // SIGTERM: what is on the wire finishes; the rest stays queued (the waker ends too).
            context.wake()
            while let next = await group.next() {
                if let jobs = next { landed(jobs) }
            }
        }
        logger.info("outbox worker stopped", metadata: ["owner": "\(owner)"])
    }

    /// Returns nil once the loop is woken (an accept, SIGTERM) after `generation` read `seen`.
    func waitWoken(seen: UInt64) async -> [String]? {
        while !stopping.load(ordering: .acquiring) && context.generation == seen {
            await context.sleep(ms: 3_600_000, seen: seen)
        }
        return nil
    }

    /// The longest idle wait with nothing due: housekeeping (`depth`, pruning) runs at least
    /// this often while idle.
    static let maxIdleMs: Int64 = 5000

    /// Batches on the wire at once.
    static let maxInFlight = 4
    /// Extra batches of new jobs a wake-up may add beyond the others (see `claimLimit`).
    static let extraBatches = 4
    /// Deliveries in such an extra batch: `smallClaim` of each job, this many in all.
    static let extraRows = 4 * smallClaim

    /// How many batches may be on the wire before this claim, and whether it is an extra claim:
    /// one that leaves out the jobs already on the wire and takes at most `smallClaim`
    /// deliveries of each (`extraRows` in all; small claims go ahead of background requests in
    /// the transport). Synchronous sends go first: while any is in flight, one batch at a time,
    /// else `maxInFlight`. A wake-up (an accept, a cancel, SIGTERM; on PostgreSQL also the NOTIFY
    /// of a commit that made work claimable and the `poll_ms` tick) with every slot taken allows
    /// an extra claim, up to `extraBatches` more: a small job accepted during a large one is
    /// claimed at once, and a new large job starts. Where `Outbox.wakeUpsAddBatches`
    /// (PostgreSQL), a wake-up first adds a batch of anything, up to twice `maxInFlight`.
    ///
    /// Before, wake-ups added batches of anything up to twice `maxInFlight` on both backends,
    /// and nothing more. On PostgreSQL the NOTIFY and tick wake-ups filled every slot with the
    /// large job and a 10-device job accepted then waited for one of its batches to end
    /// (test_outbox.py: 1.0-3.2 s in the fairness test, 20 s and more in
    /// test_small_jobs_claimed_while_the_wire_is_full_of_a_large_one); on SQLite the wake-ups
    /// of 100 accepts put 8 batches of retries on the wire (outbox_bench.py --parts rss-due:
    /// most of the peak heap was the task memory of their requests waiting between in-request
    /// retries).
    static func claimLimit(running: Int, woken: Bool, syncPending: Bool, wakeUpsAddBatches: Bool) -> (limit: Int, excluding: Bool) {
        let base = syncPending ? 1 : maxInFlight
        guard woken && running >= base else { return (base, false) }
        if wakeUpsAddBatches && running < 2 * maxInFlight { return (running + 1, false) }
        let top = wakeUpsAddBatches ? 2 * maxInFlight : base
        if running < top + extraBatches { return (running + 1, true) }
        return (base, false)
    }

    func housekeeping(_ d: Dispatcher, now: Int64) async {
        if let depth = try? await store.depth() { context.lastDepth.withLock { $0 = depth } }
        do throws(CommandError) {
            let n = try await store.prune(finishedBefore: now - d.config.jobRetention * 1000)
            if n > 0 { logger.info("outbox: pruned finished jobs", metadata: ["count": "\(n)"]) }
        } catch {
            logger.warning("outbox: prune failed", metadata: ["error": "\(error.message)"])
        }
    }

    static func parse(_ job: OutboxJob, _ d: Dispatcher) -> [PushNotification?] {
        job.messages.enumerated().map { i, m in
            var a = Arguments(m, prefix: job.indexed ? "messages[\(i)]" : "")
            if Dispatcher.isTopicMessage(m) { return try? d.parseTopic(&a).notification }
            return try? d.parseJob(&a).notification
        }
    }

    // MARK: resolving targets

    /// Where a job's resolution resumes: message `m`, list offset `o` (ids, tokens), or page
    /// part `p` after device id `a` (users, filter).
    struct Cursor {
        var m = 0
        var o = 0
        var p = 0
        var a: Int64 = 0

        init() {}
        init(_ text: String?) {
            guard let text, let v = try? JSONValue.parse(text), let o = v.objectValue else { return }
            m = Int(o["m"]?.intValue ?? 0)
            self.o = Int(o["o"]?.intValue ?? 0)
            p = Int(o["p"]?.intValue ?? 0)
            a = o["a"]?.intValue ?? 0
        }
        var text: String {
            JSONValue.object(["m": .int(Int64(m)), "o": .int(Int64(o)), "p": .int(Int64(p)), "a": .int(a)]).jsonString
        }
    }

    /// Resolves one chunk of each due job that is not fully resolved; true if any was.
    func resolveRound(_ d: Dispatcher, now: Int64) async -> Bool {
        let jobs: [OutboxJob]
        do throws(CommandError) { jobs = try await store.startable(now: now, limit: Self.resolvePerRound) } catch {
            logger.error("outbox: reading jobs failed", metadata: ["error": "\(error.message)"])
            return false
        }
        // Concurrently: the jobs' reads and writes share the registry's batches (one commit for
        // a round of many small jobs instead of one each).
        // Memory: at most `resolveBudget` devices resolved per round (at least one job).
        var budget = Self.resolveBudget
        var chosen: [OutboxJob] = []
        for job in jobs {
            let cost = min(max(job.estimate, 1), Self.resolveChunk)
            if !chosen.isEmpty && cost > budget { continue }
            budget -= cost
            chosen.append(job)
        }
        await withTaskGroup(of: Void.self) { group in
            for job in chosen {
                group.addTask {
                    do throws(CommandError) {
                        try await self.resolveChunk(job, d, now: now)
                    } catch {
                        self.logger.error("outbox: resolving a job's target failed", metadata: ["job": "\(job.id)", "error": "\(error.message)"])
                    }
                }
            }
        }
        return !jobs.isEmpty
    }

    func resolveChunk(_ job: OutboxJob, _ d: Dispatcher, now: Int64) async throws(CommandError) {
        var c = Cursor(job.cursor)
        var rows: [OutboxNewDelivery] = []
        let renderer = Dispatcher.ResultRenderer(done: [], appOf: [:], app: job.app.isEmpty ? nil : job.app)
        func add(_ r: Resolved, message: Int?) {
            for dev in r.devices {
                rows.append(OutboxNewDelivery(message: message, deviceId: dev.id > 0 ? dev.id : nil, raw: dev.id > 0 ? nil : dev, rejected: nil))
            }
            for x in r.rejected {
                var o = renderer.json(x, message: message)
                o["attempts"] = 0
                rows.append(OutboxNewDelivery(message: message, deviceId: x.deviceId, raw: nil, rejected: o))
            }
        }
        /// Reads the next page (up to `room` devices) of a `users`/`filter` target or a topic's
        /// subscribers from the cursor on; true once the target is read to its end.
        func page(_ parts: [DeviceFilter], room: Int, message: Int?) async throws(CommandError) -> Bool {
            guard !parts.isEmpty else { return true }
            var at = PageCursor()
            at.part = c.p
            at.afterId = c.a
            let (ids, next) = try await d.registry.pageIds(parts, from: at, limit: room)
            for id in ids { rows.append(OutboxNewDelivery(message: message, deviceId: id, raw: nil, rejected: nil)) }
            guard let next else { return true }
            c.p = next.part
            c.a = next.afterId
            return false
        }
        while c.m < job.messages.count && rows.count < Self.resolveChunk {
            var a = Arguments(job.messages[c.m], prefix: job.indexed ? "messages[\(c.m)]" : "")
            let message = job.indexed ? c.m : nil
            let target: Target
            var topic: Dispatcher.TopicRequest?
            do throws(CommandError) {
                if Dispatcher.isTopicMessage(job.messages[c.m]) {
                    topic = try d.parseTopic(&a)
                    target = .ids([])
                } else {
                    target = try d.parseJob(&a).target
                }
            } catch {
                logger.error("outbox: a stored message no longer parses", metadata: ["job": "\(job.id)", "error": "\(error.message)"])
                c = Cursor()
                c.m = job.messages.count
                break
            }
            if let t = topic {
                // An async `topic`: Google's topic message first (one delivery; cursor `o` is 1
                // once it is added), then the subscribers, paged as a filter target is.
                if c.o == 0 {
                    c.o = 1
                    if d.providers.provider(app: t.app, platform: .fcm) != nil {
                        let to = t.condition ?? t.topic.map { "/topics/" + $0.name } ?? ""
                        rows.append(OutboxNewDelivery(
                            message: message, deviceId: nil, raw: Device(id: 0, platform: .fcm, app: t.app, registrationId: to), rejected: nil))
                    }
                }
                let room = Self.resolveChunk - rows.count
                if room == 0 { continue }
                // As the synchronous `topic`: no fan-out when no subscriber's provider is configured.
                if try await page(d.pageParts(t.subscribers, reachableOnly: true), room: room, message: message) {
                    c.m += 1
                    c.o = 0
                    c.p = 0
                    c.a = 0
                }
                continue
            }
            let room = Self.resolveChunk - rows.count
            var done = false
            switch target {
            case .ids(let ids):
                let end = min(ids.count, c.o + room)
                add(try await d.resolve(.ids(Array(ids[c.o..<end]))), message: message)
                c.o = end
                done = end == ids.count
            case .tokens(let app, let platform, let tokens):
                let end = min(tokens.count, c.o + room)
                add(try await d.resolve(.tokens(app: app, platform: platform, Array(tokens[c.o..<end]))), message: message)
                c.o = end
                done = end == tokens.count
            case .raw(let app, let platform, let devices):
                let end = min(devices.count, c.o + room)
                add(try await d.resolve(.raw(app: app, platform: platform, Array(devices[c.o..<end]))), message: message)
                c.o = end
                done = end == devices.count
            case .users, .filter:
                guard let f = target.activeFilter else { throw CommandError(.internalError, "outbox: unexpected target") }
                done = try await page(d.pageParts(f), room: room, message: message)
            }
            if done {
                c.m += 1
                c.o = 0
                c.p = 0
                c.a = 0
            }
        }
        let finished = c.m >= job.messages.count
        _ = try await store.appendDeliveries(job: job.id, rows, cursor: finished ? nil : c.text, now: nowMillis())
    }

    // MARK: delivering

    /// Delivers one round's claims (one job each): the small claims together (one `deliver`
    /// for many one-device jobs), each larger one on its own, concurrently (fairness):
    /// - A job's results are committed as soon as its part is answered: a small job claimed
    ///   with a large one's batch does not wait for that batch (the registry's group commit
    ///   still makes concurrent completions one transaction).
    /// - A large claim's requests are background requests (`TransportPriority`): the up to
    ///   `maxInFlight` × `batch` requests the worker keeps outstanding to feed the provider
    ///   connections wait in the transport's queue behind any other request, and take at most
    ///   nine tenths of an origin's streams, so a small job's requests (and synchronous sends)
    ///   start at once instead of waiting for thousands of a large job's, or for one of its
    ///   streams to end. (Before: a 10-device job accepted during a 200,000-device one waited
    ///   4-12 s in the integration test, behind 1,500-3,400 queued requests; then 1.35-1.75 s,
    ///   for a stream against a slow provider; now 0.18-0.34 s.)
    func deliver(_ claims: [OutboxClaim], notifications: [String: [PushNotification?]], _ d: Dispatcher) async {
        let small = claims.filter { $0.deliveries.count <= Self.smallClaim }
        var parts = claims.filter { $0.deliveries.count > Self.smallClaim }.map { [$0] }
        if !small.isEmpty { parts.insert(small, at: 0) }
        await withTaskGroup(of: Void.self) { group in
            for p in parts {
                let background = p.count == 1 && p[0].deliveries.count > Self.smallClaim
                group.addTask {
                    await TransportPriority.$background.withValue(background) {
                        await self.deliverTogether(p, notifications: notifications, d)
                    }
                }
            }
        }
    }

    /// Claims of at most this many deliveries are sent together (see `deliver`).
    static let smallClaim = 50

    /// Delivers claims together: every (job, message) is one `Addressed` of one `deliver`
    /// call (each provider gets all its messages at once, as a `bulk` does), deactivations are
    /// applied once, and each job's results are committed concurrently.
    func deliverTogether(_ claims: [OutboxClaim], notifications: [String: [PushNotification?]], _ d: Dispatcher) async {
        struct Part {
            var claim: Int
            var message: Int
            var rows: [OutboxDelivery]
            /// Google's topic message of an async `topic` (sent with `sendToTopic`).
            var topic = false
        }
        var parts: [Part] = []
        var outcomes = [[OutboxOutcome]](repeating: [], count: claims.count)
        let now0 = nowMillis()
        for (ci, claim) in claims.enumerated() {
            let ns = notifications[claim.job.id] ?? []
            var byMessage: [Int: [OutboxDelivery]] = [:]
            for x in claim.deliveries {
                // An async `topic` fans out to every platform but FCM: its FCM row is the topic message.
                let tm = x.message ?? 0
                if x.device?.platform == .fcm, tm < claim.job.messages.count, Dispatcher.isTopicMessage(claim.job.messages[tm]),
                   tm < ns.count, ns[tm] != nil {
                    parts.append(Part(claim: ci, message: tm, rows: [x], topic: true))
                    continue
                }
                let m = x.message ?? 0
                guard x.device != nil, m < ns.count, ns[m] != nil else {
                    let reason = x.device == nil ? "not_registered" : "internal: the stored notification does not parse"
                    outcomes[ci].append(OutboxOutcome(n: x.n, fence: x.fence, kind: .failed, result: [
                        "id": x.deviceId.map { $0 > 0 ? .int($0) : .null } ?? .null, "status": "failed", "reason": .string(reason),
                        "reason_class": "device", "retryable": false, "deactivated": false, "attempts": .int(Int64(x.attempts)),
                    ]))
                    continue
                }
                byMessage[m, default: []].append(x)
            }
            for m in byMessage.keys.sorted() { parts.append(Part(claim: ci, message: m, rows: byMessage[m] ?? [])) }
        }
        let devicePart = parts.indices.filter { !parts[$0].topic }
        let addressed: [Addressed] = devicePart.compactMap { k in
            let p = parts[k]
            let job = claims[p.claim].job
            guard var n = notifications[job.id]?[p.message] else { return nil }
            // The job and each device's delivery number go with the request: a provider that
            // needs a per-delivery value makes it from them (APNs: one apns-id across attempts).
            n.outboxJob = job.id
            var devices: [Device] = []
            devices.reserveCapacity(p.rows.count)
            for x in p.rows {
                guard var dev = x.device else { continue }
                dev.outboxDelivery = x.n
                devices.append(dev)
            }
            return Addressed(n, to: devices)
        }
        // Topic messages go to Google while the devices' batch is on the wire.
        let topicList: [(Int, Device?, JSONObject, PushNotification?)] = parts.indices.filter { parts[$0].topic }.map { k in
            let p = parts[k]
            let job = claims[p.claim].job
            return (k, p.rows[0].device, job.messages[p.message], notifications[job.id]?[p.message] ?? nil)
        }
        async let topicResults = Self.sendTopics(topicList, d)
        let deviceResults = await d.deliver(addressed)
        logger.debug("outbox: batch answered", metadata: [
            "jobs": "\(claims.map { "\($0.job.id.prefix(8)):\($0.deliveries.count)" }.joined(separator: ","))",
            "ms": "\(nowMillis() - now0)"])
        var results = [[DeliveryResult]](repeating: [], count: parts.count)
        for (k, r) in zip(devicePart, deviceResults) { results[k] = r }
        for (k, r) in await topicResults { results[k] = [r] }
        let renderer = await d.applyDeactivations(results.flatMap { $0 }, devices: addressed.flatMap(\.devices))
        let now = nowMillis()
        var sent = 0
        var failed = 0
        // Every answered delivery's result is written into one buffer (`ResultRenderer.write`:
        // a sent one field by field, no object), and each outcome gets its slice of it.
        var text: [UInt8] = []
        text.reserveCapacity(claims.reduce(0) { $0 + $1.deliveries.count } * 200)
        var written: [(claim: Int, n: Int64, fence: Int64, kind: OutboxOutcome.Kind, range: Range<Int>)] = []
        for (k, p) in parts.enumerated() where k < results.count {
            let job = claims[p.claim].job
            let n = notifications[job.id]?[p.message] ?? nil
            let deadline = n.map { Dispatcher.deadline($0, sendAt: job.sendAt, maxDelay: d.config.maxDeliveryDelay) } ?? job.deadline
            let message = job.indexed ? p.message : nil
            // By index, each field read in place (a zip copied every row and result: their
            // devices' and results' strings retained and released once more per delivery).
            let rows = p.rows
            let answers = results[k]
            for j in 0..<min(rows.count, answers.count) {
                let start = text.count
                let attempts = rows[j].attempts + 1
                var kind: OutboxOutcome.Kind = .failed
                var expired = false
                if answers[j].status == .sent {
                    kind = .sent
                    sent += 1
                } else if answers[j].retryable {
                    let next = now + Self.backoffMs(attempt: attempts, retryAfterMs: answers[j].extra["retry_after_ms"]?.intValue)
                    if next < deadline {
                        kind = .retry(nextAt: next)
                    } else {
                        failed += 1
                        expired = true
                    }
                } else {
                    failed += 1
                }
                if p.topic || expired {
                    var o = renderer.json(answers[j], message: message)
                    if p.topic { o["app"] = .string(job.app) }
                    o["attempts"] = .int(Int64(attempts))
                    if expired {
                        o["last_reason"] = o["reason"]
                        o["reason"] = "expired"
                        o["retryable"] = false
                    }
                    JSONValue.object(o).write(to: &text)
                } else {
                    renderer.write(answers[j], message: message, attempts: attempts, to: &text)
                }
                written.append((p.claim, rows[j].n, rows[j].fence, kind, start..<text.count))
            }
            // Every claimed row gets an outcome (a provider that answered fewer results than it
            // was given devices): pending again at once, so its claim is let go and not held.
            for x in p.rows.dropFirst(results[k].count) {
                outcomes[p.claim].append(OutboxOutcome(n: x.n, fence: x.fence, kind: .retry(nextAt: now), result: [
                    "id": x.deviceId.map { .int($0) } ?? .null, "status": "failed", "reason": "internal: no result for this device",
                    "retryable": true, "attempts": .int(Int64(x.attempts + 1)),
                ]))
            }
        }
        for w in written { outcomes[w.claim].append(OutboxOutcome(n: w.n, fence: w.fence, kind: w.kind, json: text[w.range])) }
        d.sentCount.add(sent, ordering: .relaxed)
        d.failedCount.add(failed, ordering: .relaxed)
        let store = self.store
        let logger = self.logger
        await withTaskGroup(of: Void.self) { group in
            for (ci, claim) in claims.enumerated() where !outcomes[ci].isEmpty {
                let list = outcomes[ci]
                group.addTask {
                    do throws(CommandError) {
                        _ = try await store.complete(job: claim.job.id, list, now: nowMillis())
                    } catch {
                        // The leases expire and the rows are claimed again (at-least-once).
                        logger.error("outbox: recording results failed", metadata: [
                            "job": "\(claim.job.id)", "error": "\(error.message)", "count": "\(list.count)", "ms": "\(nowMillis() - now0)",
                        ])
                    }
                }
            }
        }
    }

    /// Sends the topic messages of async `topic` jobs through the app's FCM topic provider,
    /// concurrently; one result per (part index, FCM row, stored message, notification).
    static func sendTopics(_ list: [(Int, Device?, JSONObject, PushNotification?)], _ d: Dispatcher) async -> [(Int, DeliveryResult)] {
        await withTaskGroup(of: (Int, DeliveryResult).self) { group in
            for (k, device, message, n) in list {
                group.addTask {
                    let to = device?.registrationId ?? ""
                    var a = Arguments(message)
                    guard let n, let dev = device, let t = try? d.parseTopic(&a) else {
                        return (k, DeliveryResult(deviceId: nil, platform: .fcm, registrationId: to, status: .failed, reason: "internal: the stored notification does not parse"))
                    }
                    guard let p = d.providers.provider(app: dev.app, platform: .fcm) as? any TopicProvider else {
                        return (k, DeliveryResult(deviceId: nil, platform: .fcm, registrationId: to, status: .failed, reason: "provider_not_configured"))
                    }
                    return (k, await p.sendToTopic(n, topic: t.topic, condition: t.condition))
                }
            }
            var out: [(Int, DeliveryResult)] = []
            for await r in group { out.append(r) }
            return out
        }
    }

    /// Jittered exponential backoff: 1 s, 2 s, 4 s ... up to 60 s, times 0.5-1.5; at least the
    /// provider's Retry-After.
    static func backoffMs(attempt: Int, retryAfterMs: Int64?) -> Int64 {
        let base = Int64(1000) << Int64(min(max(attempt - 1, 0), 6))
        let capped = min(base, 60_000)
        let jittered = Int64(Double(capped) * Double.random(in: 0.5...1.5))
        return max(jittered, retryAfterMs ?? 0)
    }
}
