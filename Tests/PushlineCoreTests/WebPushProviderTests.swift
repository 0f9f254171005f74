import Foundation
import Testing
@testable import PushlineCore

@Suite struct WebPushPayloadTests {
    @Test func notificationJSONForTheServiceWorker() throws {
        let n = try WW.notification([
            "message": "Hello", "title": "Greeting", "tag": "t1", "icon": "/i.png", "url": "https://x.test/a",
            "badge": 2, "extra": ["order": 42, "title": "ignored: typed title wins"],
        ])
        let v = try JSONValue.parse(try WebPushProvider.payload(n))
        #expect(v["title"] == "Greeting")
        #expect(v["message"] == "Hello")
        #expect(v["body"] == "Hello")
        #expect(v["tag"] == "t1")
        #expect(v["icon"] == "/i.png")
        #expect(v["url"] == "https://x.test/a")
        #expect(v["badge"] == .int(2))
        #expect(v["order"] == .int(42))
        #expect(v.objectValue?.keys == ["title", "message", "body", "tag", "icon", "url", "badge", "order"])
    }

    @Test func alertObjectGivesTitleAndBody() throws {
        let n = try WW.notification(["message": ["title": "T", "body": "B"]])
        let v = try JSONValue.parse(try WebPushProvider.payload(n))
        #expect(v["title"] == "T")
        #expect(v["message"] == "B")
    }

    @Test func rawPayloadString() throws {
        let n = try WW.notification(["payload": "plain text ✓", "message": "unused"])
        #expect(try WebPushProvider.payload(n) == Array("plain text ✓".utf8))
        let o = try WW.notification(["payload": ["a": 1]])
        #expect(try WebPushProvider.payload(o) == Array(#"{"a":1}"#.utf8))
        #expect(throws: CommandError.self) { try WebPushProvider.payload(try WW.notification(["payload": 3])) }
        #expect(throws: CommandError.self) { try WebPushProvider.payload(try WW.notification(["tag": 3])) }
    }

    @Test func payloadTooLargeIsRefusedInValidate() throws {
        let (key, _) = try WW.vapidKey()
        let p = try WebPushProvider(
            app: "t", config: try WW.webpushConfig(["vapid_private_key_path": .string(key), "subject": "mailto:a@b.c"]),
            context: WW.context())
        // 3993 plaintext bytes encrypt to exactly 4096.
        let fits = String(repeating: "x", count: 3993)
        try p.validate(try WW.notification(["payload": .string(fits)]))
        do throws(CommandError) {
            try p.validate(try WW.notification(["payload": .string(fits + "y")]))
            Issue.record("expected payload_too_large")
        } catch {
            #expect(error.code == .payloadTooLarge)
            #expect(error.details["size"] == .int(4097))
            #expect(error.details["limit"] == .int(4096))
        }
    }
}

@Suite struct WebPushHeaderTests {
    func headers(_ o: JSONObject, ttl: Int = 86_400, now: Int64 = 1_000) throws -> [String: String] {
        var d: [String: String] = [:]
        for (k, v) in try WebPushProvider.headers(try WW.notification(o), defaultTTL: ttl, now: now) { d[k] = v }
        return d
    }

    @Test func ttlFromNotificationConfigOrExpiration() throws {
        #expect(try headers([:], ttl: 600)["ttl"] == "600")
        #expect(try headers(["time_to_live": 30])["ttl"] == "30")
        #expect(try headers(["expiration": 1_090], now: 1_000)["ttl"] == "90")
        #expect(try headers(["expiration": 10], now: 1_000)["ttl"] == "0")
    }

    @Test func urgencyFromFieldOrPriority() throws {
        #expect(try headers(["urgency": "very-low"])["urgency"] == "very-low")
        #expect(try headers(["priority": "high"])["urgency"] == "high")
        #expect(try headers(["priority": "normal"])["urgency"] == "normal")
        #expect(try headers([:])["urgency"] == nil)
        #expect(throws: CommandError.self) { try headers(["urgency": "urgent"]) }
    }

    @Test func topicFromFieldOrCollapseId() throws {
        #expect(try headers(["webpush_topic": "news-1"])["topic"] == "news-1")
        #expect(try headers(["collapse_id": "scores"])["topic"] == "scores")
        // Not a valid Topic: hashed to 32 base64url characters, stable.
        let h = try headers(["collapse_id": "match 12: scores!"])["topic"]
        #expect(h?.count == 32)
        #expect(h.map(WebPushProvider.isValidTopic) == true)
        #expect(try headers(["collapse_id": "match 12: scores!"])["topic"] == h)
        #expect(throws: CommandError.self) { try headers(["webpush_topic": .string(String(repeating: "a", count: 33))]) }
        #expect(throws: CommandError.self) { try headers(["webpush_topic": "a b"]) }
    }

    @Test func extraHeadersFromWebpushBlock() throws {
        #expect(try headers(["webpush": ["headers": ["TTL": "5", "X-Custom": "1"]]])["ttl"] == "5")
        let custom: JSONObject = ["webpush": ["headers": ["X-Custom": "1"]]]
        #expect(try headers(custom)["x-custom"] == "1")
        #expect(throws: CommandError.self) { try headers(["webpush": ["headers": ["Authorization": "x"]]]) }
        #expect(throws: CommandError.self) { try headers(["webpush": ["other": 1]]) }
        #expect(throws: CommandError.self) { try headers(["webpush": ["headers": ["X-A": "a\r\nb"]]]) }
    }
}

@Suite struct WebPushVAPIDTests {
    func provider(endpoint: String? = nil) throws -> WebPushProvider {
        let (key, _) = try WW.vapidKey()
        var cfg: JSONObject = ["vapid_private_key_path": .string(key), "subject": "mailto:ops@example.com", "ttl": 120]
        if let endpoint { cfg["endpoint"] = .string(endpoint) }
        return try WebPushProvider(app: "t", config: try WW.webpushConfig(.object(cfg)), context: WW.context())
    }

    @Test func jwtClaimsAndHeader() throws {
        let p = try provider()
        let now = Int64(Date().timeIntervalSince1970)
        let auth = try p.authorization(origin: "https://push.example.net:8443", now: now)
        #expect(auth.hasPrefix("vapid t="))
        #expect(auth.hasSuffix(", k=" + p.applicationServerKey))
        let jwt = String(auth.dropFirst("vapid t=".count).split(separator: ",")[0])
        let parts = jwt.split(separator: ".").map(String.init)
        #expect(parts.count == 3)
        let header = try JSONValue.parse(try #require(Base64URL.decode(parts[0])))
        let claims = try JSONValue.parse(try #require(Base64URL.decode(parts[1])))
        #expect(header["alg"] == "ES256")
        #expect(header["typ"] == "JWT")
        #expect(claims["aud"] == "https://push.example.net:8443")
        #expect(claims["sub"] == "mailto:ops@example.com")
        let exp = try #require(claims["exp"]?.intValue)
        #expect(exp == now + 12 * 3600)
        #expect(try #require(Base64URL.decode(parts[2])).count == 64)
        #expect(Base64URL.decode(p.applicationServerKey)?.count == 65)
    }

    @Test func jwtCachedPerOriginUntilNearExpiry() throws {
        let p = try provider()
        let now: Int64 = 1_800_000_000
        let a = try p.authorization(origin: "https://a.test", now: now)
        #expect(try p.authorization(origin: "https://a.test", now: now + 3600) == a)
        #expect(try p.authorization(origin: "https://b.test", now: now) != a)
        // Within an hour of expiry: a new token.
        #expect(try p.authorization(origin: "https://a.test", now: now + 11 * 3600 + 1) != a)
    }

    @Test func endpointURLs() throws {
        let p = try provider()
        let full = Device(id: 1, platform: .webpush, app: "t", registrationId: "https://fcm.googleapis.com:443/fcm/send/abc?x=1")
        #expect(p.endpointURL(full)?.origin == "https://fcm.googleapis.com")
        #expect(p.endpointURL(full)?.rest == "/fcm/send/abc?x=1")
        let django = Device(id: 2, platform: .webpush, app: "t", registrationId: "abc123", browser: "firefox")
        #expect(p.endpointURL(django).map { $0.origin + $0.rest } == "https://updates.push.services.mozilla.com/wpush/v2/abc123")
        #expect(p.endpointURL(Device(id: 3, platform: .webpush, app: "t", registrationId: "abc123")) == nil)
        #expect(p.endpointURL(Device(id: 4, platform: .webpush, app: "t", registrationId: "http://insecure.test/x")) == nil)

        let q = try provider(endpoint: "https://127.0.0.1:9999")
        #expect(q.endpointURL(full).map { $0.origin + $0.rest } == "https://127.0.0.1:9999/fcm/send/abc?x=1")
    }

    @Test func keysAcceptBase64URLAndStandardAndEncryptionRoundTrips() throws {
        let p = try provider()
        let sub = try ECPrivateKey.generate()
        let auth = Random.bytes(16)
        // The django JavaScript sends btoa() output: standard alphabet with padding.
        let d = Device(
            id: 7, platform: .webpush, app: "t", registrationId: "https://push.test/x",
            p256dh: Base64.encode(sub.publicKeyUncompressed), auth: Base64.encode(auth))
        let k = try #require(p.keys(d))
        #expect(k.auth == auth)
        let body = try WebPushCrypto.encrypt(Array("hi".utf8), to: k.publicKey, authSecret: k.auth)
        #expect(try WebPushCrypto.decrypt(body, subscriberKey: sub, authSecret: auth) == Array("hi".utf8))
        #expect(p.keys(Device(id: 8, platform: .webpush, app: "t", registrationId: "x", p256dh: "AAAA", auth: Base64URL.encode(auth))) == nil)
    }

    @Test func dryRunBuildsWithoutSending() async throws {
        let p = try provider()
        let sub = try ECPrivateKey.generate()
        let good = Device(
            id: 1, platform: .webpush, app: "t", registrationId: "https://push.test/x",
            p256dh: Base64URL.encode(sub.publicKeyUncompressed), auth: Base64URL.encode(Random.bytes(16)))
        let bad = Device(id: 2, platform: .webpush, app: "t", registrationId: "https://push.test/y", p256dh: "zz", auth: "zz")
        let r = await p.send(try WW.notification(["message": "m", "dry_run": true]), to: [good, bad])
        #expect(r.count == 2)
        #expect(r[0].status == .sent)
        #expect(r[0].extra["dry_run"] == true)
        #expect(r[1].status == .failed)
        #expect(r[1].reason?.hasPrefix("invalid_subscription") == true)
    }

    @Test func badKeyFileIsAConfigError() throws {
        let dir = WW.tempDir()
        let path = dir + "/bad.pem"
        FileManager.default.createFile(atPath: path, contents: Data("not a key".utf8))
        let cfg = try WW.webpushConfig(["vapid_private_key_path": .string(path), "subject": "mailto:a@b.c"])
        #expect(throws: ConfigError.self) { try WebPushProvider(app: "t", config: cfg, context: WW.context()) }
    }
}

@Suite struct VAPIDToolTests {
    @Test func generateWritesA0600PKCS8KeyAndShowReadsIt() throws {
        let dir = WW.tempDir()
        let r = try VAPIDTool.generate(outDir: dir)
        #expect(r.privateKeyPath == dir + "/vapid_private.pem")
        let attrs = try FileManager.default.attributesOfItem(atPath: r.privateKeyPath)
        #expect((attrs[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let pem = try String(contentsOfFile: r.privateKeyPath, encoding: .utf8)
        #expect(pem.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        let pub = try #require(Base64URL.decode(r.applicationServerKey))
        #expect(pub.count == 65 && pub[0] == 4)
        #expect(try VAPIDTool.publicKey(privateKeyPath: r.privateKeyPath) == r.applicationServerKey)
        // A second key is different, and an existing file is never overwritten.
        #expect(throws: (any Error).self) { try VAPIDTool.generate(outDir: dir) }
        #expect(try VAPIDTool.generate(outDir: WW.tempDir()).applicationServerKey != r.applicationServerKey)
    }

    @Test func showFailsOnMissingOrBadFiles() throws {
        #expect(throws: (any Error).self) { try VAPIDTool.publicKey(privateKeyPath: "/nonexistent/key.pem") }
        let path = WW.tempDir() + "/x.pem"
        FileManager.default.createFile(atPath: path, contents: Data("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".utf8))
        #expect(throws: (any Error).self) { try VAPIDTool.publicKey(privateKeyPath: path) }
    }
}
