import CCurl
import CPushlineShims
import Glibc
import Synchronization

/// Settings of the shared transport.
public struct TransportOptions: Sendable {
    /// Event-loop threads, each with its own libcurl multi handle (and its own connections).
    public var threads: Int
    /// Connections per origin per thread (`CURLMOPT_MAX_HOST_CONNECTIONS`): an origin gets at
    /// most `threads × maxConnectionsPerHost`, or fewer if its requests say so
    /// (`HTTPRequest.maxConnections`).
    public var maxConnectionsPerHost: Int
    /// Streams per connection we ask for (the server's SETTINGS_MAX_CONCURRENT_STREAMS still rules).
    ///
    /// A loop never has more than `maxConnectionsPerHost * maxConcurrentStreams` transfers
    /// in flight to one origin; further requests wait in the loop's own queue (their deadline
    /// running). Each transfer in flight costs roughly 25 KiB (libcurl easy handle and buffers);
    /// surplus handles are freed once the loop is quiet.
    public var maxConcurrentStreams: Int
    /// Seconds an idle connection is kept for reuse (`CURLOPT_MAXAGE_CONN`).
    public var idleTimeoutSeconds: Int
    /// How many times a request that failed with `.connectionLost` before any response is sent again.
    public var maxRetries: Int
    /// Largest response body accepted; a bigger one fails the request with `.other`.
    public var maxResponseBytes: Int
    /// Requests accepted but not finished (queued or in flight), per loop; beyond it `perform`
    /// fails at once with `.unavailable` instead of queueing without bound.
    public var maxOutstandingPerThread: Int

    public init(
        threads: Int = 2, maxConnectionsPerHost: Int = 1, maxConcurrentStreams: Int = 1000,
        idleTimeoutSeconds: Int = 300, maxRetries: Int = 2, maxResponseBytes: Int = 4 << 20,
        maxOutstandingPerThread: Int = 100_000
    ) {
        self.threads = threads
        self.maxConnectionsPerHost = maxConnectionsPerHost
        self.maxConcurrentStreams = maxConcurrentStreams
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.maxRetries = maxRetries
        self.maxResponseBytes = maxResponseBytes
        self.maxOutstandingPerThread = maxOutstandingPerThread
    }
}

/// Counters of a transport since it started (summed over its loops).
public struct TransportStats: Sendable, CustomStringConvertible {
    /// Requests handed to `perform`.
    public var submitted: Int = 0
    /// Requests that got an HTTP response (any status).
    public var completed: Int = 0
    /// Requests that ended with a `TransportError`.
    public var failed: Int = 0
    /// Requests sent again after `.connectionLost` before any response.
    public var retries: Int = 0
    /// Complete responses the server followed with RST_STREAM(NO_ERROR) while the request body was
    /// still unsent (RFC 9113 section 8.1): counted in `completed` as well.
    public var earlyResponses: Int = 0
    /// Connections libcurl opened (sum of `CURLINFO_NUM_CONNECTS` over transfers).
    public var connectionsOpened: Int = 0
    /// Transfers restarted because libcurl left them waiting for a connection while nothing else
    /// finished (`EventLoop.watchActive`), and transfers the loop ended itself at their deadline.
    public var restarted: Int = 0
    public var expiredInFlight: Int = 0
    /// Responses that came before libcurl had sent the request body, made to be read again once
    /// it was sent (`EventLoop.settleEarlyAnswers`).
    public var earlyAnswers: Int = 0
    /// Responses whose header block had arrived at least two loop passes and 100 ms earlier that
    /// libcurl had not ended, made to be read again (`EventLoop.watchActive`; each nudge counts).
    public var nudged: Int = 0

    public init() {}

    public var description: String {
        "submitted=\(submitted) completed=\(completed) failed=\(failed) retries=\(retries) early_responses=\(earlyResponses) connections=\(connectionsOpened) restarted=\(restarted) expired_in_flight=\(expiredInFlight) early_answers=\(earlyAnswers) nudged=\(nudged)"
    }
}

/// The shared HTTP/2 client: libcurl multi handles on their own threads, fed by a queue.
///
/// Each of `options.threads` event loops owns one `CURLM` handle and its connections
/// (HTTP/2 over TLS, multiplexed, kept warm). `perform` picks a loop round-robin, puts the
/// request on that loop's mutex-protected queue and suspends until the loop resumes it,
/// exactly once, with a response or an error. No thread or connection is created per request.
///
/// ```swift
/// let transport = HTTPTransport()
/// let result = await transport.perform(HTTPRequest(url: "https://example.com/x", body: Array("{}".utf8)))
/// transport.shutdown()
/// ```
public final class HTTPTransport: Sendable {
    private let loops: [LoopHandle]
    private let next = Atomic<Int>(0)
    /// `options.maxConnectionsPerHost` and `options.maxConcurrentStreams` (see `route`).
    private let connectionsPerLoop: Int
    private let streamsPerConnection: Int
    /// Threads still to join; emptied by the first `shutdown`.
    private let threads: Mutex<[TransportThread]>
    /// Pools already retired (`retireConnectionPool` tells each loop once).
    private let retiredPools = Mutex<Set<UInt32>>([])

    public init(options: TransportOptions = TransportOptions()) {
        var opts = options
        opts.threads = max(1, opts.threads)
        opts.maxConnectionsPerHost = max(1, opts.maxConnectionsPerHost)
        opts.maxConcurrentStreams = max(1, opts.maxConcurrentStreams)
        opts.idleTimeoutSeconds = max(1, opts.idleTimeoutSeconds)
        opts.maxRetries = max(0, opts.maxRetries)
        let initCode = CurlGlobal.initCode
        var handles: [LoopHandle] = []
        var started: [TransportThread] = []
        for index in 0..<opts.threads {
            let handle = LoopHandle(maxOutstanding: max(1, opts.maxOutstandingPerThread))
            handles.append(handle)
            if initCode != CURLE_OK {
                handle.markDead("curl_global_init failed: \(curlMessage(initCode))")
                continue
            }
            let loopOptions = opts
            do throws(TransportError) {
                let thread = try TransportThread(name: "pl-http-\(index)") {
                    do throws(TransportError) {
                        let loop = try EventLoop(handle: handle, options: loopOptions)
                        loop.run()
                    } catch {
                        handle.markDead(error.message)
                    }
                }
                started.append(thread)
            } catch {
                handle.markDead(error.message)
            }
        }
        loops = handles
        threads = Mutex(started)
        connectionsPerLoop = opts.maxConnectionsPerHost
        streamsPerConnection = opts.maxConcurrentStreams
    }

    /// The loop for the `counter`th request to `origin`, and that loop's in-flight limit for it.
    ///
    /// An origin limited to k connections (`HTTPRequest.maxConnections`) uses min(k, threads)
    /// loops, chosen from a per-origin starting point so that origins limited to one connection
    /// do not all land on the same loop. Its connections are shared out over those loops (at
    /// most `maxConnectionsPerHost` each), and a loop keeps at most (its share × streams per
    /// connection) of the origin's transfers in flight: libcurl, which multiplexes a connection
    /// up to that many streams before it opens another, then never needs more than the share.
    /// (Only a server that allows fewer streams than asked could make libcurl open more, up to
    /// `maxConnectionsPerHost` per loop.) Without a limit: every loop, round-robin, as before.
    func route(origin: String, originHash: Int, maxConnections: Int?, counter: Int) -> (loop: Int, streamLimit: Int) {
        let threads = loops.count
        let all = threads * connectionsPerLoop
        let k = min(max(1, maxConnections ?? all), all)
        let used = min(k, threads)
        let start = used < threads ? Int(UInt(bitPattern: originHash) % UInt(threads)) : 0
        // Requests spread in proportion to each loop's share: slot (counter mod k) of the k
        // connections belongs to loop position (slot mod used).
        let position = Int(UInt(bitPattern: counter) % UInt(k)) % used
        let share = min(connectionsPerLoop, k / used + (position < k % used ? 1 : 0))
        let (limit, overflow) = share.multipliedReportingOverflow(by: streamsPerConnection)
        return ((start + position) % threads, overflow ? Int.max : limit)
    }

    deinit {
        shutdown()
    }

    /// Performs one request; never hangs past `request.timeoutMs` (time queued included).
    ///
    /// Only `https://` URLs are accepted (HTTP/2 over TLS). A request that fails with
    /// `.connectionLost` before any response is retried up to `maxRetries` times within the
    /// same deadline. After `shutdown()` every call returns `.unavailable`.
    public func perform(_ request: HTTPRequest) async -> Result<HTTPResponse, TransportError> {
        // Unchecked (no per-call canary object, this is every single send's path): `submit`
        // calls its completion exactly once, on refusal or from the loop (see `TransportJob.complete`).
        #if PUSHLINE_TSAN
            // Under ThreadSanitizer (`make test-sanitizers`) the checked kind: the unchecked one
            // hands the result over through atomics in the Swift runtime, which is not built
            // with TSan, so TSan reported the loop thread's write of the result and the
            // resumed task's read of it as a data race (a false positive; the checked kind's
            // handover is one TSan sees).
            await withCheckedContinuation { continuation in
                submit(request) { continuation.resume(returning: $0) }
            }
        #else
            await withUnsafeContinuation { continuation in
                submit(request) { continuation.resume(returning: $0) }
            }
        #endif
    }

    /// Performs many requests at once; returns their outcomes in order.
    ///
    /// Every request goes to the loops' queues in one go and the caller is resumed once,
    /// when the last one is done: no task or continuation per request, which is what
    /// large bulk sends need. Deadlines and retries are as for `perform`.
    ///
    /// ```swift
    /// let results = await transport.performAll(requests)   // results[i] answers requests[i]
    /// ```
    public func performAll(_ requests: [HTTPRequest]) async -> [Result<HTTPResponse, TransportError>] {
        guard !requests.isEmpty else { return [] }
        return await withCheckedContinuation { continuation in
            let collector = BatchCollector(count: requests.count, continuation: continuation)
            // Jobs are spread over the loops round-robin and handed to each loop under one lock
            // (a lock per request made the loops and the caller contend on every request).
            let first = Int(UInt(bitPattern: next.wrappingAdd(requests.count, ordering: .relaxed).oldValue) % UInt(loops.count))
            var perLoop = [[TransportJob]](repeating: [], count: loops.count)
            for k in perLoop.indices { perLoop[k].reserveCapacity(requests.count / loops.count + 1) }
            var lastOrigin = ""
            var lastHash = 0
            let now = monotonicNanos()
            var started: [String: Int] = [:]
            for (i, r) in requests.enumerated() {
                // Bulk requests share an origin: reuse the last one when the URL starts with it.
                let origin: String
                if !lastOrigin.isEmpty, hasOrigin(r.url, lastOrigin) {
                    origin = lastOrigin
                } else if let o = originKey(r.url) {
                    origin = o
                    lastOrigin = o
                    lastHash = o.hashValue
                } else {
                    collector.set(i, .failure(TransportError(.other, "only https:// URLs are supported")))
                    continue
                }
                started[origin, default: 0] += 1
                let complete: @Sendable (Result<HTTPResponse, TransportError>) -> Void = {
                    Self.observe(origin: origin, startNs: now, $0)
                    collector.set(i, $0)
                }
                let deadline = now &+ UInt64(max(1, r.timeoutMs)) &* 1_000_000
                let (loop, limit) = route(origin: origin, originHash: lastHash, maxConnections: r.maxConnections, counter: first + i)
                perLoop[loop].append(
                    TransportJob(request: r, origin: origin, streamLimit: limit, deadline: deadline, complete: complete))
            }
            for (origin, n) in started { Metrics.shared.providerRequestsStarted(origin: origin, count: n) }
            for (k, jobs) in perLoop.enumerated() where !jobs.isEmpty {
                loops[k].enqueue(jobs)
            }
        }
    }

    /// Queues one request on a loop; `complete` is called exactly once.
    private func submit(_ request: HTTPRequest, _ complete: @escaping @Sendable (Result<HTTPResponse, TransportError>) -> Void) {
        guard let origin = originKey(request.url) else {
            complete(.failure(TransportError(.other, "only https:// URLs are supported")))
            return
        }
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
        let (loop, limit) = route(
            origin: origin, originHash: origin.hashValue, maxConnections: request.maxConnections, counter: index)
        let timeoutMs = max(1, request.timeoutMs)
        let now = monotonicNanos()
        let deadline = now &+ UInt64(timeoutMs) &* 1_000_000
        Metrics.shared.providerRequestsStarted(origin: origin, count: 1)
        let metered: @Sendable (Result<HTTPResponse, TransportError>) -> Void = {
            Self.observe(origin: origin, startNs: now, $0)
            complete($0)
        }
        let job = TransportJob(request: request, origin: origin, streamLimit: limit, deadline: deadline, complete: metered)
        loops[loop].enqueue([job])
    }

    /// Retires connection pool `pool` (`HTTPRequest.connectionPool`; 0, the shared pool, is
    /// never retired): on every loop, its connections are closed once the transfers on them
    /// end, and are never reused. Requests of the pool sent later still go out, each on a
    /// connection closed after it. Idempotent and cheap to repeat.
    public func retireConnectionPool(_ pool: UInt32) {
        guard pool != 0, retiredPools.withLock({ $0.insert(pool).inserted }) else { return }
        for loop in loops { loop.retire(pool) }
    }

    /// Counts a finished request in the metrics (`pushline_provider_responses_total` by HTTP
    /// status, or the transport error's reason) and logs a transport failure (rate-limited).
    static func observe(origin: String, startNs: UInt64, _ r: Result<HTTPResponse, TransportError>) {
        switch r {
        case .success(let resp):
            Metrics.shared.providerRequestFinished(origin: origin, startNs: startNs, status: String(resp.status))
        case .failure(let e):
            Metrics.shared.providerRequestFinished(origin: origin, startNs: startNs, status: e.protocolReason)
            ProviderWarnings.shared.transportFailure(origin: origin, e)
        }
    }

    /// Stops the loops: queued and in-flight requests fail with `.unavailable`; joins the threads.
    ///
    /// Idempotent; must not be called from inside a transport callback (it joins the loop threads).
    public func shutdown() {
        for loop in loops { loop.close() }
        let toJoin = threads.withLock { list -> [TransportThread] in
            let taken = list
            list = []
            return taken
        }
        for thread in toJoin { thread.join() }
    }

    /// Connections open now and transfers in flight (HTTP/2 streams), by origin, summed over the loops.
    public var openConnections: (connections: [String: Int], streams: [String: Int]) {
        var connections: [String: Int] = [:]
        var streams: [String: Int] = [:]
        for loop in loops {
            for (o, n) in loop.openConnections.withLock({ $0 }) { connections[o, default: 0] += n }
            for (o, n) in loop.streams.withLock({ $0 }) { streams[o, default: 0] += n }
        }
        return (connections, streams)
    }

    /// Counters summed over all loops.
    public var stats: TransportStats {
        var s = TransportStats()
        for loop in loops {
            s.submitted += loop.submitted.load(ordering: .relaxed)
            s.completed += loop.completed.load(ordering: .relaxed)
            s.failed += loop.failed.load(ordering: .relaxed)
            s.retries += loop.retries.load(ordering: .relaxed)
            s.earlyResponses += loop.earlyResponses.load(ordering: .relaxed)
            s.connectionsOpened += loop.connections.load(ordering: .relaxed)
            s.restarted += loop.restarted.load(ordering: .relaxed)
            s.expiredInFlight += loop.expiredInFlight.load(ordering: .relaxed)
            s.nudged += loop.nudged.load(ordering: .relaxed)
            s.earlyAnswers += loop.earlyAnswers.load(ordering: .relaxed)
        }
        return s
    }
}

/// Gathers the outcomes of `performAll` and resumes its caller after the last one.
///
/// Lock-free: each job writes only its own slot, exactly once (a job completes exactly once),
/// and then decrements `left` with acquire-release ordering; the thread that takes `left` to
/// zero therefore sees every slot written and is the only one to read them. That is why the
/// class can be `@unchecked Sendable`. (A mutex here had both loop threads queueing on it.)
final class BatchCollector: @unchecked Sendable {
    private let slots: UnsafeMutablePointer<Result<HTTPResponse, TransportError>?>
    private let count: Int
    private let left: Atomic<Int>
    private let continuation: CheckedContinuation<[Result<HTTPResponse, TransportError>], Never>

    init(count: Int, continuation: CheckedContinuation<[Result<HTTPResponse, TransportError>], Never>) {
        slots = .allocate(capacity: count)
        slots.initialize(repeating: nil, count: count)
        self.count = count
        left = Atomic(count)
        self.continuation = continuation
    }

    deinit {
        slots.deinitialize(count: count)
        slots.deallocate()
    }

    func set(_ i: Int, _ r: Result<HTTPResponse, TransportError>) {
        slots[i] = r
        guard left.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        var results: [Result<HTTPResponse, TransportError>] = []
        results.reserveCapacity(count)
        for k in 0..<count {
            // Every slot was set exactly once before `left` reached zero, so none is nil here.
            results.append(slots[k].take() ?? .failure(TransportError(.other, "no outcome")))
        }
        continuation.resume(returning: results)
    }
}

/// Whether `url` belongs to `origin` (`https://host[:port]`): it starts with it and the
/// authority ends there.
func hasOrigin(_ url: String, _ origin: String) -> Bool {
    var u = url.utf8.makeIterator()
    for c in origin.utf8 {
        guard u.next() == c else { return false }
    }
    guard let after = u.next() else { return true }
    return after == UInt8(ascii: "/") || after == UInt8(ascii: "?") || after == UInt8(ascii: "#")
}

/// `scheme://host[:port]` of an https URL (the key of per-origin stream limits), or nil.
func originKey(_ url: String) -> String? {
    guard let s = URLOrigin.split(url, allowHTTP: false) else { return nil }
    return String(url[url.startIndex..<s.authorityEnd])
}

/// The text of a CURLcode.
func curlMessage(_ code: CURLcode) -> String {
    if let text = curl_easy_strerror(code) { return String(cString: text) }
    return "CURLcode \(code.rawValue)"
}

/// Process-wide libcurl set-up, done once.
enum CurlGlobal {
    /// A Swift `static let` is initialised exactly once, thread-safely, on first use.
    static let initCode: CURLcode = {
        pl_ignore_sigpipe()
        return curl_global_init(3)  // CURL_GLOBAL_ALL (SSL | WIN32), a macro Swift does not import.
    }()
}
