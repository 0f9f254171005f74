import Synchronization
import Testing
@testable import PushlineCore

/// A KeyValueStore in memory, counting writes. Several `APNsTokenCache`s on one store are the
/// daemons of a fleet on one database; `beforeNextSwap` runs (once) just before the next
/// compare-and-set, so a test can let "another daemon" store its token between a cache's read
/// and its write.
final class APNsTestStore: KeyValueStore {
    let values = Mutex<[String: String]>([:])
    let writes = Mutex(0)
    let beforeNextSwap = Mutex<(@Sendable () async -> Void)?>(nil)
    func get(_ key: String) async -> String? { values.withLock { $0[key] } }
    func set(_ key: String, _ value: String) async {
        values.withLock { $0[key] = value }
        writes.withLock { $0 += 1 }
    }
    func compareAndSet(_ key: String, expected: String?, new: String) async -> KVSwap {
        if let hook = beforeNextSwap.withLock({ h in defer { h = nil }; return h }) { await hook() }
        return values.withLock { v in
            guard v[key] == expected else { return .conflict(current: v[key]) }
            v[key] = new
            writes.withLock { $0 += 1 }
            return .swapped
        }
    }
}

private func claims(_ jwt: String) throws -> JSONValue {
    let parts = jwt.split(separator: ".")
    try #require(parts.count == 3)
    return try JSONValue.parse(try #require(Base64URL.decode(String(parts[1]))))
}

private func header(_ jwt: String) throws -> JSONValue {
    let parts = jwt.split(separator: ".")
    return try JSONValue.parse(try #require(Base64URL.decode(String(parts[0]))))
}

@Suite("APNs provider token cache")
struct APNsTokenCacheTests {
    let creds: APNsTokenCache.Credentials

    init() throws {
        creds = APNsTokenCache.Credentials(teamId: "TEAM123456", keyId: "KEY1234567", key: try ECPrivateKey.generate())
    }

    @Test("mints an ES256 JWT with kid, iss and iat, and reuses it")
    func mintAndReuse() async throws {
        let cache = APNsTokenCache()
        let store = APNsTestStore()
        let t1 = try await cache.token(for: creds, store: store, nowSeconds: 1_000_000)
        #expect(try header(t1)["alg"] == .string("ES256"))
        #expect(try header(t1)["kid"] == .string("KEY1234567"))
        #expect(try claims(t1)["iss"] == .string("TEAM123456"))
        #expect(try claims(t1)["iat"] == .int(1_000_000))
        let t2 = try await cache.token(for: creds, store: store, nowSeconds: 1_000_000 + 49 * 60)
        #expect(t1 == t2)
        #expect(store.writes.withLock { $0 } == 1)
        #expect(await store.get("apns.jwt.TEAM123456.KEY1234567") == "1000000:\(t1)")
    }

    @Test("refreshes after 50 minutes")
    func refresh() async throws {
        let cache = APNsTokenCache()
        let store = APNsTestStore()
        let t1 = try await cache.token(for: creds, store: store, nowSeconds: 1_000_000)
        let t2 = try await cache.token(for: creds, store: store, nowSeconds: 1_000_000 + 50 * 60)
        #expect(t1 != t2)
        #expect(try claims(t2)["iat"] == .int(1_000_000 + 50 * 60))
    }

    @Test("a restart (new cache, same store) reuses the persisted token while it is fresh")
    func restart() async throws {
        let store = APNsTestStore()
        let t1 = try await APNsTokenCache().token(for: creds, store: store, nowSeconds: 1_000_000)
        let t2 = try await APNsTokenCache().token(for: creds, store: store, nowSeconds: 1_000_000 + 30 * 60)
        #expect(t1 == t2)
        let t3 = try await APNsTokenCache().token(for: creds, store: store, nowSeconds: 1_000_000 + 55 * 60)
        #expect(t3 != t1)
    }

    @Test("ExpiredProviderToken: a rejected token is replaced once, even by concurrent callers")
    func rejected() async throws {
        let cache = APNsTokenCache()
        let store = APNsTestStore()
        let t1 = try await cache.token(for: creds, store: store, nowSeconds: 1_000_000)
        let c = creds
        let results = try await withThrowingTaskGroup(of: String.self, returning: Set<String>.self) { g in
            for _ in 0..<20 {
                g.addTask { try await cache.token(for: c, store: store, nowSeconds: 1_000_010, rejected: t1) }
            }
            var s = Set<String>()
            for try await t in g { s.insert(t) }
            return s
        }
        #expect(results.count == 1)
        #expect(!results.contains(t1))
        #expect(store.writes.withLock { $0 } == 2)
    }

    @Test("concurrent first use mints one token")
    func concurrentFirstUse() async throws {
        let cache = APNsTokenCache()
        let store = APNsTestStore()
        let c = creds
        let results = try await withThrowingTaskGroup(of: String.self, returning: Set<String>.self) { g in
            for _ in 0..<50 { g.addTask { try await cache.token(for: c, store: store, nowSeconds: 2_000_000) } }
            var s = Set<String>()
            for try await t in g { s.insert(t) }
            return s
        }
        #expect(results.count == 1)
        #expect(store.writes.withLock { $0 } == 1)
    }

    // MARK: Timing rules (issue 11.3). The clock is `nowSeconds`: no test sleeps.

    static let t0: Int64 = 1_000_000
    static let minute: Int64 = 60

    @Test("every token has its own connection pool; a new token retires the previous token's pool")
    func poolsPerToken() async throws {
        let cache = APNsTokenCache()
        let store = APNsTestStore()
        let a = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0)
        #expect(a.pool != 0 && a.retiredPool == nil)
        let again = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 49 * Self.minute)
        #expect(again == a)
        let b = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 50 * Self.minute)
        #expect(b.jwt != a.jwt && b.pool != a.pool && b.pool != 0)
        #expect(b.retiredPool == a.pool)
        // Another key never shares a pool.
        let other = APNsTokenCache.Credentials(teamId: "TEAM123456", keyId: "KEYOTHER99", key: try ECPrivateKey.generate())
        let o = try await cache.lease(for: other, store: store, nowSeconds: Self.t0 + 50 * Self.minute)
        #expect(o.pool != b.pool && o.pool != a.pool)
        // A restart (new cache) reading the stored token back puts it on a pool of its own too.
        let r = try await APNsTokenCache().lease(for: creds, store: store, nowSeconds: Self.t0 + 51 * Self.minute)
        #expect(r.jwt == b.jwt && r.pool != b.pool && r.retiredPool == nil)
    }

    @Test("ExpiredProviderToken for a token that replaced another < 20 min ago: no new token until 20 min")
    func noSecondRefreshWithin20Minutes() async throws {
        let cache = APNsTokenCache()
        let store = APNsTestStore()
        let first = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0)
        // The first token of the process may be replaced at once.
        let second = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 60, rejected: first.jwt)
        #expect(second.jwt != first.jwt && second.retiredPool == first.pool)
        for later in [Self.t0 + 61, Self.t0 + 60 + 10 * Self.minute, Self.t0 + 60 + 20 * Self.minute - 1] {
            await #expect(throws: APNsTokenCache.TokenError.self) {
                _ = try await cache.lease(for: creds, store: store, nowSeconds: later, rejected: second.jwt)
            }
            #expect(try await cache.lease(for: creds, store: store, nowSeconds: later) == plain(second))
        }
        #expect(store.writes.withLock { $0 } == 2)
        let third = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 60 + 20 * Self.minute, rejected: second.jwt)
        #expect(third.jwt != second.jwt && third.retiredPool == second.pool)
        #expect(try claims(third.jwt)["iat"] == .int(Self.t0 + 60 + 20 * Self.minute))
    }

    @Test("the scheduled 50-minute token also counts: expired within 20 min of it is refused")
    func scheduledRefreshCounts() async throws {
        let cache = APNsTokenCache()
        let store = APNsTestStore()
        _ = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0)
        let scheduled = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 50 * Self.minute)
        do {
            _ = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 55 * Self.minute, rejected: scheduled.jwt)
            Issue.record("a token 5 minutes after the last refresh")
        } catch {
            guard case .refreshTooSoon(let age) = error else { throw error }
            #expect(age == 5 * Self.minute)
            #expect("\(error)".contains("20 minutes"))
        }
    }

    @Test("a token read back from the store may be replaced at once when Apple says it expired")
    func storedTokenMayBeReplaced() async throws {
        let store = APNsTestStore()
        let saved = try await APNsTokenCache().lease(for: creds, store: store, nowSeconds: Self.t0)
        let cache = APNsTokenCache()  // a restart
        let loaded = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 2 * Self.minute)
        #expect(loaded.jwt == saved.jwt)
        let fresh = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 3 * Self.minute, rejected: loaded.jwt)
        #expect(fresh.jwt != loaded.jwt)
        // ... but that replacement is then kept 20 minutes.
        await #expect(throws: APNsTokenCache.TokenError.self) {
            _ = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 4 * Self.minute, rejected: fresh.jwt)
        }
    }

    @Test("a token replacing a stale stored token counts as a refresh")
    func replacingStaleStoredTokenCounts() async throws {
        let store = APNsTestStore()
        _ = try await APNsTokenCache().lease(for: creds, store: store, nowSeconds: Self.t0)
        let cache = APNsTokenCache()
        let minted = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 55 * Self.minute)
        #expect(cache.entry(creds)?.replaced == true)
        await #expect(throws: APNsTokenCache.TokenError.self) {
            _ = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 56 * Self.minute, rejected: minted.jwt)
        }
    }

    @Test("TooManyProviderTokenUpdates: the token moves to a fresh pool once; concurrent refusals move it once")
    func movePoolOnce() async throws {
        let cache = APNsTokenCache()
        let store = APNsTestStore()
        let a = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0)
        let moved = try #require(cache.movePool(for: creds, refusedPool: a.pool))
        #expect(moved.jwt == a.jwt && moved.pool != a.pool && moved.retiredPool == a.pool)
        // Another refusal on the old pool: the current lease, nothing retired again.
        #expect(cache.movePool(for: creds, refusedPool: a.pool) == plain(moved))
        // A refusal on the fresh pool too: not the connection's doing, no more moves.
        #expect(cache.movePool(for: creds, refusedPool: moved.pool) == nil)
        #expect(try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 60).pool == moved.pool)
        #expect(store.writes.withLock { $0 } == 1)  // no token minted for a 429
        // A new token gets a fresh pool and may move again.
        let b = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0 + 50 * Self.minute)
        #expect(b.retiredPool == moved.pool)
        #expect(cache.movePool(for: creds, refusedPool: b.pool) != nil)
    }

    @Test("concurrent plain and rejecting callers: one new token; rejecting callers never get the rejected one")
    func concurrentRejecting() async throws {
        let cache = APNsTokenCache()
        let store = APNsTestStore()
        let a = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0)
        let c = creds
        let leases = try await withThrowingTaskGroup(
            of: (Bool, APNsTokenCache.Lease).self, returning: [(Bool, APNsTokenCache.Lease)].self
        ) { g in
            for i in 0..<40 {
                let rejecting = i % 2 == 0
                g.addTask {
                    (rejecting, try await cache.lease(for: c, store: store, nowSeconds: Self.t0 + 10, rejected: rejecting ? a.jwt : nil))
                }
            }
            var out: [(Bool, APNsTokenCache.Lease)] = []
            for try await l in g { out.append(l) }
            return out
        }
        #expect(leases.count == 40)
        #expect(store.writes.withLock { $0 } == 2)  // one new token for all
        let current = try #require(cache.entry(creds))
        #expect(current.jwt != a.jwt)
        #expect(leases.allSatisfy { !$0.0 || $0.1.jwt == current.jwt })
        // Plain callers may have got the old token before the mint (still fresh for them).
        #expect(leases.allSatisfy { $0.1.jwt == a.jwt || $0.1.jwt == current.jwt })
    }

    // MARK: A fleet: several processes (caches) on one store (issue 14).

    @Test("a second process adopts the stored token instead of minting one")
    func secondProcessAdopts() async throws {
        let store = APNsTestStore()
        let a = try await APNsTokenCache().lease(for: creds, store: store, nowSeconds: Self.t0)
        let b = try await APNsTokenCache().lease(for: creds, store: store, nowSeconds: Self.t0 + 5)
        #expect(b.jwt == a.jwt)
        #expect(store.writes.withLock { $0 } == 1)
    }

    @Test("losing the race to store a token: the winner's token is used, ours is never handed out")
    func lostRaceAdoptsWinner() async throws {
        let store = APNsTestStore()
        let other = APNsTokenCache()
        let c = creds
        let theirs = Mutex<String?>(nil)
        // The other process stores its token between our (empty) read and our write.
        store.beforeNextSwap.withLock {
            $0 = { let l = try? await other.lease(for: c, store: store, nowSeconds: Self.t0); theirs.withLock { $0 = l?.jwt } }
        }
        let cache = APNsTokenCache()
        let ours = try await cache.lease(for: creds, store: store, nowSeconds: Self.t0)
        let winner = try #require(theirs.withLock { $0 })
        #expect(ours.jwt == winner)
        #expect(cache.entry(creds)?.jwt == winner)
        #expect(store.writes.withLock { $0 } == 1)
        #expect(await store.get(c.cacheKey) == "\(Self.t0):\(winner)")
    }

    @Test("ExpiredProviderToken for a token another process already replaced: its replacement is adopted")
    func rejectedAlreadyReplacedElsewhere() async throws {
        let store = APNsTestStore()
        let (a, b) = (APNsTokenCache(), APNsTokenCache())
        let first = try await a.lease(for: creds, store: store, nowSeconds: Self.t0)
        #expect(try await b.lease(for: creds, store: store, nowSeconds: Self.t0).jwt == first.jwt)
        let replacement = try await a.lease(for: creds, store: store, nowSeconds: Self.t0 + 60, rejected: first.jwt)
        #expect(replacement.jwt != first.jwt)
        let adopted = try await b.lease(for: creds, store: store, nowSeconds: Self.t0 + 61, rejected: first.jwt)
        #expect(adopted.jwt == replacement.jwt && adopted.retiredPool != nil)
        #expect(store.writes.withLock { $0 } == 2)
        // The replacement's 20 minutes hold for the whole fleet: B (which only adopted it) refuses
        // to replace it too when Apple calls it expired minutes later.
        await #expect(throws: APNsTokenCache.TokenError.self) {
            _ = try await b.lease(for: creds, store: store, nowSeconds: Self.t0 + 5 * Self.minute, rejected: replacement.jwt)
        }
        #expect(store.writes.withLock { $0 } == 2)
    }

    @Test("the scheduled refresh: the process that comes second adopts the first's new token")
    func scheduledRefreshOnce() async throws {
        let store = APNsTestStore()
        let (a, b) = (APNsTokenCache(), APNsTokenCache())
        let first = try await a.lease(for: creds, store: store, nowSeconds: Self.t0)
        _ = try await b.lease(for: creds, store: store, nowSeconds: Self.t0)
        let x = try await a.lease(for: creds, store: store, nowSeconds: Self.t0 + 50 * Self.minute)
        let y = try await b.lease(for: creds, store: store, nowSeconds: Self.t0 + 50 * Self.minute + 3)
        #expect(x.jwt != first.jwt && y.jwt == x.jwt)
        #expect(store.writes.withLock { $0 } == 2)
    }

    @Test("TooManyProviderTokenUpdates with a token of our own: the fleet's stored token is adopted")
    func adoptSharedOn429() async throws {
        let store = APNsTestStore()
        let fleet = try await APNsTokenCache().lease(for: creds, store: store, nowSeconds: Self.t0)
        // This process minted its own while the database was out of reach.
        let lone = APNsTokenCache()
        let mine = try await lone.lease(for: creds, store: APNsTestStore(), nowSeconds: Self.t0 + 1)
        #expect(mine.jwt != fleet.jwt)
        let adopted = try #require(await lone.adoptShared(for: creds, store: store, nowSeconds: Self.t0 + 2, refused: mine.jwt))
        #expect(adopted.jwt == fleet.jwt && adopted.retiredPool == mine.pool && adopted.pool != mine.pool)
        // Later refusals of the old token: the current lease, no store read needed.
        #expect(await lone.adoptShared(for: creds, store: store, nowSeconds: Self.t0 + 3, refused: mine.jwt) == plain(adopted))
        // The store holds the refused token itself: nothing to adopt.
        #expect(await APNsTokenCache().adoptShared(for: creds, store: store, nowSeconds: Self.t0 + 3, refused: fleet.jwt) == nil)
    }

    @Test("a corrupt persisted value is ignored")
    func corrupt() async throws {
        let store = APNsTestStore()
        await store.set("apns.jwt.TEAM123456.KEY1234567", "garbage")
        let t = try await APNsTokenCache().token(for: creds, store: store, nowSeconds: 1_000_000)
        #expect(try claims(t)["iat"] == .int(1_000_000))
    }
}

/// `l` with no pool to retire (what the usual path returns).
private func plain(_ l: APNsTokenCache.Lease) -> APNsTokenCache.Lease {
    APNsTokenCache.Lease(jwt: l.jwt, pool: l.pool)
}
