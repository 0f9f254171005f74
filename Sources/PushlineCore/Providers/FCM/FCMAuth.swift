import Synchronization

/// Why no OAuth2 access token could be obtained. Never carries the key, the assertion or a token.
struct FCMAuthError: Error, Sendable, CustomStringConvertible {
    var message: String
    var retryable: Bool
    /// The result reason: `AUTH_ERROR` when the token endpoint refused, or the transport's reason
    /// (`connect_error`, `tls_error`, `timeout`...) when it could not be reached.
    var reason: String
    init(_ message: String, retryable: Bool, reason: String = "AUTH_ERROR") {
        self.message = message
        self.retryable = retryable
        self.reason = reason
    }
    var description: String { message }
}

/// An OAuth2 access token and when to stop using it (monotonic nanoseconds).
struct FCMAccessToken: Sendable {
    var value: String
    /// After this, fetch a new one in the background (some minutes before the real expiry).
    var refreshAtNs: UInt64
    /// After this, stop using it (a little before Google's expiry) and wait for a new one.
    var expiresAtNs: UInt64
}

/// The OAuth2 access token of one service account: cached, refreshed before it expires,
/// fetched by a single request however many sends are waiting (single flight).
///
/// Past `refreshAtNs` the cached token is still handed out while one background request fetches
/// the next, so sends do not wait; only without a usable token (first use, expired, refused with
/// 401) do callers wait for the request in flight.
///
/// The token is shared through the registry's key-value store (`SharedAccessTokens`, key
/// `fcm.oauth.<client_email>|<token_uri>`): a fleet of daemons on one database, or a restarted
/// daemon, uses the account's stored token while it is good, and one daemon at a time fetches
/// the next.
///
/// ```swift
/// switch await source.token() { case .success(let t): ...; case .failure(let e): ... }
/// // After a 401 with token t: fetch a new one unless another task already did.
/// _ = await source.token(replacing: t)
/// ```
actor FCMTokenSource {
    static let scope = "https://www.googleapis.com/auth/firebase.messaging"

    let account: FCMServiceAccount
    let key: RSAPrivateKey
    let transport: any HTTPClient
    let tls: TLSOptions
    let timeoutMs: Int
    let store: (any KeyValueStore)?
    private var cached: FCMAccessToken? {
        didSet { published.withLock { $0 = cached } }
    }
    /// The cached token, readable without hopping onto the actor (the fast path of every send).
    private nonisolated let published = Mutex<FCMAccessToken?>(nil)
    private var inflight: Task<Result<FCMAccessToken, FCMAuthError>, Never>?
    /// No background refresh before this (monotonic ns), after one failed.
    private var retryRefreshAtNs: UInt64 = 0
    /// Token requests made so far (tests check single flight with it).
    private(set) var requestCount = 0

    init(
        account: FCMServiceAccount, key: RSAPrivateKey, transport: any HTTPClient, tls: TLSOptions, timeoutMs: Int,
        store: (any KeyValueStore)? = nil
    ) {
        self.store = store
        self.account = account
        self.key = key
        self.transport = transport
        self.tls = tls
        self.timeoutMs = timeoutMs
    }

    /// The cached token if it is still fresh, without waiting for the actor; nil means call `token()`.
    nonisolated func freshToken() -> String? {
        published.withLock { t in
            guard let t, monotonicNanos() < t.refreshAtNs else { return nil }
            return t.value
        }
    }

    /// A valid access token. With `replacing`, a token the server just refused with 401:
    /// it is dropped (if still cached) and a new one fetched.
    func token(replacing stale: String? = nil) async -> Result<String, FCMAuthError> {
        if let stale, cached?.value == stale { cached = nil }
        let now = monotonicNanos()
        if let c = cached, now < c.expiresAtNs {
            if now >= c.refreshAtNs && now >= retryRefreshAtNs { _ = startRefresh() }
            return .success(c.value)
        }
        let r = await startRefresh(stale: stale).value
        return r.map(\.value)
    }

    /// The token request in flight, or a new one. Its result is published before any waiter resumes.
    private func startRefresh(stale: String? = nil) -> Task<Result<FCMAccessToken, FCMAuthError>, Never> {
        if let t = inflight { return t }
        let (account, key, transport, tls, timeoutMs, store) = (account, key, transport, tls, timeoutMs, store)
        let task = Task {
            let fetch = { @Sendable () async -> Result<SharedAccessToken, FCMAuthError> in
                await self.countRequest()
                return await Self.fetch(account: account, key: key, transport: transport, tls: tls, timeoutMs: timeoutMs)
            }
            let r: Result<SharedAccessToken, FCMAuthError>
            if let store {
                // Fetch with retries: up to 3 requests of timeoutMs and 2 s of backoff.
                r = await SharedAccessTokens.obtain(
                    store: store, key: "fcm.oauth.\(account.clientEmail)|\(account.tokenURI)", stale: stale,
                    claimMs: 3 * timeoutMs + 5000,
                    fresh: { t, now in now < Self.local(t, nowMs: now).refreshAtMs },
                    valid: { t, now in now < Self.local(t, nowMs: now).stopAtMs }, fetch: fetch
                ).result
            } else {
                r = await fetch()
            }
            let local = r.map { Self.local($0, nowMs: nowMillis()).token }
            self.finishRefresh(local)  // this task runs on the actor (created in an actor method)
            return local
        }
        inflight = task
        return task
    }

    private func countRequest() { requestCount += 1 }

    /// When to refresh and when to stop using `t` (wall ms), and the token with those times on
    /// this process's monotonic clock. Refresh 5 minutes early (halfway through a token
    /// shorter-lived than 10 minutes); stop using it 30 s early (a quarter of its life when
    /// shorter), clocks and flight time included.
    static func local(_ t: SharedAccessToken, nowMs: Int64) -> (token: FCMAccessToken, refreshAtMs: Int64, stopAtMs: Int64) {
        let life = max(1, t.expiresAtMs - t.issuedAtMs)
        let refreshAt = t.expiresAtMs - min(300_000, life / 2)
        let stopAt = t.expiresAtMs - min(30_000, life / 4)
        let mono = monotonicNanos()
        func onMono(_ ms: Int64) -> UInt64 { ms <= nowMs ? mono : mono + UInt64(ms - nowMs) * 1_000_000 }
        return (FCMAccessToken(value: t.value, refreshAtNs: onMono(refreshAt), expiresAtNs: onMono(stopAt)), refreshAt, stopAt)
    }

    private func finishRefresh(_ r: Result<FCMAccessToken, FCMAuthError>) {
        inflight = nil
        switch r {
        case .success(let t):
            cached = t
            // Still due (another daemon is fetching the next one): look again in a second, not on every send.
            if monotonicNanos() >= t.refreshAtNs { retryRefreshAtNs = monotonicNanos() + 1_000_000_000 }
        // While the cached token still works, try again in 10 s rather than on every send.
        case .failure: retryRefreshAtNs = monotonicNanos() + 10_000_000_000
        }
    }

    /// Drops the cached token (tests, shutdown).
    func reset() { cached = nil }

    /// One exchange of a freshly signed assertion at the token URI, retrying transient failures.
    static func fetch(
        account: FCMServiceAccount, key: RSAPrivateKey, transport: any HTTPClient, tls: TLSOptions, timeoutMs: Int
    ) async -> Result<SharedAccessToken, FCMAuthError> {
        var last = FCMAuthError("no attempt", retryable: true)
        for attempt in 1...3 {
            let r = await fetchOnce(account: account, key: key, transport: transport, tls: tls, timeoutMs: timeoutMs)
            switch r {
            case .success: return r
            case .failure(let e):
                last = e
                guard e.retryable, attempt < 3 else { return r }
                await Backoff.sleep(Backoff.delayMs(attempt: attempt, baseMs: 200, capMs: 2000))
            }
        }
        return .failure(last)
    }

    static func fetchOnce(
        account: FCMServiceAccount, key: RSAPrivateKey, transport: any HTTPClient, tls: TLSOptions, timeoutMs: Int
    ) async -> Result<SharedAccessToken, FCMAuthError> {
        let iat = nowMillis() / 1000
        var header: JSONObject = ["alg": "RS256", "typ": "JWT"]
        if let kid = account.privateKeyId { header["kid"] = .string(kid) }
        let claims: JSONObject = [
            "iss": .string(account.clientEmail), "scope": .string(scope), "aud": .string(account.tokenURI),
            "iat": .int(iat), "exp": .int(iat + 3600),
        ]
        let assertion: String
        switch FCMAssertion.sign(header: header, claims: claims, key: key) {
        case .success(let s): assertion = s
        case .failure(let e): return .failure(e)
        }
        let body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=" + assertion
        let started = nowMillis()
        let req = HTTPRequest(
            method: "POST", url: account.tokenURI,
            headers: [("content-type", "application/x-www-form-urlencoded"), ("accept", "application/json")],
            body: Array(body.utf8), tls: tls, timeoutMs: timeoutMs,
            maxConnections: 1)  // One token request at a time (single flight): one connection is plenty.
        let resp: HTTPResponse
        switch await transport.perform(req) {
        case .success(let r): resp = r
        case .failure(let e):
            return .failure(
                FCMAuthError("token endpoint \(account.tokenURI): \(e)", retryable: e.retryable, reason: e.protocolReason))
        }
        let json = try? JSONValue.parse(resp.body)
        guard resp.status == 200 else {
            var what = "HTTP \(resp.status)"
            if let e = json?["error"]?.stringValue { what += " \(e)" }
            if let d = json?["error_description"]?.stringValue { what += ": \(d)" }
            return .failure(
                FCMAuthError(
                    "token endpoint \(account.tokenURI) refused the service account \(account.clientEmail): \(what)",
                    retryable: resp.status >= 500 || resp.status == 429))
        }
        guard let tok = json?["access_token"]?.stringValue, !tok.isEmpty else {
            return .failure(FCMAuthError("token endpoint \(account.tokenURI) answered without an access_token", retryable: true))
        }
        let expiresIn = Int64(max(1, json?["expires_in"]?.intValue ?? 3600)) * 1000
        return .success(SharedAccessToken(value: tok, issuedAtMs: started, expiresAtMs: started + expiresIn))
    }
}

/// Token sources shared by every provider using the same service account (and transport),
/// so two apps with one Firebase project fetch one token.
enum FCMTokenSources {
    private static let all = Mutex<[String: FCMTokenSource]>([:])

    static func source(
        account: FCMServiceAccount, key: RSAPrivateKey, transport: any HTTPClient, tls: TLSOptions, timeoutMs: Int,
        store: (any KeyValueStore)? = nil
    ) -> FCMTokenSource {
        let id = "\(account.clientEmail)|\(account.tokenURI)|\(tls.caFile ?? "")|\(ObjectIdentifier(transport).hashValue)"
        return all.withLock { m in
            if let s = m[id] { return s }
            let s = FCMTokenSource(account: account, key: key, transport: transport, tls: tls, timeoutMs: timeoutMs, store: store)
            m[id] = s
            return s
        }
    }
}
