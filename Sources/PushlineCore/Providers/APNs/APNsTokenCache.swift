import Synchronization

/// The APNs provider JWTs of this process: one per (team, key id), shared by every app of the team.
///
/// Apple counts token refreshes per team and answers `TooManyProviderTokenUpdates` when a team's
/// token changes more often than every 20 minutes; restarts that mint new tokens are a known cause.
/// So a token is minted at most once per 50 minutes per team and key, persisted in the registry's
/// key-value store (`apns.jwt.<team>.<keyid>` = `"<iat>:<jwt>"`) and reused after a restart
/// while it is younger than 50 minutes. An `ExpiredProviderToken` answer forces a new one.
///
/// ```swift
/// let jwt = try await APNsTokenCache.shared.token(for: credentials, store: store, nowSeconds: now)
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

    /// A minted token and its issue time (Unix seconds).
    public struct Entry: Sendable, Equatable {
        public var iat: Int64
        public var jwt: String
    }

    /// Refresh a token this old (seconds): Apple rejects tokens older than 60 minutes.
    public static let refreshAfter: Int64 = 50 * 60

    public static let shared = APNsTokenCache()

    private let entries = Mutex<[String: Entry]>([:])
    private let minter = Minter()

    public init() {}

    /// The cached token if it is fresh, without waiting (the path of nearly every request).
    public func cached(_ c: Credentials, nowSeconds: Int64) -> String? {
        entries.withLock { e in
            guard let x = e[c.cacheKey], Self.isFresh(x, now: nowSeconds) else { return nil }
            return x.jwt
        }
    }

    /// A token for `c`: the cached one, the persisted one, or a newly minted one.
    ///
    /// With `rejected` (a token Apple answered `ExpiredProviderToken` for), returns another token:
    /// the current one if someone already replaced `rejected`, or a new one.
    public func token(for c: Credentials, store: KeyValueStore, nowSeconds: Int64, rejected: String? = nil) async throws(CryptoError)
        -> String
    {
        if rejected == nil, let t = cached(c, nowSeconds: nowSeconds) { return t }
        let r = await minter.run(key: c.cacheKey) { () async -> Result<Entry, CryptoError> in
            await self.slowPath(c, store: store, nowSeconds: nowSeconds, rejected: rejected)
        }
        return try r.get().jwt
    }

    /// Forgets every token (tests).
    public func reset() {
        entries.withLock { $0.removeAll() }
    }

    static func isFresh(_ e: Entry, now: Int64) -> Bool {
        now - e.iat < refreshAfter && e.iat <= now + 60
    }

    private func slowPath(_ c: Credentials, store: KeyValueStore, nowSeconds now: Int64, rejected: String?) async -> Result<Entry, CryptoError> {
        let current = entries.withLock { $0[c.cacheKey] }
        if let cur = current {
            if let rejected {
                if cur.jwt != rejected && Self.isFresh(cur, now: now) { return .success(cur) }
            } else if Self.isFresh(cur, now: now) {
                return .success(cur)
            }
        } else if rejected == nil, let saved = await store.get(c.cacheKey), let e = Self.parse(saved), Self.isFresh(e, now: now) {
            entries.withLock { $0[c.cacheKey] = e }
            return .success(e)
        }
        let jwt: String
        do {
            jwt = try JWT.es256(
                header: ["kid": .string(c.keyId)],
                claims: ["iss": .string(c.teamId), "iat": .int(now)],
                key: c.key)
        } catch {
            return .failure(error)
        }
        let e = Entry(iat: now, jwt: jwt)
        entries.withLock { $0[c.cacheKey] = e }
        await store.set(c.cacheKey, "\(now):\(jwt)")
        return .success(e)
    }

    static func parse(_ s: String) -> Entry? {
        guard let colon = s.firstIndex(of: ":"), let iat = Int64(s[s.startIndex..<colon]) else { return nil }
        let jwt = String(s[s.index(after: colon)...])
        guard jwt.split(separator: ".").count == 3 else { return nil }
        return Entry(iat: iat, jwt: jwt)
    }

    /// Serializes minting per key: concurrent requests for a stale token wait for one mint.
    private actor Minter {
        var inflight: [String: Task<Result<Entry, CryptoError>, Never>] = [:]

        func run(key: String, _ body: @escaping @Sendable () async -> Result<Entry, CryptoError>) async -> Result<Entry, CryptoError> {
            if let t = inflight[key] { return await t.value }
            let t = Task { await body() }
            inflight[key] = t
            let r = await t.value
            inflight[key] = nil
            return r
        }
    }
}
