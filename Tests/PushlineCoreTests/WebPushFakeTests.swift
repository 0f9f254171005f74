// The WebPush provider against Tests/fakes/fake_webpush.py through the real HTTPTransport:
// the fake decrypts each body (RFC 8291) and verifies the VAPID JWT, so these check what a
// browser would receive, not only statuses.
import Foundation
import Testing
@testable import PushlineCore

@Suite(.serialized) final class WebPushFakeTests {
    let fake: FakeServer
    let transport = HTTPTransport()
    let provider: WebPushProvider

    init() throws {
        fake = try FakeServer(script: "fake_webpush.py")
        let (key, _) = try WW.vapidKey()
        let cfg = try WW.webpushConfig([
            "vapid_private_key_path": .string(key), "subject": "mailto:ops@example.com", "ttl": 300,
            "ca_file": .string(fake.caFile),
        ])
        provider = try WebPushProvider(app: "t", config: cfg, context: WW.context(transport))
    }

    deinit { transport.shutdown() }

    /// `n` new subscriptions as registry devices (ids from 1).
    func subscribe(_ n: Int, firstId: Int64 = 1) throws -> [(id: String, device: Device)] {
        let subs = try #require(try fake.control("POST", "/subscribe", ["count": .int(Int64(n))]).arrayValue)
        return subs.enumerated().map { i, s in
            (
                s["id"]?.stringValue ?? "",
                Device(
                    id: firstId + Int64(i), platform: .webpush, app: "t", registrationId: s["endpoint"]?.stringValue ?? "",
                    p256dh: s["p256dh"]?.stringValue, auth: s["auth"]?.stringValue)
            )
        }
    }

    func received(_ id: String) throws -> [JSONValue] {
        try fake.control("GET", "/received?id=\(id)").arrayValue ?? []
    }

    func script(_ id: String, _ responses: [JSONValue]) throws {
        _ = try fake.control("POST", "/script", ["id": .string(id), "responses": .array(responses)])
    }

    @Test func deliversEncryptedJSONWithValidVAPID() async throws {
        let subs = try subscribe(3)
        let n = try WW.notification([
            "message": "Your order shipped", "title": "Shop", "tag": "order-7", "extra": ["order": 7], "priority": "high",
            "collapse_id": "order7",
        ])
        try provider.validate(n)
        let results = await provider.send(n, to: subs.map(\.device))
        #expect(results.map(\.status) == [.sent, .sent, .sent])
        #expect(results.map(\.deviceId) == [1, 2, 3])
        for s in subs {
            let r = try received(s.id)
            #expect(r.count == 1)
            let rec = try #require(r.first)
            #expect(rec["ok"] == true, "fake rejected: \(rec["error"] ?? nil)")
            let plain = try JSONValue.parse(try #require(rec["plaintext"]?.stringValue))
            #expect(plain == ["title": "Shop", "message": "Your order shipped", "body": "Your order shipped", "tag": "order-7", "order": 7])
            #expect(rec["claims"]?["aud"] == .string(fake.origin))
            #expect(rec["claims"]?["sub"] == "mailto:ops@example.com")
            #expect(rec["headers"]?["ttl"] == "300")
            #expect(rec["headers"]?["urgency"] == "high")
            #expect(rec["headers"]?["topic"] == "order7")
            #expect(rec["headers"]?["content-encoding"] == "aes128gcm")
        }
    }

    @Test func rawPayloadAndTTL() async throws {
        let s = try subscribe(1)[0]
        let r = await provider.send(try WW.notification(["payload": "ping ✓", "time_to_live": 0]), to: [s.device])
        #expect(r[0].status == .sent)
        let rec = try #require(try received(s.id).first)
        #expect(rec["plaintext"] == "ping ✓")
        #expect(rec["headers"]?["ttl"] == "0")
    }

    @Test func goneAndNotFoundDeactivateOthersFailPlainly() async throws {
        let subs = try subscribe(5)
        try script(subs[0].id, [["status": 410]])
        try script(subs[1].id, [["status": 404]])
        try script(subs[2].id, [["status": 413]])
        try script(subs[3].id, [["status": 403, "body": #"{"message":"VAPID key mismatch"}"#]])
        let r = await provider.send(try WW.notification(["message": "m"]), to: subs.map(\.device))
        #expect(r.map(\.status) == [.failed, .failed, .failed, .failed, .sent])
        #expect(r[0].deactivate && r[0].reason == "gone")
        #expect(r[1].deactivate && r[1].reason == "not_found")
        #expect(!r[2].deactivate && r[2].reason == "payload_too_large")
        #expect(!r[3].deactivate && r[3].reason == "forbidden: VAPID key mismatch")
        #expect(!r[4].deactivate)
    }

    @Test func retriesHonourRetryAfter() async throws {
        let subs = try subscribe(2)
        try script(subs[0].id, [["status": 429, "headers": ["retry-after": "1"]], ["status": 503]])
        try script(subs[1].id, [["status": 500], ["status": 500], ["status": 500], ["status": 500]])
        let t0 = monotonicNanos()
        let r = await provider.send(try WW.notification(["message": "m"]), to: subs.map(\.device))
        let ms = (monotonicNanos() - t0) / 1_000_000
        #expect(r[0].status == .sent)
        #expect(try received(subs[0].id).map { $0["status"] } == [429, 503, 201])
        #expect(ms >= 1000, "Retry-After: 1 was not honoured (\(ms) ms)")
        #expect(r[1].status == .failed && r[1].retryable && r[1].reason == "http_500")
        #expect(try received(subs[1].id).count == WebPushProvider.maxAttempts)
    }

    @Test func unknownOriginAndBadKeysFailPerDevice() async throws {
        var subs = try subscribe(2).map(\.device)
        subs[1].p256dh = "AAAA"
        subs.append(Device(id: 9, platform: .webpush, app: "t", registrationId: fake.origin + "/push/nope", p256dh: subs[0].p256dh, auth: subs[0].auth))
        let r = await provider.send(try WW.notification(["message": "m"]), to: subs)
        #expect(r.map(\.status) == [.sent, .failed, .failed])
        #expect(r[1].reason?.hasPrefix("invalid_subscription") == true)
        #expect(r[2].deactivate)
    }
}
