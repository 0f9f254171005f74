import Synchronization
import Testing
@testable import PushlineCore

/// A KeyValueStore in memory, counting writes.
final class APNsTestStore: KeyValueStore {
    let values = Mutex<[String: String]>([:])
    let writes = Mutex(0)
    func get(_ key: String) async -> String? { values.withLock { $0[key] } }
    func set(_ key: String, _ value: String) async {
        values.withLock { $0[key] = value }
        writes.withLock { $0 += 1 }
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

    @Test("a corrupt persisted value is ignored")
    func corrupt() async throws {
        let store = APNsTestStore()
        await store.set("apns.jwt.TEAM123456.KEY1234567", "garbage")
        let t = try await APNsTokenCache().token(for: creds, store: store, nowSeconds: 1_000_000)
        #expect(try claims(t)["iat"] == .int(1_000_000))
    }
}
