import Synchronization

/// The APNs provider JWTs of this process: one per (team, key id), shared by every app of the team.
///
/// Apple's rule ("Establishing a token-based connection to APNs", section "Refresh your token
/// regularly"): "Refresh your token no more than once every 20 minutes and no less than once
/// every 60 minutes. APNs rejects any request whose token contains a timestamp that is more than
/// one hour old. Similarly, APNs reports an error if you recreate your tokens more than once
/// every 20 minutes." The error is 429 `TooManyProviderTokenUpdates`, and per Apple's engineers
/// (developer forums threads 675879 and 674772) it is tied to the connection: a connection that
/// saw a token change too soon stays unusable until enough time has passed. Restarts that mint
/// new tokens are a known cause, so:
///
/// - A token is minted at most once per 50 minutes per team and key (`refreshAfter`: in Apple's
///   20-60 minute window, 10 minutes before Apple's one-hour expiry), persisted in the registry's
///   key-value store (`apns.jwt.<team>.<keyid>` = `"<iat>:<jwt>"`, `"R<iat>:<jwt>"` when it
///   replaced another) and reused after a restart while it is younger than 50 minutes.
/// - The stored token is the fleet's (daemons on one PostgreSQL database; Apple counts the 20
///   minutes per team, so a daemon with a token of its own gets 429 for 20 minutes): before
///   minting, the cache reads the store and adopts a fresh token another daemon stored (also as
///   the replacement of a token Apple called expired); a minted token is stored with
///   `compareAndSet` against the value read, and a daemon that loses that race adopts the
///   winner's token and never sends its own. The "replaced" mark travels with the stored value,
///   so the 20-minute floor below holds for the fleet.
/// - `ExpiredProviderToken` for the current token (`rejected`) replaces it: Apple refuses that
///   token on every connection, so keeping it can only fail. But a token that itself replaced
///   another is kept for at least `minRefreshInterval` (20 minutes) even then: Apple calling a
///   token younger than 20 minutes expired means Apple's clock and ours disagree by more than
///   40 minutes, a new token (signed with the same clock) cannot fix that, and minting on every
///   rejection would break Apple's 20-minute rule for every server of the team. The caller gets
///   `TokenError.refreshTooSoon` and reports a configuration error naming the clock. The first
///   token of a key (minted with nothing to replace, or stored without the mark by an older
///   version) may be replaced at once.
///   So a key's token changes at most once per 20 minutes, apart from that first replacement.
/// - Every token has its own connection pool (`Lease.pool`, an `HTTPRequest.connectionPool`):
///   a new token always goes out on new connections, never on one that carried the previous
///   token, and the previous token's pool is retired (`Lease.retiredPool`: its connections close
///   once their in-flight streams end). Different keys never share a connection either (Apple:
///   tokens of several keys or teams on one connection cause the same 429 or 403 errors).
/// - A 429 `TooManyProviderTokenUpdates` anyway (for example after a pool id was reused, or a
///   connection Apple's side shares) moves the token to a fresh pool once (`movePool`).
///
/// ```swift
/// let lease = try await APNsTokenCache.shared.lease(for: credentials, store: store, nowSeconds: now)
/// // headers: ("authorization", "bearer \(lease.jwt)"); HTTPRequest(..., connectionPool: lease.pool)
/// ```
public final class APNsTokenCache: Sendable {
    /// One token auth identity.
    public struct Credentials: Sendable {
        public var teamId: String
        public var keyId: String
        public var key: ECPrivateKey
        public init(teamId: String, keyId: String, key: ECPrivateKey) {
            self.teamId = teamId
            self.keyId = keyId
            self.key = key
        }
        var cacheKey: String { "apns.jwt.\(teamId).\(keyId)" }
    }

    /// A minted token, its issue time (Unix seconds) and its connection pool.
    public struct Entry: Sendable, Equatable {
        public var iat: Int64
        public var jwt: String
        /// The `HTTPRequest.connectionPool` of requests carrying this token.
        public var pool: UInt32 = 0
        /// Minted in this process to replace an earlier token of the key: kept at least
        /// `minRefreshInterval` seconds.
        public var replaced = false
        /// Already moved to a fresh pool after `TooManyProviderTokenUpdates` (done once per token).
        public var poolMoved = false
    }

    /// What a request needs of the token.
    public struct Lease: Sendable, Equatable {
        public var jwt: String
        public var pool: UInt32
        /// The pool of the token this one just replaced (or of this token before it moved): the
        /// caller retires it (`HTTPTransport.retireConnectionPool`, idempotent). nil on the usual path.
        public var retiredPool: UInt32?
    }

    /// Why no token could be had.
    public enum TokenError: Error, Sendable, CustomStringConvertible {
        case signing(CryptoError)
        /// Apple called the current token expired, but it replaced its predecessor only
        /// `ageSeconds` ago (less than `minRefreshInterval`).
        case refreshTooSoon(ageSeconds: Int64)

        public var description: String {
            switch self {
            case .signing(let e): return "\(e)"
            case .refreshTooSoon(let age):
                return "the token Apple found expired was minted \(age / 60) min \(age % 60) s ago; Pushline replaces"
                    + " a token at most once per \(APNsTokenCache.minRefreshInterval / 60) minutes"
            }
        }
    }

    /// Refresh a token this old (seconds): Apple rejects tokens older than 60 minutes.
    public static let refreshAfter: Int64 = 50 * 60
    /// A token that replaced another is kept at least this long (seconds): Apple's floor.
    public static let minRefreshInterval: Int64 = 20 * 60

    public static let shared = APNsTokenCache()

    private let entries = Mutex<[String: Entry]>([:])
    private let minter = Minter()
    /// When `adoptShared` last read the store, per key (monotonic ns).
    private let lastSharedCheck = Mutex<[String: UInt64]>([:])
    /// The last connection pool handed out (process-wide, so pools of different caches differ too).
    private static let lastPool = Atomic<UInt32>(0)

    public init() {}

    /// A connection pool id never handed out before (0 is the transport's shared pool).
    static func newPool() -> UInt32 {
        while true {
            let p = lastPool.wrappingAdd(1, ordering: .relaxed).newValue
            if p != 0 { return p }
        }
    }

    /// The cached token if it is fresh, without waiting (the path of nearly every request).
    public func cached(_ c: Credentials, nowSeconds: Int64) -> Lease? {
        entries.withLock { e in
            guard let x = e[c.cacheKey], Self.isFresh(x, now: nowSeconds) else { return nil }
            return Lease(jwt: x.jwt, pool: x.pool)
        }
    }

    /// A token for `c`: the cached one, the persisted one, or a newly minted one.
    ///
    /// With `rejected` (a token Apple answered `ExpiredProviderToken` for), returns another token:
    /// the current one if someone already replaced `rejected`, or a new one, unless `rejected`
    /// replaced its own predecessor less than 20 minutes ago (`TokenError.refreshTooSoon`).
    public func lease(for c: Credentials, store: KeyValueStore, nowSeconds: Int64, rejected: String? = nil)
        async throws(TokenError) -> Lease
    {
        if rejected == nil, let t = cached(c, nowSeconds: nowSeconds) { return t }
        var r = await minter.run(key: c.cacheKey) { () async -> Result<Lease, TokenError> in
            await self.slowPath(c, store: store, nowSeconds: nowSeconds, rejected: rejected)
        }
        if let rejected, case .success(let l) = r, l.jwt == rejected {
            // We joined a caller that did not know `rejected` was refused: ask again.
            r = await minter.run(key: c.cacheKey) { () async -> Result<Lease, TokenError> in
                await self.slowPath(c, store: store, nowSeconds: nowSeconds, rejected: rejected)
            }
        }
        return try r.get()
    }

    /// `lease(...).jwt`.
    public func token(for c: Credentials, store: KeyValueStore, nowSeconds: Int64, rejected: String? = nil)
        async throws(TokenError) -> String
    {
        try await lease(for: c, store: store, nowSeconds: nowSeconds, rejected: rejected).jwt
    }

    /// After `TooManyProviderTokenUpdates` on `refusedPool`: the token's lease on a fresh pool
    /// (with `retiredPool` = `refusedPool`), or the current lease if the token or its pool
    /// changed meanwhile, or nil if this token already moved once (then the refusal is not the
    /// connection's: back off instead of opening connection after connection).
    public func movePool(for c: Credentials, refusedPool: UInt32) -> Lease? {
        entries.withLock { e in
            guard var x = e[c.cacheKey] else { return nil }
            if x.pool != refusedPool { return Lease(jwt: x.jwt, pool: x.pool) }
            guard !x.poolMoved else { return nil }
            x.pool = Self.newPool()
            x.poolMoved = true
            e[c.cacheKey] = x
            return Lease(jwt: x.jwt, pool: x.pool, retiredPool: refusedPool)
        }
    }

    /// After `TooManyProviderTokenUpdates` for `refused`: the fleet's token if another daemon
    /// stored a different, fresh one (this process minted its own while the database was out of
    /// reach, say, and Apple allows one token per team), adopted on a pool of its own; the current
    /// lease if this process already switched; nil if the store has nothing better (then
    /// `movePool`). The store is read at most once a second per key, however many requests wait.
    public func adoptShared(for c: Credentials, store: KeyValueStore, nowSeconds now: Int64, refused: String) async -> Lease? {
        let mono = monotonicNanos()
        let current = entries.withLock { $0[c.cacheKey] }
        if let cur = current, cur.jwt != refused, Self.isFresh(cur, now: now) { return Lease(jwt: cur.jwt, pool: cur.pool) }
        let due = lastSharedCheck.withLock { m -> Bool in
            if let t = m[c.cacheKey], mono &- t < 1_000_000_000 { return false }
            m[c.cacheKey] = mono
            return true
        }
        guard due, let saved = await store.get(c.cacheKey), let s = Self.parse(saved), s.jwt != refused,
            Self.isFresh(s, now: now)
        else { return nil }
        return entries.withLock { e in
            let cur = e[c.cacheKey]
            if let cur, cur.jwt == s.jwt { return Lease(jwt: cur.jwt, pool: cur.pool) }
            var x = s
            x.pool = Self.newPool()
            e[c.cacheKey] = x
            return Lease(jwt: x.jwt, pool: x.pool, retiredPool: cur?.pool)
        }
    }

    /// The current entry of `c` (tests).
    func entry(_ c: Credentials) -> Entry? {
        entries.withLock { $0[c.cacheKey] }
    }

    /// Forgets every token (tests).
    public func reset() {
        entries.withLock { $0.removeAll() }
    }

    static func isFresh(_ e: Entry, now: Int64) -> Bool {
        now - e.iat < refreshAfter && e.iat <= now + 60
    }

    private func slowPath(_ c: Credentials, store: KeyValueStore, nowSeconds now: Int64, rejected: String?) async
        -> Result<Lease, TokenError>
    {
        let current = entries.withLock { $0[c.cacheKey] }
        // Another caller of this process may have minted or adopted a token meanwhile.
        if let cur = current, cur.jwt != rejected, Self.isFresh(cur, now: now) {
            return .success(Lease(jwt: cur.jwt, pool: cur.pool))
        }
        // The fleet's token: another daemon on the same database may have minted or replaced it.
        var saved = await store.get(c.cacheKey)
        for _ in 0..<Self.maxSwapAttempts {
            let stored = saved.flatMap(Self.parse)
            if let s = stored, s.jwt != rejected, Self.isFresh(s, now: now) {
                return .success(adopt(s, c, current: current))
            }
            // The token to replace: the fleet's (or, with the database unreachable, ours).
            let victim = stored ?? current
            if let rejected, let v = victim, v.jwt == rejected, v.replaced {
                let age = now - v.iat
                if age >= 0 && age < Self.minRefreshInterval { return .failure(.refreshTooSoon(ageSeconds: age)) }
            }
            let jwt: String
            do {
                jwt = try JWT.es256(
                    header: ["kid": .string(c.keyId)],
                    claims: ["iss": .string(c.teamId), "iat": .int(now)],
                    key: c.key)
            } catch {
                return .failure(.signing(error))
            }
            let e = Entry(iat: now, jwt: jwt, pool: Self.newPool(), replaced: victim != nil || rejected != nil)
            switch await store.compareAndSet(c.cacheKey, expected: saved, new: Self.format(e)) {
            case .swapped, .unavailable:
                // Unavailable: the database is down; the token serves this process until it returns.
                entries.withLock { $0[c.cacheKey] = e }
                return .success(Lease(jwt: e.jwt, pool: e.pool, retiredPool: current?.pool))
            case .conflict(let winner):
                // Another daemon stored a token first: ours was never sent; look at theirs.
                saved = winner
            }
        }
        // The stored value kept changing under us (several refreshes at once, or a value this
        // version cannot use): this process uses a token of its own rather than fail the send.
        let jwt: String
        do {
            jwt = try JWT.es256(
                header: ["kid": .string(c.keyId)], claims: ["iss": .string(c.teamId), "iat": .int(now)], key: c.key)
        } catch {
            return .failure(.signing(error))
        }
        let e = Entry(iat: now, jwt: jwt, pool: Self.newPool(), replaced: true)
        entries.withLock { $0[c.cacheKey] = e }
        return .success(Lease(jwt: e.jwt, pool: e.pool, retiredPool: current?.pool))
    }

    /// Compare-and-set rounds before giving up on the shared value.
    static let maxSwapAttempts = 4

    /// Makes `s` (read from the store) this process's token of `c`, on a pool of its own.
    private func adopt(_ s: Entry, _ c: Credentials, current: Entry?) -> Lease {
        if let cur = current, cur.jwt == s.jwt { return Lease(jwt: cur.jwt, pool: cur.pool) }
        var e = s
        e.pool = Self.newPool()
        entries.withLock { $0[c.cacheKey] = e }
        return Lease(jwt: e.jwt, pool: e.pool, retiredPool: current?.pool)
    }

    /// The stored form: `"<iat>:<jwt>"`, or `"R<iat>:<jwt>"` for a token that replaced another
    /// (kept at least `minRefreshInterval`; versions before the fleet read that form as no token).
    static func format(_ e: Entry) -> String {
        (e.replaced ? "R" : "") + "\(e.iat):\(e.jwt)"
    }

    static func parse(_ s: String) -> Entry? {
        var body = Substring(s)
        let replaced = body.first == "R"
        if replaced { body = body.dropFirst() }
        guard let colon = body.firstIndex(of: ":"), let iat = Int64(body[body.startIndex..<colon]) else { return nil }
        let jwt = String(body[body.index(after: colon)...])
        guard jwt.split(separator: ".", omittingEmptySubsequences: false).count == 3 else { return nil }
        return Entry(iat: iat, jwt: jwt, replaced: replaced)
    }

    /// Serializes minting per key: concurrent requests for a stale token wait for one mint.
    private actor Minter {
        var inflight: [String: Task<Result<Lease, TokenError>, Never>] = [:]

        func run(key: String, _ body: @escaping @Sendable () async -> Result<Lease, TokenError>) async
            -> Result<Lease, TokenError>
        {
            if let t = inflight[key] { return await t.value }
            let t = Task { await body() }
            inflight[key] = t
            let r = await t.value
            inflight[key] = nil
            return r
        }
    }
}
