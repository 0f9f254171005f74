import Foundation
import Logging
import Testing
@testable import PushlineCore

/// The fake APNs (Tests/fakes/fake_apns.py) as a child process: real HTTP/2 over TLS on loopback.
final class FakeAPNsProcess {
    let process = Process()
    let port: Int
    let caPath: String
    let adminPort: Int
    let workdir: String

    static var script: String {
        // Tests/PushlineCoreTests/<this file> → Tests/fakes/fake_apns.py
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fakes/fake_apns.py").path
    }

    init(_ args: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.script] + args
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.standardError
        try process.run()
        // Read the READY line byte by byte (the pipe stays open for the process's lifetime).
        var line = [UInt8]()
        let h = out.fileHandleForReading
        while true {
            let d = h.readData(ofLength: 1)
            if d.isEmpty || d[d.startIndex] == 0x0A { break }
            line.append(d[d.startIndex])
        }
        let parts = String(decoding: line, as: UTF8.self).split(separator: " ").map(String.init)
        guard parts.count == 5, parts[0] == "READY", let p = Int(parts[1]), let a = Int(parts[3]) else {
            kill(process.processIdentifier, SIGKILL)
            throw CommandError(.internalError, "fake APNs did not start: \(parts)")
        }
        port = p
        caPath = parts[2]
        adminPort = a
        workdir = parts[4]
    }

    deinit {
        // SIGKILL: the child may have inherited a blocked SIGTERM from the test thread.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// One admin HTTP/1.1 request on loopback; returns the JSON body.
    func admin(_ method: String, _ path: String, _ body: String = "") throws -> JSONValue {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CommandError(.internalError, "socket") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(adminPort).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw CommandError(.internalError, "connect to fake admin") }
        let req = Array("\(method) \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        _ = req.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        // The admin server closes the connection after its answer: read to EOF.
        var resp = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
            if n <= 0 { break }
            resp.append(contentsOf: buf[0..<n])
        }
        let text = String(decoding: resp, as: UTF8.self)
        guard let r = text.range(of: "\r\n\r\n") else { throw CommandError(.internalError, "bad admin answer") }
        return try JSONValue.parse(String(text[r.upperBound...]))
    }

    func control(_ json: String) throws { _ = try admin("POST", "/control", json) }
    func received() throws -> [JSONValue] { try admin("GET", "/received").arrayValue ?? [] }
    func state() throws -> JSONValue { try admin("GET", "/state") }
}

let apnsTestTeam = "TEAM123456"
let apnsTestKeyId = "KEY1234567"

func apnsTestToken(_ i: Int) -> String {
    let hex = String(i, radix: 16)
    return String(repeating: "a", count: 64 - hex.count) + hex
}

func apnsTestDevices(_ n: Int, base: Int = 1) -> [Device] {
    (0..<n).map { Device(id: Int64(base + $0), platform: .apns, app: "default", registrationId: apnsTestToken(base + $0)) }
}

/// An APNs provider aimed at a fake, with its own token cache and store.
func makeTestAPNsProvider(
    _ fake: FakeAPNsProcess, transport: HTTPTransport, extra: String = "", store: APNsTestStore = APNsTestStore(),
    cache: APNsTokenCache = APNsTokenCache(), keyId: String = apnsTestKeyId, keyPath: String? = nil
) throws -> APNsProvider {
    let kp = keyPath ?? "\(fake.workdir)/AuthKey_\(apnsTestKeyId).p8"
    let json = """
        {"key_path":"\(kp)","key_id":"\(keyId)","team_id":"\(apnsTestTeam)","topic":"com.example.app",
         "endpoint":"https://localhost:\(fake.port)","ca_file":"\(fake.caPath)"\(extra)}
        """
    var r = try ConfigReader(try JSONValue.parse(json), path: "apps.default.apns")
    let cfg = try APNsConfig(reading: &r)
    try r.finish()
    let ctx = ProviderContext(transport: transport, store: store, logger: Logger(label: "test.apns"))
    return try APNsProvider(app: "default", config: cfg, context: ctx, tokenCache: cache)
}

@Suite("APNs provider against the fake APNs (HTTP/2 + TLS)", .serialized)
struct APNsProviderTests {
    @Test("send: one result per device in order; 410 deactivates with Apple's timestamp; BadDeviceToken deactivates")
    func sendAndMap() async throws {
        let fake = try FakeAPNsProcess(["--gen-key", "\(apnsTestTeam):\(apnsTestKeyId)", "--topic", "com.example.app"])
        let transport = HTTPTransport()
        defer { transport.shutdown() }
        let p = try makeTestAPNsProvider(fake, transport: transport)
        let devs = apnsTestDevices(4)
        try fake.control(#"{"unregister":[{"token":"\#(apnsTestToken(2))","timestamp":1700000000123}]}"#)
        try fake.control(#"{"fail":[{"token":"\#(apnsTestToken(3))","status":400,"reason":"BadDeviceToken","count":-1}]}"#)
        try fake.control(#"{"fail":[{"token":"\#(apnsTestToken(4))","status":400,"reason":"BadTopic","count":-1}]}"#)
        let n = try apnsTestNote(#"{"message":"Hello","title":"T","badge":2,"extra":{"order":7},"collapse_id":"c"}"#)
        try p.validate(n)
        let rs = await p.send(n, to: devs)
        #expect(rs.map(\.registrationId) == devs.map(\.registrationId))
        #expect(rs[0].status == .sent)
        #expect(rs[0].extra["apns_id"]?.stringValue?.count == 36)
        #expect(rs[1].status == .failed && rs[1].reason == "Unregistered" && rs[1].deactivate)
        #expect(rs[1].invalidSince == 1_700_000_000_123)
        #expect(rs[2].reason == "BadDeviceToken" && rs[2].deactivate && rs[2].invalidSince == nil)
        #expect(rs[3].reason == "BadTopic" && !rs[3].deactivate && !rs[3].retryable)
        let got = try fake.received().first { $0["token"]?.stringValue == apnsTestToken(1) }
        let req = try #require(got)
        #expect(req["payload"]?["aps"]?["alert"]?["title"] == .string("T"))
        #expect(req["payload"]?["aps"]?["badge"] == .int(2))
        #expect(req["payload"]?["order"] == .int(7))
        #expect(req["headers"]?["apns-topic"] == .string("com.example.app"))
        #expect(req["headers"]?["apns-push-type"] == .string("alert"))
        #expect(req["headers"]?["apns-collapse-id"] == .string("c"))
        #expect(req["apns_id"] == rs[0].extra["apns_id"])
    }

    @Test("503 is retried with backoff; a persistent 429 fails retryable after 3 attempts")
    func retries() async throws {
        let fake = try FakeAPNsProcess(["--gen-key", "\(apnsTestTeam):\(apnsTestKeyId)"])
        let transport = HTTPTransport()
        defer { transport.shutdown() }
        let p = try makeTestAPNsProvider(fake, transport: transport)
        try fake.control(#"{"fail":[{"token":"\#(apnsTestToken(1))","status":503,"reason":"ServiceUnavailable","count":2}]}"#)
        try fake.control(#"{"fail":[{"token":"\#(apnsTestToken(2))","status":429,"reason":"TooManyRequests","count":-1}]}"#)
        let rs = await p.send(try apnsTestNote(#"{"message":"x"}"#), to: apnsTestDevices(3))
        #expect(rs[0].status == .sent)
        #expect(rs[1].status == .failed && rs[1].reason == "TooManyRequests" && rs[1].retryable)
        #expect(rs[2].status == .sent)
        let recv = try fake.received()
        #expect(recv.filter { $0["token"]?.stringValue == apnsTestToken(1) }.count == 3)
        #expect(recv.filter { $0["token"]?.stringValue == apnsTestToken(2) }.count == APNsProvider.maxAttempts)
    }

    @Test("ExpiredProviderToken: a new JWT is minted and the send retried once")
    func expiredProviderToken() async throws {
        let fake = try FakeAPNsProcess(["--gen-key", "\(apnsTestTeam):\(apnsTestKeyId)"])
        let transport = HTTPTransport()
        defer { transport.shutdown() }
        let store = APNsTestStore()
        let p = try makeTestAPNsProvider(fake, transport: transport, store: store)
        #expect(await p.send(try apnsTestNote(#"{"message":"a"}"#), to: apnsTestDevices(1))[0].status == .sent)
        try fake.control(#"{"expire_current":true}"#)
        let rs = await p.send(try apnsTestNote(#"{"message":"b"}"#), to: apnsTestDevices(5))
        #expect(rs.allSatisfy { $0.status == .sent })
        let team = try fake.state()["teams"]?[apnsTestTeam]
        #expect(team?["updates"] == .int(1))
        #expect(team?["jwts"]?.arrayValue?.count == 2)
        #expect(team?["rejected_updates"] == .int(0))
        // The new token is persisted for the next start.
        let saved = try #require(await store.get("apns.jwt.\(apnsTestTeam).\(apnsTestKeyId)"))
        #expect(saved.hasSuffix(team?["jwts"]?.arrayValue?.last?.stringValue ?? "-"))
    }

    @Test("InvalidProviderToken fails naming key id and team, then fails fast without sending")
    func invalidProviderToken() async throws {
        let fake = try FakeAPNsProcess(["--gen-key", "\(apnsTestTeam):\(apnsTestKeyId)", "--gen-key", "\(apnsTestTeam):OTHERKEY99"])
        let transport = HTTPTransport()
        defer { transport.shutdown() }
        // Sign with OTHERKEY99's key but claim kid KEY1234567: the signature does not verify.
        let p = try makeTestAPNsProvider(fake, transport: transport, keyPath: "\(fake.workdir)/AuthKey_OTHERKEY99.p8")
        let rs = await p.send(try apnsTestNote(#"{"message":"x"}"#), to: apnsTestDevices(1))
        #expect(rs[0].status == .failed && !rs[0].retryable)
        let reason = try #require(rs[0].reason)
        #expect(reason.contains("InvalidProviderToken") && reason.contains(apnsTestKeyId) && reason.contains(apnsTestTeam))
        let before = try fake.received().count
        let again = await p.send(try apnsTestNote(#"{"message":"y"}"#), to: apnsTestDevices(3))
        #expect(again.allSatisfy { $0.reason == reason })
        #expect(try fake.received().count == before, "no request while the configuration error holds")
    }

    @Test("certificate auth with an encrypted key")
    func certificateAuth() async throws {
        let fake = try FakeAPNsProcess(["--cert-mode", "--client-key-password", "s3cret", "--topic", "com.example.app"])
        let transport = HTTPTransport()
        defer { transport.shutdown() }
        let json = """
            {"certificate_path":"\(fake.workdir)/client.pem","certificate_password":"s3cret","topic":"com.example.app",
             "endpoint":"https://localhost:\(fake.port)","ca_file":"\(fake.caPath)"}
            """
        var r = try ConfigReader(try JSONValue.parse(json), path: "apps.default.apns")
        let cfg = try APNsConfig(reading: &r)
        let p = try APNsProvider(
            app: "default", config: cfg,
            context: ProviderContext(transport: transport, store: APNsTestStore(), logger: Logger(label: "t")))
        let rs = await p.send(try apnsTestNote(#"{"message":"x"}"#), to: apnsTestDevices(2))
        #expect(rs.allSatisfy { $0.status == .sent }, "\(rs.map { $0.reason ?? "" })")
        #expect(try fake.received().first?["headers"]?["authorization"] == nil)
        // A wrong password is a configuration error at construction, naming the key path.
        var bad = cfg
        bad.auth = .certificate(path: "\(fake.workdir)/client.pem", password: "wrong")
        do {
            _ = try APNsProvider(
                app: "default", config: bad,
                context: ProviderContext(transport: transport, store: APNsTestStore(), logger: Logger(label: "t")))
            Issue.record("expected a ConfigError")
        } catch {
            #expect(error.path == "apps.default.apns.certificate_password")
        }
    }

    @Test("dry_run builds everything and sends nothing")
    func dryRun() async throws {
        let fake = try FakeAPNsProcess(["--gen-key", "\(apnsTestTeam):\(apnsTestKeyId)"])
        let transport = HTTPTransport()
        defer { transport.shutdown() }
        let p = try makeTestAPNsProvider(fake, transport: transport)
        let rs = await p.send(try apnsTestNote(#"{"message":"x","dry_run":true}"#), to: apnsTestDevices(3))
        #expect(rs.allSatisfy { $0.status == .sent && $0.extra["dry_run"] == .bool(true) })
        #expect(try fake.received().isEmpty)
    }

    @Test("GOAWAY and a dropped connection: every device is still delivered")
    func goawayAndDrop() async throws {
        let fake = try FakeAPNsProcess(["--gen-key", "\(apnsTestTeam):\(apnsTestKeyId)"])
        let transport = HTTPTransport()
        defer { transport.shutdown() }
        let p = try makeTestAPNsProvider(fake, transport: transport)
        #expect(await p.send(try apnsTestNote(#"{"message":"warm"}"#), to: apnsTestDevices(1))[0].status == .sent)
        try fake.control(#"{"goaway_after":10,"goaway_times":2}"#)
        let rs = await p.send(try apnsTestNote(#"{"message":"x"}"#), to: apnsTestDevices(60))
        #expect(rs.filter { $0.status == .sent }.count == 60, "\(rs.compactMap(\.reason))")
        #expect(try fake.state()["goaways_sent"] == .int(2))
        try fake.control(#"{"drop_after":5,"drop_times":1}"#)
        let rs2 = await p.send(try apnsTestNote(#"{"message":"y"}"#), to: apnsTestDevices(30, base: 100))
        #expect(rs2.filter { $0.status == .sent }.count == 30, "\(rs2.compactMap(\.reason))")
    }

    @Test("a low SETTINGS_MAX_CONCURRENT_STREAMS then raised: all delivered")
    func lowMaxStreams() async throws {
        let fake = try FakeAPNsProcess(["--gen-key", "\(apnsTestTeam):\(apnsTestKeyId)", "--max-streams", "1"])
        let transport = HTTPTransport()
        defer { transport.shutdown() }
        let p = try makeTestAPNsProvider(fake, transport: transport)
        try fake.control(#"{"delay_ms":5}"#)
        let rs = await p.send(try apnsTestNote(#"{"message":"x"}"#), to: apnsTestDevices(20))
        #expect(rs.allSatisfy { $0.status == .sent }, "\(rs.compactMap(\.reason))")
        #expect(try fake.state()["protocol_errors"]?.arrayValue?.isEmpty == true)
        // The first connection may open streams before it has seen SETTINGS; afterwards one at a time.
        try fake.control(#"{"reset_stats":true}"#)
        let rs1 = await p.send(try apnsTestNote(#"{"message":"x"}"#), to: apnsTestDevices(10, base: 50))
        #expect(rs1.allSatisfy { $0.status == .sent })
        #expect(try fake.state()["max_active_streams"] == .int(1))
        try fake.control(#"{"max_streams":500,"reset_stats":true}"#)
        let rs2 = await p.send(try apnsTestNote(#"{"message":"x"}"#), to: apnsTestDevices(200))
        #expect(rs2.allSatisfy { $0.status == .sent })
        #expect((try fake.state()["max_active_streams"]?.intValue ?? 0) > 1, "the raised limit is used")
        #expect(try fake.state()["protocol_errors"]?.arrayValue?.isEmpty == true)
    }
}
