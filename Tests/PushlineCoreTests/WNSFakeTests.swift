// The WNS provider against Tests/fakes/fake_wns.py through the real HTTPTransport.
import Foundation
import Testing
@testable import PushlineCore

@Suite(.serialized) final class WNSFakeTests {
    let fake: FakeServer
    let transport = HTTPTransport()

    init() throws {
        fake = try FakeServer(script: "fake_wns.py", args: ["--client-id", "ms-app://s-1-15-2-test", "--client-secret", "sekret"])
    }

    deinit { transport.shutdown() }

    func provider(secret: String = "sekret") throws -> WNSProvider {
        let cfg = try WW.wnsConfig([
            "package_sid": "ms-app://s-1-15-2-test", "client_secret": .string(secret),
            "token_url": .string(fake.origin + "/accesstoken.srf"), "ca_file": .string(fake.caFile),
        ])
        return try WNSProvider(app: "t", config: cfg, context: WW.context(transport))
    }

    func channels(_ n: Int) throws -> [(id: String, device: Device)] {
        let cs = try #require(try fake.control("POST", "/channel", ["count": .int(Int64(n))]).arrayValue)
        return cs.enumerated().map { i, c in
            (c["id"]?.stringValue ?? "", Device(id: Int64(i + 1), platform: .wns, app: "t", registrationId: c["uri"]?.stringValue ?? ""))
        }
    }

    func received(_ id: String) throws -> [JSONValue] { try fake.control("GET", "/received?id=\(id)").arrayValue ?? [] }
    func script(_ id: String, _ responses: [JSONValue]) throws {
        _ = try fake.control("POST", "/script", ["id": .string(id), "responses": .array(responses)])
    }
    func tokenRequests() throws -> Int64 { try fake.control("GET", "/stats")["token_requests"]?.intValue ?? -1 }

    @Test func toastToManyChannelsWithOneToken() async throws {
        let p = try provider()
        let cs = try channels(4)
        let r = await p.send(try WW.notification(["message": "Tom & Jerry <3", "title": "Hi", "time_to_live": 60]), to: cs.map(\.device))
        #expect(r.map(\.status) == [.sent, .sent, .sent, .sent])
        #expect(r[0].extra["wns_status"] == "received")
        #expect(r[0].extra["wns_msg_id"]?.stringValue?.isEmpty == false)
        #expect(try tokenRequests() == 1)
        let rec = try #require(try received(cs[0].id).first)
        #expect(rec["ok"] == true, "fake rejected: \(rec["error"] ?? nil)")
        #expect(rec["type"] == "wns/toast")
        #expect(rec["headers"]?["x-wns-ttl"] == "60")
        #expect(
            rec["body"]
                == "<toast><visual><binding template=\"ToastGeneric\"><text>Hi</text><text>Tom &amp; Jerry &lt;3</text></binding></visual></toast>")
    }

    @Test func rawBadgeAndTile() async throws {
        let p = try provider()
        let c = try channels(1)[0]
        for o: JSONObject in [
            ["wns_type": "raw", "wns_payload": "raw-bytes"], ["wns_type": "badge", "badge": 3], ["wns_type": "tile", "message": "t"],
        ] {
            let r = await p.send(try WW.notification(o), to: [c.device])
            #expect(r[0].status == .sent, "\(o): \(r[0].reason ?? "")")
        }
        let recs = try received(c.id)
        #expect(recs.map { $0["type"] } == ["wns/raw", "wns/badge", "wns/tile"])
        #expect(recs.map { $0["ok"] } == [true, true, true])
        #expect(recs[0]["body"] == "raw-bytes")
        #expect(recs[0]["content_type"] == "application/octet-stream")
    }

    @Test func statusesMapToResults() async throws {
        let p = try provider()
        let cs = try channels(5)
        try script(cs[0].id, [["status": 200, "wns_status": "dropped"]])
        try script(cs[1].id, [["status": 200, "wns_status": "channelthrottled"]])
        try script(cs[2].id, [["status": 410, "error": "channel expired"]])
        try script(cs[3].id, [["status": 404]])
        try script(cs[4].id, [["status": 406], ["status": 429, "headers": ["retry-after": "1"]]])
        let r = await p.send(try WW.notification(["message": "m"]), to: cs.map(\.device))
        #expect(r[0].status == .failed && r[0].retryable && r[0].reason == "dropped" && r[0].extra["wns_status"] == "dropped")
        #expect(r[1].status == .failed && r[1].retryable && r[1].reason == "channelthrottled")
        #expect(r[2].status == .failed && r[2].deactivate && r[2].extra["wns_error"] == "channel expired")
        #expect(r[3].status == .failed && r[3].deactivate)
        #expect(r[4].status == .sent)
        #expect(try received(cs[4].id).map { $0["status"] } == [406, 429, 200])
    }

    @Test func unauthorizedRefreshesTheTokenOnce() async throws {
        let p = try provider()
        let cs = try channels(3)
        var r = await p.send(try WW.notification(["message": "a"]), to: cs.map(\.device))
        #expect(r.map(\.status) == [.sent, .sent, .sent])
        _ = try fake.control("POST", "/revoke")
        r = await p.send(try WW.notification(["message": "b"]), to: cs.map(\.device))
        #expect(r.map(\.status) == [.sent, .sent, .sent])
        // One fetch at start, one after the revocation however many sends saw 401.
        #expect(try tokenRequests() == 2)
        let statuses = try received(cs[0].id).map { $0["status"] }
        #expect(statuses == [200, 401, 200])
    }

    @Test func badCredentialsFailEveryDevice() async throws {
        let p = try provider(secret: "wrong")
        let cs = try channels(2)
        let r = await p.send(try WW.notification(["message": "m"]), to: cs.map(\.device))
        #expect(r.map(\.status) == [.failed, .failed])
        #expect(r[0].reason?.hasPrefix("token_error") == true)
        #expect(r[0].reason?.contains("sekret") == false)
        #expect(!r[0].retryable)
        #expect(try received(cs[0].id).isEmpty)
    }

    @Test func dryRunChecksCredentialsButSendsNothing() async throws {
        let cs = try channels(2)
        let n = try WW.notification(["message": "m", "dry_run": true])
        let good = await (try provider()).send(n, to: cs.map(\.device))
        #expect(good.map(\.status) == [.sent, .sent])
        #expect(good[0].extra["dry_run"] == true)
        #expect(try tokenRequests() == 1)
        let bad = await (try provider(secret: "nope")).send(n, to: cs.map(\.device))
        #expect(bad.map(\.status) == [.failed, .failed])
        #expect(bad[0].reason?.hasPrefix("token_error") == true)
        #expect(try received(cs[0].id).isEmpty && received(cs[1].id).isEmpty)
    }
}
