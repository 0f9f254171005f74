import Testing
@testable import PushlineCore

/// Parses a JSON notification as a client would send it.
func apnsTestNote(_ json: String) throws -> PushNotification {
    let v = try JSONValue.parse(json)
    return try PushNotification(parsing: try #require(v.objectValue))
}

private func build(_ json: String, topic: String? = "com.example.app", requireTopic: Bool = true) throws -> APNsMessage {
    try APNsMessage(try apnsTestNote(json), defaultTopic: topic, requireTopic: requireTopic, nowSeconds: 1_700_000_000)
}

private func payload(_ m: APNsMessage) throws -> JSONValue { try JSONValue.parse(m.body) }

@Suite("APNs payload and headers")
struct APNsPayloadTests {
    @Test("a string message is a string alert; with a title it is a dictionary")
    func alertShapes() throws {
        let a = try payload(build(#"{"message":"Hello"}"#))
        #expect(a["aps"]?["alert"] == .string("Hello"))
        let b = try payload(build(#"{"message":"Hello","title":"Hi"}"#))
        #expect(b["aps"]?["alert"]?["title"] == .string("Hi"))
        #expect(b["aps"]?["alert"]?["body"] == .string("Hello"))
    }

    @Test("alert object keys become Apple's kebab-case")
    func alertObject() throws {
        let m = try build(
            #"{"message":{"title":"T","body":"B","loc_key":"K","loc_args":["a",1],"title_loc_args":["x"],"launch_image":"img.png"},"subtitle":"S","subtitle_loc_key":"SK"}"#
        )
        let alert = try #require(try payload(m)["aps"]?["alert"]?.objectValue)
        #expect(alert["loc-key"] == .string("K"))
        #expect(alert["loc-args"] == .array([.string("a"), .string("1")]))
        #expect(alert["title-loc-args"] == .array([.string("x")]))
        #expect(alert["launch-image"] == .string("img.png"))
        #expect(alert["subtitle"] == .string("S"))
        #expect(alert["subtitle-loc-key"] == .string("SK"))
        #expect(alert["loc_key"] == nil)
    }

    @Test("every aps field maps to Apple's key")
    func apsFields() throws {
        let m = try build(
            #"""
            {"message":"m","badge":3,"sound":{"critical":1,"name":"a.caf","volume":0.5},"category":"C","thread_id":"T",
             "mutable_content":true,"content_available":true,"target_content_id":"tc","interruption_level":"time-sensitive",
             "relevance_score":0.75,"filter_criterion":"work","url_args":["u"],"extra":{"custom":{"k":1},"n":2}}
            """#)
        let p = try payload(m)
        let aps = try #require(p["aps"]?.objectValue)
        #expect(aps["badge"] == .int(3))
        #expect(aps["sound"]?["critical"] == .int(1))
        #expect(aps["category"] == .string("C"))
        #expect(aps["thread-id"] == .string("T"))
        #expect(aps["mutable-content"] == .int(1))
        #expect(aps["content-available"] == .int(1))
        #expect(aps["target-content-id"] == .string("tc"))
        #expect(aps["interruption-level"] == .string("time-sensitive"))
        #expect(aps["relevance-score"] == .double(0.75))
        #expect(aps["filter-criterion"] == .string("work"))
        #expect(aps["url-args"] == .array([.string("u")]))
        #expect(p["custom"]?["k"] == .int(1))
        #expect(p["n"] == .int(2))
        #expect(m.pushType == "alert")
        #expect(m.header("apns-priority") == "10")
    }

    @Test("content-available only infers a background push with priority 5")
    func background() throws {
        let m = try build(#"{"content_available":true,"extra":{"sync":1}}"#)
        #expect(m.pushType == "background")
        #expect(m.header("apns-push-type") == "background")
        #expect(m.header("apns-priority") == "5")
        let hi = try build(#"{"content_available":true,"priority":"high"}"#)
        #expect(hi.header("apns-priority") == "5", "Apple rejects priority 10 for background pushes")
        let alert = try build(#"{"content_available":true,"message":"x"}"#)
        #expect(alert.pushType == "alert")
    }

    @Test("live activity fields")
    func liveActivity() throws {
        let m = try build(
            #"{"timestamp":1700000000,"event":"update","content_state":{"score":"1-0"},"stale_date":1700003600,"dismissal_date":1700007200,"attributes_type":"Match","attributes":{"team":"A"}}"#
        )
        #expect(m.pushType == "liveactivity")
        #expect(m.header("apns-topic") == "com.example.app.push-type.liveactivity")
        let aps = try #require(try payload(m)["aps"]?.objectValue)
        #expect(aps["event"] == .string("update"))
        #expect(aps["content-state"]?["score"] == .string("1-0"))
        #expect(aps["stale-date"] == .int(1_700_003_600))
        #expect(aps["dismissal-date"] == .int(1_700_007_200))
        #expect(aps["attributes-type"] == .string("Match"))
        #expect(aps["timestamp"] == .int(1_700_000_000))
    }

    @Test("topic suffix per push type", arguments: [
        ("voip", "com.example.app.voip"), ("complication", "com.example.app.complication"),
        ("fileprovider", "com.example.app.pushkit.fileprovider"), ("pushtotalk", "com.example.app.voip-ptt"),
        ("location", "com.example.app.location-query"), ("alert", "com.example.app"), ("mdm", "com.example.app"),
    ])
    func topicSuffix(type: String, topic: String) throws {
        let m = try build(#"{"message":"x","push_type":"\#(type)"}"#)
        #expect(m.header("apns-topic") == topic)
        #expect(m.header("apns-push-type") == type)
        #expect(m.limit == (type == "voip" ? 5120 : 4096))
    }

    @Test("the notification's topic overrides the app's; token auth requires one")
    func topicOverride() throws {
        #expect(try build(#"{"message":"x","topic":"org.other"}"#).header("apns-topic") == "org.other")
        #expect(throws: CommandError.self) { try build(#"{"message":"x"}"#, topic: nil) }
        #expect(try build(#"{"message":"x"}"#, topic: nil, requireTopic: false).header("apns-topic") == nil)
    }

    @Test("priority, expiration, collapse id and apns-id headers")
    func headers() throws {
        let m = try build(
            #"{"message":"x","priority":"normal","expiration":1700009999,"collapse_id":"c1","apns_id":"123e4567-e89b-12d3-a456-426614174000"}"#
        )
        #expect(m.header("apns-priority") == "5")
        #expect(m.header("apns-expiration") == "1700009999")
        #expect(m.header("apns-collapse-id") == "c1")
        #expect(m.header("apns-id") == "123e4567-e89b-12d3-a456-426614174000")
        #expect(try build(#"{"message":"x","priority":1}"#).header("apns-priority") == "1")
        #expect(try build(#"{"message":"x","time_to_live":60}"#).header("apns-expiration") == "1700000060")
        #expect(try build(#"{"message":"x"}"#).header("apns-expiration") == nil)
    }

    @Test("a collapse id over 64 bytes is invalid_argument")
    func collapseTooLong() throws {
        let long = String(repeating: "é", count: 33)  // 66 bytes
        do {
            _ = try build(#"{"message":"x","collapse_id":"\#(long)"}"#)
            Issue.record("expected an error")
        } catch let e as CommandError {
            #expect(e.code == .invalidArgument)
            #expect(e.message.contains("collapse_id"))
        }
        _ = try build(#"{"message":"x","collapse_id":"\#(String(repeating: "a", count: 64))"}"#)
    }

    @Test("bad values are invalid_argument", arguments: [
        #"{"message":"x","interruption_level":"loud"}"#, #"{"message":"x","relevance_score":2}"#,
        #"{"message":"x","push_type":"fax"}"#, #"{"message":"x","apns_id":"nope"}"#, #"{"message":"x","extra":{"aps":{}}}"#,
        #"{"message":"x","event":"pause"}"#, #"{"message":"x","apns":{"headers":{"authorization":"x"}}}"#,
        #"{"message":"x","badges":{"ab":-1}}"#, #"{"message":"x","loc_args":"notalist"}"#,
    ])
    func invalid(json: String) throws {
        do {
            _ = try build(json)
            Issue.record("expected invalid_argument for \(json)")
        } catch let e as CommandError {
            #expect(e.code == .invalidArgument)
        }
    }

    @Test("the raw apns block deep-merges payload and overrides headers")
    func rawBlock() throws {
        let m = try build(
            #"{"message":"x","badge":1,"apns":{"headers":{"apns-priority":5,"apns-push-type":"voip","apns-expiration":"0"},"payload":{"aps":{"badge":9,"sound":"s"},"top":true}}}"#
        )
        let p = try payload(m)
        #expect(p["aps"]?["alert"] == .string("x"))
        #expect(p["aps"]?["badge"] == .int(9))
        #expect(p["aps"]?["sound"] == .string("s"))
        #expect(p["top"] == .bool(true))
        #expect(m.header("apns-priority") == "5")
        #expect(m.header("apns-expiration") == "0")
        #expect(m.pushType == "voip")
        #expect(m.header("apns-topic") == "com.example.app.voip")
    }

    @Test("per-token badge map overrides the badge per device")
    func badges() throws {
        let m = try build(#"{"message":"x","badge":1,"badges":{"aa":5,"bb":12}}"#)
        #expect(try JSONValue.parse(m.body(for: "aa"))["aps"]?["badge"] == .int(5))
        #expect(try JSONValue.parse(m.body(for: "bb"))["aps"]?["badge"] == .int(12))
        #expect(try JSONValue.parse(m.body(for: "cc"))["aps"]?["badge"] == .int(1))
        // Clients may give tokens in upper case; the registry stores them lowercase.
        let upper = try build(#"{"message":"x","badges":{"ABCD":4}}"#)
        #expect(try JSONValue.parse(upper.body(for: "abcd"))["aps"]?["badge"] == .int(4))
    }

    @Test("payload over 4096 bytes (5120 for voip) is payload_too_large with the measured size")
    func sizeLimit() throws {
        let big = String(repeating: "a", count: 4100)
        let m = try build(#"{"message":"\#(big)"}"#)
        let r: Result<Void, CommandError> = Result { () throws(CommandError) in try m.checkSize() }
        guard case .failure(let e) = r else {
            Issue.record("expected payload_too_large")
            return
        }
        do {
            #expect(e.code == .payloadTooLarge)
            #expect(e.details["size"] == .int(Int64(m.body.count)))
            #expect(e.details["limit"] == .int(4096))
            #expect(e.message.contains("\(m.body.count)"))
        }
        let voip = try build(#"{"message":"\#(big)","push_type":"voip"}"#)
        try voip.checkSize()
        // Exactly at the limit passes.
        let overhead = try build(#"{"message":""}"#).body.count
        let exact = try build(#"{"message":"\#(String(repeating: "b", count: 4096 - overhead))"}"#)
        #expect(exact.body.count == 4096)
        try exact.checkSize()
    }
}

@Suite("APNs error mapping")
struct APNsErrorTests {
    @Test("Apple reasons round-trip; unknown reasons are kept")
    func reasons() {
        for (s, e) in APNsError.table {
            #expect(APNsError(reason: s) == e)
            #expect(e.reason == s)
        }
        #expect(APNsError(reason: "SomethingNew") == .unknown("SomethingNew"))
        #expect(APNsError(reason: "SomethingNew").reason == "SomethingNew")
    }

    @Test("which reasons deactivate a device and which are configuration errors")
    func classes() {
        for r in ["Unregistered", "ExpiredToken", "BadDeviceToken", "DeviceTokenNotForTopic"] {
            #expect(APNsError(reason: r).deactivatesDevice, "\(r)")
        }
        for r in ["TooManyRequests", "PayloadTooLarge", "BadTopic", "InvalidProviderToken"] {
            #expect(!APNsError(reason: r).deactivatesDevice, "\(r)")
        }
        #expect(APNsError(reason: "InvalidProviderToken").isConfigurationError)
        #expect(APNsError(reason: "BadCertificate").isConfigurationError)
        #expect(!APNsError(reason: "ExpiredProviderToken").isConfigurationError)
    }

    @Test("error bodies carry the reason and the 410 timestamp")
    func body() {
        let b = APNsErrorBody(Array(#"{"reason":"Unregistered","timestamp":1700000000123}"#.utf8))
        #expect(b.reason == "Unregistered")
        #expect(b.timestamp == 1_700_000_000_123)
        #expect(APNsErrorBody([]).reason == nil)
    }
}

@Suite("APNs provider helpers")
struct APNsHelperTests {
    @Test("transport failures map to Pushline's reasons")
    func transportReasons() {
        #expect(TransportError(.timeout, "x").protocolReason == "timeout")
        #expect(TransportError(.connect, "x").protocolReason == "connect_error")
        #expect(TransportError(.tls, "x").protocolReason == "tls_error")
        #expect(TransportError(.connectionLost, "x").protocolReason == "connection_lost")
    }

    @Test("a full device token never stays in a message")
    func redaction() {
        let t = String(repeating: "ab", count: 32)
        let m = "POST https://h/3/device/\(t) failed; again \(t)".replacingToken(t)
        #expect(!m.contains(t))
        #expect(m.contains("abababab..."))
        #expect("no token here".replacingToken(t) == "no token here")
    }

    @Test("only hexadecimal tokens are sent")
    func tokens() {
        #expect(APNsProvider.isValidToken(String(repeating: "aF0", count: 22)))
        #expect(!APNsProvider.isValidToken(""))
        #expect(!APNsProvider.isValidToken("abc/def"))
    }
}

@Suite("APNs outbox apns-ids")
struct APNsOutboxIdTests {
    /// The id of a delivery is stable across its attempts (a re-send after a crash carries the
    /// first one's): the job id's first 20 characters, then the delivery number's low 48 bits.
    @Test func outboxApnsIdLayout() {
        #expect(APNsProvider.outboxApnsId(job: "fb3f04e0894d72abf10d77aa", n: 1) == "fb3f04e0-894d-72ab-f10d-000000000001")
        #expect(APNsProvider.outboxApnsId(job: "0123456789abcdef0123", n: 0xABC_DEF0_1234) == "01234567-89ab-cdef-0123-0abcdef01234")
        #expect(APNsProvider.outboxApnsId(job: "abc", n: 255) == "abc00000-0000-0000-0000-0000000000ff")
        #expect(APNsProvider.outboxApnsId(job: "0123456789abcdef0123", n: -1) == "01234567-89ab-cdef-0123-ffffffffffff")
    }

    /// The message keeps the outbox job for the request builder, unless the client named its own `apns_id`.
    @Test func messageKeepsTheOutboxJob() throws {
        var n = try apnsTestNote(#"{"message":"hi"}"#)
        #expect(try APNsMessage(n, defaultTopic: "t", requireTopic: false, nowSeconds: 0).outboxJob == nil)
        n.outboxJob = "fb3f04e0894d72abf10d77aa"
        #expect(try APNsMessage(n, defaultTopic: "t", requireTopic: false, nowSeconds: 0).outboxJob == "fb3f04e0894d72abf10d77aa")
        var own = try apnsTestNote(#"{"message":"hi","apns_id":"123e4567-e89b-12d3-a456-426614174000"}"#)
        own.outboxJob = "fb3f04e0894d72abf10d77aa"
        let m = try APNsMessage(own, defaultTopic: "t", requireTopic: false, nowSeconds: 0)
        #expect(m.outboxJob == nil && m.header("apns-id") == "123e4567-e89b-12d3-a456-426614174000")
    }
}
