/// What every provider (APNs, FCM, WebPush, WNS) does: build a request from a
/// notification and a device, send it, and map the answer to a per-device result.
///
/// One provider instance serves one app's block for one platform. It owns its
/// credentials, token caches and retry policy; the shared `HTTPClient` owns the
/// connections. A provider never throws for one device: a failure is a
/// `DeliveryResult` with `status == .failed`, so one device never fails the others.
public protocol PushProvider: Sendable {
    var platform: Platform { get }

    /// Checks the notification before anything is sent (e.g. `payload_too_large`,
    /// a bad provider-specific field). Throwing here fails the whole command.
    func validate(_ notification: PushNotification) throws(CommandError)

    /// Sends `notification` to each device (all of this provider's platform and app).
    /// Returns exactly one result per device, in the same order. With
    /// `notification.dryRun`, builds and checks every request without sending.
    func send(_ notification: PushNotification, to devices: [Device]) async -> [DeliveryResult]

    /// Sends several notifications, each to its own devices (a `bulk` of personalized
    /// messages): one result list per message, each exactly one result per device in order.
    /// The default runs `send(_:to:)` for every message concurrently; a provider may hand all
    /// the requests to the transport together instead (one `performAll`, as for one send).
    func send(_ messages: [Addressed]) async -> [[DeliveryResult]]
}

/// One notification and the devices it goes to, in a multi-message send.
public struct Addressed: Sendable {
    public var notification: PushNotification
    public var devices: [Device]
    public init(_ notification: PushNotification, to devices: [Device]) {
        self.notification = notification
        self.devices = devices
    }
}

extension PushProvider {
    public func send(_ messages: [Addressed]) async -> [[DeliveryResult]] {
        if messages.count == 1 { return [await send(messages[0].notification, to: messages[0].devices)] }
        return await withTaskGroup(of: (Int, [DeliveryResult]).self, returning: [[DeliveryResult]].self) { group in
            for (k, m) in messages.enumerated() where !m.devices.isEmpty {
                group.addTask { (k, await self.send(m.notification, to: m.devices)) }
            }
            var out = [[DeliveryResult]](repeating: [], count: messages.count)
            for await (k, r) in group { out[k] = r }
            return out
        }
    }
}

/// What a provider may use from the daemon.
public struct ProviderContext: Sendable {
    /// The shared HTTP/2 transport.
    public var transport: any HTTPClient
    /// Small persistent key-value storage in the registry database (e.g. the APNs provider JWT).
    public var store: KeyValueStore
    public var logger: Logger

    public init(transport: any HTTPClient, store: KeyValueStore, logger: Logger) {
        self.transport = transport
        self.store = store
        self.logger = logger
    }
}

/// Persistent string values kept in the registry database, for provider state that must survive a
/// restart and that a fleet of daemons on one PostgreSQL database shares (provider tokens).
public protocol KeyValueStore: Sendable {
    func get(_ key: String) async -> String?
    func set(_ key: String, _ value: String) async
    /// Atomically stores `new` under `key` if the stored value is `expected` (nil: no value stored),
    /// and tells who won: of several daemons (or tasks) swapping from the same value at once,
    /// exactly one gets `.swapped`, the others `.conflict` with the value the winner stored.
    func compareAndSet(_ key: String, expected: String?, new: String) async -> KVSwap
}

/// What `KeyValueStore.compareAndSet` did.
public enum KVSwap: Sendable, Equatable {
    /// `new` is stored.
    case swapped
    /// The stored value was not `expected`: it is `current` (nil: none), and nothing was written.
    case conflict(current: String?)
    /// The database could not be asked (logged): nothing is known, nothing was written.
    case unavailable
}

import Logging

/// A provider that can also send to topics and manage topic subscriptions (FCM).
public protocol TopicProvider: PushProvider {
    /// Sends to a topic or a `condition`; exactly one is non-nil.
    /// The result's `registrationId` is `/topics/<name>` or the condition, `deviceId` nil.
    func sendToTopic(_ notification: PushNotification, topic: TopicName?, condition: String?) async -> DeliveryResult
    /// Subscribes devices to a topic; one result per device, in order (`sent` = subscribed).
    func subscribe(_ devices: [Device], topic: TopicName) async -> [DeliveryResult]
    /// Unsubscribes devices from a topic; one result per device, in order.
    func unsubscribe(_ devices: [Device], topic: TopicName) async -> [DeliveryResult]
}

/// Runs a large send as consecutive batches, a few in flight at once.
///
/// Each batch is one `HTTPTransport.performAll` call in the provider (one suspension per
/// batch, not per device); with two in flight the connections never idle between batches.
/// A batch hands back what it finished and, as `later`, the answers it must retry after a
/// backoff: those run beside the batches, outside their limit, so a retry waiting (up to a
/// `Retry-After` of seconds) never holds a batch's slot while other devices wait for it.
///
/// ```swift
/// let results = await Batches.run(count: devices.count, batchSize: 2000) { range in
///     await self.sendBatch(prepared, devices, range)   // Batches.Outcome: done now, retries later
/// }
/// ```
public enum Batches {
    /// What one batch did: results known at once, and work left for after a backoff.
    public struct Outcome<R: Sendable>: Sendable {
        public var done: [(Int, R)]
        public var later: (@Sendable () async -> [(Int, R)])?
        public init(_ done: [(Int, R)], later: (@Sendable () async -> [(Int, R)])? = nil) {
            self.done = done
            self.later = later
        }
    }

    /// A batch's outcome: `done`, and as `later` the answers in `retry` looked at again
    /// concurrently (`each` gives one index's final result); no later work when `retry` is empty.
    ///
    /// ```swift
    /// return Batches.outcome(done, retrying: again) { i, first in (i, await self.deliver(requests[i], first: first)) }
    /// ```
    public static func outcome<X: Sendable, R: Sendable>(
        _ done: [(Int, R)], retrying retry: [X], _ each: @escaping @Sendable (X) async -> (Int, R)
    ) -> Outcome<R> {
        guard !retry.isEmpty else { return Outcome(done) }
        return Outcome(done) {
            await withTaskGroup(of: (Int, R).self, returning: [(Int, R)].self) { group in
                for x in retry { group.addTask { await each(x) } }
                var out: [(Int, R)] = []
                out.reserveCapacity(retry.count)
                for await r in group { out.append(r) }
                return out
            }
        }
    }

    /// Calls `body` for `0..<count` in ranges of `batchSize`, at most `inFlight` at once (their
    /// `later` work not counted), and returns each index's result (nil only where none was given).
    public static func run<R: Sendable>(
        count: Int, batchSize: Int, inFlight: Int = 2, _ body: @escaping @Sendable (Range<Int>) async -> Outcome<R>
    ) async -> [R?] {
        var results = [R?](repeating: nil, count: count)
        // (whether this is a batch, which counts against `inFlight`, or a batch's later work)
        await withTaskGroup(of: (Bool, Outcome<R>).self) { group in
            var start = 0
            var running = 0
            while true {
                while start < count && running < max(1, inFlight) {
                    let range = start..<min(count, start + max(1, batchSize))
                    group.addTask { (true, await body(range)) }
                    start = range.upperBound
                    running += 1
                }
                guard let (isBatch, part) = await group.next() else { break }
                if isBatch { running -= 1 }
                for (i, r) in part.done { results[i] = r }
                if let later = part.later { group.addTask { (false, Outcome(await later())) } }
            }
        }
        return results
    }

    /// Runs `body` for every element with at most `width` running at once and returns the
    /// results in input order (one per element): `run` with batches of one.
    ///
    /// ```swift
    /// let results = await Batches.map(devices, width: 256) { await sendOne($0) }
    /// ```
    public static func map<T: Sendable, R: Sendable>(
        _ items: [T], width: Int, _ body: @escaping @Sendable (T) async -> R
    ) async -> [R] {
        if items.isEmpty { return [] }
        if items.count == 1 { return [await body(items[0])] }
        let out = await run(count: items.count, batchSize: 1, inFlight: width) { range in
            Outcome([(range.lowerBound, await body(items[range.lowerBound]))])
        }
        // `run` calls `body` for every index of 0..<count and each call gives that index's result.
        return out.map { $0! }
    }
}

/// Exponential backoff with full jitter, honouring a server's `Retry-After`.
///
/// ```swift
/// let ms = Backoff.delayMs(attempt: 2, retryAfterHeader: response.header("retry-after"))
/// await Backoff.sleep(ms)
/// ```
public enum Backoff {
    /// Delay before retry number `attempt` (1-based): random in [0, min(cap, base * 2^attempt)],
    /// but at least `Retry-After` (seconds) when the server sent one, and at least `floorMs`.
    public static func delayMs(
        attempt: Int, baseMs: Int = 100, capMs: Int = 10_000, retryAfterHeader: String? = nil, floorMs: Int = 0
    ) -> Int {
        let ceiling = min(capMs, baseMs << min(attempt, 20))
        var d = Int.random(in: ceiling / 2...max(ceiling / 2, ceiling))
        if let s = RetryAfter.seconds(retryAfterHeader) { d = max(d, min(s, 3600) * 1000) }
        return max(d, floorMs)
    }

    /// After a retryable answer (429, 5xx...) to attempt `attempt`: how long to wait before the
    /// next one (`Retry-After` honoured), or nil when the attempts are used up or the server
    /// asks for longer than `maxWaitMs` (the caller then reports the failure as retryable).
    public static func retryWait(after response: HTTPResponse, attempt: Int, maxAttempts: Int, maxWaitMs: Int) -> Int? {
        let delay = delayMs(attempt: attempt, retryAfterHeader: response.header("retry-after"))
        return attempt < maxAttempts && delay <= maxWaitMs ? delay : nil
    }

    public static func sleep(_ ms: Int) async {
        guard ms > 0 else { return }
        try? await Task.sleep(nanoseconds: UInt64(ms) * 1_000_000)
    }
}

/// The `Retry-After` header (RFC 9110 section 10.2.3): `delay-seconds` or an `HTTP-date`.
public enum RetryAfter {
    /// Seconds to wait, or nil if the header is missing or unreadable. A date in the past is 0.
    ///
    /// RFC 9110 section 5.6.7: recipients accept the IMF-fixdate form
    /// (`Sun, 06 Nov 1994 08:49:37 GMT`) and also the obsolete RFC 850
    /// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`) forms.
    ///
    /// ```swift
    /// RetryAfter.seconds("120")                                  // 120
    /// RetryAfter.seconds("Sun, 06 Nov 1994 08:49:37 GMT", nowMs: 784_111_717_000)   // 60
    /// ```
    public static func seconds(_ header: String?, nowMs: Int64 = nowMillis()) -> Int? {
        guard let header else { return nil }
        let h = header.trimmingCharacters(in: " ")
        if let s = Int(h) { return s >= 0 ? s : nil }
        guard let at = httpDate(h) else { return nil }
        let delta = at - nowMs / 1000
        return delta > 0 ? Int(min(delta, Int64(Int32.max))) : 0
    }

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    /// Seconds since 1970 of an HTTP-date in any of its three forms, or nil.
    static func httpDate(_ s: String) -> Int64? {
        // Split on the separators of all three forms; the weekday is ignored.
        let parts = s.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "-" }).map(String.init)
        guard parts.count >= 4 else { return nil }
        var day: Int?, month: Int?, year: Int?, time: [Int]?
        for p in parts.dropFirst() {
            if p.contains(":") {
                let t = p.split(separator: ":").compactMap { Int($0) }
                guard t.count == 3 else { return nil }
                time = t
            } else if let m = months.firstIndex(of: p.lowercased()) {
                month = m + 1
            } else if let n = Int(p) {
                // The day comes before the month (IMF-fixdate, RFC 850) or right after it
                // (asctime); the year is the number after both.
                if day == nil {
                    day = n
                } else if month != nil && year == nil {
                    year = p.count == 2 ? (n >= 70 ? 1900 + n : 2000 + n) : n  // RFC 850 two-digit years.
                } else {
                    return nil
                }
            } else if p.uppercased() != "GMT" {
                return nil
            }
        }
        guard let d = day, let m = month, let y = year, let t = time,
            (1...31).contains(d), (0...23).contains(t[0]), (0...59).contains(t[1]), (0...60).contains(t[2])
        else { return nil }
        return daysFromCivil(y, m, d) * 86_400 + Int64(t[0] * 3600 + t[1] * 60 + t[2])
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    static func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return Int64(era * 146_097 + doe - 719_468)
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return String(s)
    }
}

