import Foundation
import Logging
import Testing

@testable import PushlineCore

#if canImport(Glibc)
import Glibc
#endif

/// Tests/fakes/fake_fcm.py started as a subprocess: a real HTTP/2 + TLS server on loopback.
final class FakeFCMServer: @unchecked Sendable {
    let process = Process()
    /// The fake exits when this pipe closes, even if the test process is killed.
    let stdin = Pipe()
    let dir: String
    let port: Int
    let caFile: String
    let controlPort: Int
    let serviceAccounts: [String: String]

    init(projects: [String] = ["proj-a"]) throws {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let script = here.deletingLastPathComponent().appendingPathComponent("fakes/fake_fcm.py").path
        dir = NSTemporaryDirectory() + "fake-fcm-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var args = [script, "--dir", dir, "--exit-on-stdin-eof"]
        var sas: [String: String] = [:]
        for p in projects {
            sas[p] = dir + "/sa-\(p).json"
            args += ["--write-service-account", "\(dir)/sa-\(p).json:\(p)"]
        }
        serviceAccounts = sas
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + args
        let out = Pipe()
        process.standardOutput = out
        process.standardInput = stdin
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        var line = Data()
        while !line.contains(0x0A) {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            line.append(d)
        }
        let parts = String(decoding: line, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count >= 4, parts[0] == "READY", let p = Int(parts[1]), let c = Int(parts[3]) else {
            process.terminate()
            throw ConfigError("fake_fcm", "did not start: \(String(decoding: line, as: UTF8.self))")
        }
        port = p
        caFile = String(parts[2])
        controlPort = c
    }

    deinit { stop() }

    func stop() {
        if process.isRunning {
            try? stdin.fileHandleForWriting.close()
            process.terminate()
            process.waitUntilExit()
        }
    }

    var baseURL: String { "https://127.0.0.1:\(port)" }

    func config(project: String = "proj-a", timeoutMs: Int = 10_000) -> FCMConfig {
        FCMConfig(
            serviceAccountPath: serviceAccounts[project] ?? "", iidEndpoint: baseURL,
            connection: ProviderConnectionConfig(endpoint: baseURL, caFile: caFile, requestTimeoutMs: timeoutMs),
            path: "apps.test.fcm")
    }

    /// One control request (newline-delimited JSON over TCP); returns the answer.
    @discardableResult
    func control(_ req: JSONObject) throws -> JSONValue {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ConfigError("control", "socket failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(controlPort).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw ConfigError("control", "connect failed") }
        let line = JSONValue.object(req).serialized() + [0x0A]
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        var got: [UInt8] = []
        while !got.contains(0x0A) {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            got += buf[0..<n]
        }
        if let nl = got.firstIndex(of: 0x0A) { got = Array(got[..<nl]) }
        let v = try JSONValue.parse(got)
        guard v["ok"] == true else { throw ConfigError("control", "\(req): \(v.jsonString)") }
        return v
    }

    func stat(_ k: String) throws -> Int64 { try control(["op": "stats"])[k]?.intValue ?? -1 }
    func messages() throws -> [JSONValue] { try control(["op": "messages"])["messages"]?.arrayValue ?? [] }
}

actor FCMTestStore: KeyValueStore {
    var m: [String: String] = [:]
    func get(_ key: String) async -> String? { m[key] }
    func set(_ key: String, _ value: String) async { m[key] = value }
    func compareAndSet(_ key: String, expected: String?, new: String) async -> KVSwap {
        guard m[key] == expected else { return .conflict(current: m[key]) }
        m[key] = new
        return .swapped
    }
}

func fcmDevices(_ tokens: [String], app: String = "test") -> [Device] {
    tokens.enumerated().map { i, t in Device(id: Int64(i + 1), platform: .fcm, app: app, registrationId: t) }
}

/// The FCM provider against the fake FCM through the real HTTP/2 transport (no mocks).
@Suite(.serialized) struct FCMProviderTests {
    let transport = HTTPTransport()

    func provider(_ fake: FakeFCMServer, project: String = "proj-a", app: String = "test") throws -> FCMProvider {
        try FCMProvider(
            app: app, config: fake.config(project: project),
            context: ProviderContext(transport: transport, store: FCMTestStore(), logger: Logger(label: "test")))
    }

    func note(_ o: JSONObject) throws -> PushlineCore.PushNotification { try PushNotification(parsing: o) }

    @Test func sendsOneRequestPerTokenWithStringData() async throws {
        let fake = try FakeFCMServer()
        let p = try provider(fake)
        let n = try note(["message": "Hello", "title": "T", "extra": ["n": 1, "o": ["a": true]], "priority": "high"])
        try p.validate(n)
        let r = await p.send(n, to: fcmDevices(["tok-a", "tok-b", "tok-c"]))
        #expect(r.map(\.status) == [.sent, .sent, .sent])
        #expect(r.map(\.registrationId) == ["tok-a", "tok-b", "tok-c"])
        #expect(r.map(\.deviceId) == [1, 2, 3])
        for x in r { #expect(x.extra["message_id"]?.stringValue?.hasPrefix("projects/proj-a/messages/") == true) }
        let msgs = try fake.messages()
        #expect(msgs.count == 3)
        let m = try #require(msgs.first?["message"])
        #expect(m["notification"] == ["title": "T", "body": "Hello"])
        #expect(m["data"] == ["n": "1", "o": #"{"a":true}"#])
        #expect(m["android"]?["priority"] == "HIGH")
        #expect(Set(msgs.compactMap { $0["message"]?["token"]?.stringValue }) == ["tok-a", "tok-b", "tok-c"])
        #expect(try fake.stat("token_requests") == 1)
    }

    @Test func deadTokensAreDeactivatedOthersAreNot() async throws {
        let fake = try FakeFCMServer()
        try fake.control(["op": "unregister", "tokens": ["gone"]])
        try fake.control(["op": "invalid", "tokens": ["bogus"]])
        try fake.control(["op": "sender_mismatch", "tokens": ["other-sender"]])
        try fake.control(["op": "third_party_auth", "tokens": ["ios-token"]])
        let p = try provider(fake)
        let r = await p.send(try note(["message": "x"]), to: fcmDevices(["ok", "gone", "bogus", "other-sender", "ios-token"]))
        #expect(r[0].status == .sent)
        #expect(r[1].reason == "UNREGISTERED" && r[1].deactivate && !r[1].retryable)
        #expect(r[2].reason == "INVALID_ARGUMENT" && r[2].deactivate)
        #expect(r[3].reason == "SENDER_ID_MISMATCH" && r[3].deactivate)
        #expect(r[4].reason == "THIRD_PARTY_AUTH_ERROR" && !r[4].deactivate)
        #expect(r[4].extra["error"]?.stringValue?.contains("APNs") == true)
        // THIRD_PARTY_AUTH_ERROR is a 401 but must not be mistaken for an expired OAuth2 token.
        #expect(try fake.stat("token_requests") == 1)
    }

    @Test func invalidMessageDoesNotDeactivate() async throws {
        let fake = try FakeFCMServer()
        let p = try provider(fake)
        // Pushline does not check Android colors; Google (and the fake) refuse "red".
        let n = try note(["message": "x", "android": ["notification": ["color": "red"]]])
        try p.validate(n)
        let r = await p.send(n, to: fcmDevices(["tok-a"]))
        #expect(r[0].status == .failed)
        #expect(r[0].reason == "INVALID_ARGUMENT")
        #expect(!r[0].deactivate)
        #expect(r[0].extra["error"]?.stringValue?.contains("message.android.notification.color") == true)
    }

    @Test func unavailableIsRetriedHonouringRetryAfter() async throws {
        let fake = try FakeFCMServer()
        let p = try provider(fake)
        try fake.control(["op": "fail", "count": 2, "status": 503, "retry_after": 1])
        let t0 = monotonicNanos()
        let r = await p.send(try note(["message": "x"]), to: fcmDevices(["tok-a"]))
        let elapsedMs = (monotonicNanos() - t0) / 1_000_000
        #expect(r[0].status == .sent)
        #expect(try fake.stat("sends") == 3)
        #expect(elapsedMs >= 2000)  // two Retry-After: 1 waits

        try fake.control(["op": "fail", "count": 10, "status": 500])
        let r2 = await p.send(try note(["message": "x"]), to: fcmDevices(["tok-b"]))
        #expect(r2[0].status == .failed)
        #expect(r2[0].reason == "INTERNAL")
        #expect(r2[0].retryable)
        #expect(try fake.stat("sends") == 3 + Int64(FCMProvider.maxAttempts))
    }

    @Test func quotaBacksOffTheProjectOnly() async throws {
        let fake = try FakeFCMServer(projects: ["proj-a", "proj-b"])
        let a = try provider(fake, project: "proj-a", app: "a")
        let b = try provider(fake, project: "proj-b", app: "b")
        try fake.control(["op": "quota", "count": 1, "retry_after": 61])
        let r = await a.send(try note(["message": "x"]), to: fcmDevices(["tok-a"]))
        #expect(r[0].reason == "QUOTA_EXCEEDED")
        #expect(r[0].retryable)
        #expect((r[0].extra["retry_after_ms"]?.intValue ?? 0) >= 60_000)
        let sends = try fake.stat("sends")
        // During the backoff app a fails fast without calling Google...
        let t0 = monotonicNanos()
        let r2 = await a.send(try note(["message": "x"]), to: fcmDevices(["tok-a", "tok-b"]))
        #expect((monotonicNanos() - t0) / 1_000_000 < 1000)
        #expect(r2.allSatisfy { $0.reason == "QUOTA_EXCEEDED" && $0.retryable })
        #expect((r2[0].extra["retry_after_ms"]?.intValue ?? 0) > 55_000)
        #expect(try fake.stat("sends") == sends)
        // ...while app b (another project) still sends.
        let r3 = await b.send(try note(["message": "x"]), to: fcmDevices(["tok-c"]))
        #expect(r3[0].status == .sent)
    }

    @Test func deviceRateLimitDoesNotStopTheProject() async throws {
        let fake = try FakeFCMServer()
        let p = try provider(fake)
        try fake.control(["op": "quota", "count": 1, "scope": "device", "tokens": ["hot"]])
        let r = await p.send(try note(["message": "x"]), to: fcmDevices(["hot"]))
        #expect(r[0].reason == "QUOTA_EXCEEDED" && r[0].retryable)
        #expect((r[0].extra["retry_after_ms"]?.intValue ?? 0) >= 60_000)
        let r2 = await p.send(try note(["message": "x"]), to: fcmDevices(["hot", "cold"]))
        #expect(r2.allSatisfy { $0.status == .sent })
    }

    @Test func tokenRefreshIsSingleFlightUnderLoad() async throws {
        let fake = try FakeFCMServer()
        try fake.control(["op": "token_delay_ms", "ms": 300])
        let p = try provider(fake)
        let tokens = (0..<500).map { "tok-\($0)" }
        let r = await p.send(try note(["message": "x"]), to: fcmDevices(tokens))
        #expect(r.filter { $0.status == .sent }.count == 500)
        #expect(r.map(\.registrationId) == tokens)
        #expect(try fake.stat("token_requests") == 1)
        #expect(await p.tokenRequestCount == 1)

        // Every access token revoked: 500 sends get 401 and share one refresh.
        try fake.control(["op": "expire_tokens"])
        let r2 = await p.send(try note(["message": "y"]), to: fcmDevices(tokens))
        #expect(r2.filter { $0.status == .sent }.count == 500)
        #expect(try fake.stat("token_requests") == 2)
        #expect(try fake.stat("unauthenticated") >= 1)
    }

    @Test func tokenIsRefreshedInTheBackgroundBeforeItExpires() async throws {
        let fake = try FakeFCMServer()
        // The token endpoint takes 3 s; a token lives 20 s from the request: refreshed from 10 s
        // on, not used after 15 s. The first send returns at about 3 s. (With 800 ms and 6 s, a
        // 700 ms bound on the second send failed once at load 16: 1,364 ms.)
        try fake.control(["op": "token_ttl", "seconds": 20])
        try fake.control(["op": "token_delay_ms", "ms": 3000])
        let p = try provider(fake)
        let start = monotonicNanos()
        _ = await p.send(try note(["message": "x"]), to: fcmDevices(["a"]))
        // To 11 s after the first token's request: past its refresh time, 4 s before its stop time.
        try await Task.sleep(nanoseconds: max(0, 11_000_000_000 - (monotonicNanos() - start)))
        let t0 = monotonicNanos()
        let r = await p.send(try note(["message": "x"]), to: fcmDevices(["b"]))
        #expect(r[0].status == .sent)
        // Did not wait for the refresh (3 s): a few ms when healthy.
        #expect((monotonicNanos() - t0) / 1_000_000 < 2000)
        var requests: Int64 = 0
        for _ in 0..<200 {
            requests = try fake.stat("token_requests")
            if requests == 2 { break }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        #expect(requests == 2)
        let r2 = await p.send(try note(["message": "x"]), to: fcmDevices(["c"]))
        #expect(r2[0].status == .sent)
        #expect(try fake.stat("token_requests") == 2)
        #expect(try fake.stat("unauthenticated") == 0)
    }

    @Test func expiredTokenIsNotUsed() async throws {
        let fake = try FakeFCMServer()
        try fake.control(["op": "token_ttl", "seconds": 2])
        let p = try provider(fake)
        _ = await p.send(try note(["message": "x"]), to: fcmDevices(["a"]))
        try await Task.sleep(nanoseconds: 2_100_000_000)  // past the token's life
        let r = await p.send(try note(["message": "x"]), to: fcmDevices(["b"]))
        #expect(r[0].status == .sent)
        #expect(try fake.stat("token_requests") == 2)
        #expect(try fake.stat("unauthenticated") == 0)
    }

    @Test func topicsAndConditions() async throws {
        let fake = try FakeFCMServer()
        let p = try provider(fake)
        let r = await p.sendToTopic(try note(["message": "x"]), topic: "/topics/news", condition: nil)
        #expect(r.status == .sent)
        #expect(r.registrationId == "/topics/news")
        #expect(r.deviceId == nil)
        let cond = "'a' in topics && ('b' in topics || 'c' in topics)"
        let rc = await p.sendToTopic(try note(["message": "x"]), topic: nil, condition: cond)
        #expect(rc.status == .sent)
        let msgs = try fake.messages()
        #expect(msgs.first?["message"]?["topic"] == "news")
        #expect(msgs.last?["message"]?["condition"] == .string(cond))
        let bad = await p.sendToTopic(try note(["message": "x"]), topic: nil, condition: "'a' in topics &&")
        #expect(bad.status == .failed && bad.reason == "INVALID_ARGUMENT")
        #expect(try fake.messages().count == 2)
    }

    @Test func subscribeAndUnsubscribeInBatches() async throws {
        let fake = try FakeFCMServer()
        try fake.control(["op": "unregister", "tokens": ["gone"]])
        let p = try provider(fake)
        let r = await p.subscribe(fcmDevices(["t1", "gone", "t2"]), topic: "news")
        #expect(r.map(\.status) == [.sent, .failed, .sent])
        #expect(r[1].reason == "NOT_FOUND" && r[1].deactivate)
        var subs = try fake.control(["op": "subscriptions"])["subscriptions"]
        #expect(subs?["news"] == ["t1", "t2"])
        let u = await p.unsubscribe(fcmDevices(["t1"]), topic: "/topics/news")
        #expect(u[0].status == .sent)
        subs = try fake.control(["op": "subscriptions"])["subscriptions"]
        #expect(subs?["news"] == ["t2"])

        let many = (0..<2500).map { "m\($0)" }
        let calls = try fake.stat("iid_calls")
        try fake.control(["op": "unregister", "tokens": ["m1500", "m2499"]])
        let rm = await p.subscribe(fcmDevices(many), topic: "big")
        #expect(rm.count == 2500)
        #expect(rm.map(\.registrationId) == many)  // in order across the parallel batches
        #expect(rm.indices.filter { rm[$0].status == .failed } == [1500, 2499])
        #expect(try fake.stat("iid_calls") == calls + 3)  // 1000 + 1000 + 500
    }

    @Test func instanceIDRefreshesARevokedToken() async throws {
        let fake = try FakeFCMServer()
        let p = try provider(fake)
        #expect(await p.subscribe(fcmDevices(["t1"]), topic: "a")[0].status == .sent)
        try fake.control(["op": "expire_tokens"])
        let r = await p.subscribe(fcmDevices(["t2"]), topic: "a")
        #expect(r[0].status == .sent)
        #expect(try fake.stat("token_requests") == 2)
        #expect(try fake.stat("iid_calls") == 3)  // ok, 401, ok
    }

    @Test func dryRunValidatesOnly() async throws {
        let fake = try FakeFCMServer()
        try fake.control(["op": "unregister", "tokens": ["gone"]])
        let p = try provider(fake)
        let r = await p.send(try note(["message": "x", "dry_run": true]), to: fcmDevices(["ok", "gone"]))
        #expect(r[0].status == .sent && r[0].extra["dry_run"] == true)
        #expect(r[1].status == .failed && !r[1].deactivate)
        let msgs = try fake.messages()
        #expect(msgs.allSatisfy { $0["validate_only"] == true })
        #expect(try fake.stat("delivered") == 0)
    }

    @Test func transportFailuresUsePushlineReasons() async throws {
        let fake = try FakeFCMServer()
        // The token comes from the fake (the file's token_uri); the send endpoint refuses connections.
        var c = fake.config()
        c.connection.endpoint = "https://127.0.0.1:1"
        let p = try FCMProvider(
            app: "test", config: c,
            context: ProviderContext(transport: transport, store: FCMTestStore(), logger: Logger(label: "t")))
        let r = await p.send(try note(["message": "x"]), to: fcmDevices(["a"]))
        #expect(r[0].reason == "connect_error" && r[0].retryable)

        // No CA for the fake: TLS fails at the token endpoint already, and is not retryable.
        var c2 = fake.config()
        c2.connection.caFile = nil
        let p2 = try FCMProvider(
            app: "test", config: c2,
            context: ProviderContext(transport: transport, store: FCMTestStore(), logger: Logger(label: "t")))
        let r2 = await p2.send(try note(["message": "x"]), to: fcmDevices(["a"]))
        #expect(r2[0].reason == "tls_error" && !r2[0].retryable)
    }

    @Test func tokenEndpointFailures() async throws {
        let fake = try FakeFCMServer()
        let p = try provider(fake)
        // One 500 from the token endpoint is retried.
        try fake.control(["op": "token_fail", "count": 1, "status": 500])
        let r = await p.send(try note(["message": "x"]), to: fcmDevices(["a"]))
        #expect(r[0].status == .sent)
        #expect(try fake.stat("token_requests") == 2)
        // A refusal (400) is reported, not retried in a loop, and does not leak the assertion.
        try fake.control(["op": "expire_tokens"])
        try fake.control(["op": "token_fail", "count": 5, "status": 400])
        let r2 = await p.send(try note(["message": "x"]), to: fcmDevices(["a", "b"]))
        #expect(r2.allSatisfy { $0.reason == "AUTH_ERROR" && !$0.retryable })
        #expect(try fake.stat("token_requests") == 3)
        #expect(r2[0].extra["error"]?.stringValue?.contains("eyJ") == false)
    }

    @Test func badServiceAccountIsAConfigError() throws {
        let fake = try FakeFCMServer()
        let path = fake.dir + "/broken.json"
        #expect(FileManager.default.createFile(
            atPath: path,
            contents: Data(#"{"type":"service_account","client_email":"x@y","token_uri":"https://t","project_id":"p","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#.utf8)))
        var c = fake.config()
        c.serviceAccountPath = path
        do {
            _ = try FCMProvider(
                app: "test", config: c,
                context: ProviderContext(transport: transport, store: FCMTestStore(), logger: Logger(label: "t")))
            Issue.record("expected a ConfigError")
        } catch {
            #expect(error.path == "apps.test.fcm.service_account_path")
            #expect(error.message.contains("private_key"))
            #expect(!error.message.contains("AAAA"))
        }
    }
}
