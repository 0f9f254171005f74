/// An OAuth access token kept in the registry's key-value store, so that every daemon of a fleet
/// on one database (and a restarted daemon) uses the one token of an account (FCM service account,
/// WNS client) instead of each fetching its own.
///
/// Stored as `"<issued ms>:<expires ms>:<token>"` (Unix milliseconds) under the account's key. A
/// daemon needing a token first reads that value and adopts it when it is still good; only when
/// it is not does a daemon fetch one, and only the daemon holding the account's refresh claim
/// (`<key>.refresh` = `"<until ms>:<nonce>"`, taken with `KeyValueStore.compareAndSet`, released
/// after the fetch, lapsing by itself if its holder dies): the others keep using the stored token
/// while it is valid, or wait (polling the store) for the claim holder's. With the database out
/// of reach a daemon fetches a token of its own, as a lone daemon does.
///
/// ```swift
/// let r = await SharedAccessTokens.obtain(
///     store: store, key: "wns.oauth.<hash>", stale: refused, claimMs: 10_000,
///     fresh: { t, now in t.expiresAtMs - 60_000 > now }, valid: { t, now in t.expiresAtMs - 60_000 > now }
/// ) { await fetchFromTheTokenEndpoint() }
/// ```
struct SharedAccessToken: Sendable, Equatable {
    var value: String
    var issuedAtMs: Int64
    var expiresAtMs: Int64

    var stored: String { "\(issuedAtMs):\(expiresAtMs):\(value)" }

    static func parse(_ s: String) -> SharedAccessToken? {
        let parts = s.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let issued = Int64(parts[0]), let expires = Int64(parts[1]), !parts[2].isEmpty else { return nil }
        return SharedAccessToken(value: String(parts[2]), issuedAtMs: issued, expiresAtMs: expires)
    }
}

enum SharedAccessTokens {
    /// How often a daemon waiting for another's fetch looks at the store (ms).
    static let pollMs = 100

    /// A token for the account stored under `key`: the stored one if `fresh` (and not `stale`, a
    /// token the service just refused), else one this daemon fetches while holding the refresh
    /// claim, else (another daemon holds the claim) the stored one if still `valid`, else the one
    /// the claim holder stores (waiting at most `claimMs` plus a second, then fetching).
    /// `adopted` is true when the token came from the store.
    static func obtain<E: Error>(
        store: any KeyValueStore, key: String, stale: String?, claimMs: Int,
        fresh: @Sendable (SharedAccessToken, Int64) -> Bool, valid: @Sendable (SharedAccessToken, Int64) -> Bool,
        fetch: @Sendable () async -> Result<SharedAccessToken, E>
    ) async -> (result: Result<SharedAccessToken, E>, adopted: Bool) {
        let lockKey = key + ".refresh"
        let giveUpAt = nowMillis() + Int64(claimMs) + 1000
        while true {
            let now = nowMillis()
            let stored = await store.get(key).flatMap(SharedAccessToken.parse).flatMap { $0.value == stale ? nil : $0 }
            if let t = stored, fresh(t, now) { return (.success(t), true) }
            switch await claim(store, lockKey, now: now, claimMs: claimMs) {
            case .mine(let mine):
                // The previous holder may have stored its token between our read and our claim.
                if let t = await store.get(key).flatMap(SharedAccessToken.parse), t.value != stale, fresh(t, nowMillis()) {
                    await release(store, lockKey, mine)
                    return (.success(t), true)
                }
                let r = await fetch()
                if case .success(let t) = r { await store.set(key, t.stored) }
                await release(store, lockKey, mine)
                return (r, false)
            case .unavailable:
                return (await fetch(), false)
            case .other:
                if let t = stored, valid(t, now) { return (.success(t), true) }
                if now >= giveUpAt { return (await fetch(), false) }  // the holder hangs: fetch anyway
                await Backoff.sleep(pollMs)
            }
        }
    }

    enum Claim { case mine(String), other, unavailable }

    /// Takes the refresh claim if nobody holds it (or the holder's lapsed).
    static func claim(_ store: any KeyValueStore, _ lockKey: String, now: Int64, claimMs: Int) async -> Claim {
        let current = await store.get(lockKey)
        if let c = current, let until = c.split(separator: ":").first.flatMap({ Int64($0) }), until > now { return .other }
        var g = SystemRandomNumberGenerator()
        let mine = "\(now + Int64(claimMs)):\(UInt64.random(in: 0...UInt64.max, using: &g))"
        switch await store.compareAndSet(lockKey, expected: current, new: mine) {
        case .swapped: return .mine(mine)
        case .conflict: return .other
        case .unavailable: return .unavailable
        }
    }

    /// Gives the claim back (if it is still ours) so that the next refresh need not wait for it to lapse.
    static func release(_ store: any KeyValueStore, _ lockKey: String, _ mine: String) async {
        _ = await store.compareAndSet(lockKey, expected: mine, new: "0:released")
    }
}
