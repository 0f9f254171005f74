import Synchronization
import Testing

@testable import PushlineCore

private struct FetchError: Error {}

/// Counts fetches; each returns a new token valid for an hour (after `delayMs`).
private final class Endpoint: Sendable {
    let count = Mutex(0)
    let delayMs: Int
    init(delayMs: Int = 0) { self.delayMs = delayMs }
    func fetch() async -> Result<SharedAccessToken, FetchError> {
        let k = count.withLock { c -> Int in
            c += 1
            return c
        }
        if delayMs > 0 { await Backoff.sleep(delayMs) }
        let now = nowMillis()
        return .success(SharedAccessToken(value: "tok-\(k)", issuedAtMs: now, expiresAtMs: now + 3_600_000))
    }
}

private func obtain(_ store: any KeyValueStore, _ e: Endpoint, stale: String? = nil, claimMs: Int = 5000) async -> (String?, Bool) {
    let r = await SharedAccessTokens.obtain(
        store: store, key: "acct", stale: stale, claimMs: claimMs,
        fresh: { t, now in t.expiresAtMs - 60_000 > now }, valid: { t, now in t.expiresAtMs - 60_000 > now }
    ) { await e.fetch() }
    return ((try? r.result.get())?.value, r.adopted)
}

/// `SharedAccessTokens`: one OAuth token per account for every daemon on one store (issue 14).
/// Each task stands for a daemon (they share nothing but the store).
@Suite struct SharedAccessTokenTests {
    @Test("daemons needing a token at once: one fetch, every daemon gets that token")
    func oneFetchForConcurrentDaemons() async {
        let store = MemoryStore()
        let e = Endpoint(delayMs: 200)
        let got = await withTaskGroup(of: String?.self, returning: [String?].self) { g in
            for _ in 0..<8 { g.addTask { await obtain(store, e).0 } }
            var out: [String?] = []
            for await t in g { out.append(t) }
            return out
        }
        #expect(e.count.withLock { $0 } == 1)
        #expect(Set(got) == ["tok-1"])
        // Later: adopted from the store, no fetch.
        let later = await obtain(store, e)
        #expect(later == ("tok-1", true))
        #expect(e.count.withLock { $0 } == 1)
    }

    @Test("a refused token is replaced once; daemons that saw it refused later adopt the replacement")
    func staleReplacedOnce() async {
        let store = MemoryStore()
        let e = Endpoint()
        #expect(await obtain(store, e).0 == "tok-1")
        #expect(await obtain(store, e, stale: "tok-1").0 == "tok-2")
        #expect(await obtain(store, e, stale: "tok-1") == ("tok-2", true))
        #expect(e.count.withLock { $0 } == 2)
    }

    @Test("a refresh claim whose holder died lapses; then another daemon fetches")
    func deadClaimHolderLapses() async {
        let store = MemoryStore()
        let e = Endpoint()
        // A claim taken by a daemon that died without storing a token, valid 300 ms more.
        await store.set("acct.refresh", "\(nowMillis() + 300):42")
        let started = nowMillis()
        #expect(await obtain(store, e, claimMs: 300).0 == "tok-1")
        #expect(nowMillis() - started >= 250)
        #expect(e.count.withLock { $0 } == 1)
    }

    @Test("without the database (compare-and-set unavailable) a daemon fetches its own")
    func unavailableStoreFetches() async {
        let e = Endpoint()
        #expect(await obtain(DownStore(), e) == ("tok-1", false))
        #expect(await obtain(DownStore(), e) == ("tok-2", false))
    }
}

/// A store whose database is down.
private struct DownStore: KeyValueStore {
    func get(_ key: String) async -> String? { nil }
    func set(_ key: String, _ value: String) async {}
    func compareAndSet(_ key: String, expected: String?, new: String) async -> KVSwap { .unavailable }
}
