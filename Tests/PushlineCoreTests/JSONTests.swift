import Testing

@testable import PushlineCore

@Suite struct JSONTests {
    @Test func parsesEveryKind() throws {
        let v = try JSONValue.parse(#"{"a":1,"b":-2.5e1,"c":"x\ny\u00e9\ud83d\ude00","d":[true,false,null],"e":{}}"#)
        #expect(v["a"] == .int(1))
        #expect(v["b"] == .double(-25))
        #expect(v["c"] == .string("x\nyé😀"))
        #expect(v["d"] == .array([.bool(true), .bool(false), .null]))
        #expect(v["e"] == .object(JSONObject()))
    }

    @Test func keepsKeyOrderAndRoundTrips() throws {
        let text = #"{"id":7,"ok":true,"s":"q\"\\\t\u0001","n":[1,2.5]}"#
        let v = try JSONValue.parse(text)
        #expect(v.jsonString == text)
        #expect(v.objectValue?.keys == ["id", "ok", "s", "n"])
    }

    @Test(arguments: [
        "", "{", "{\"a\":}", "[1,]", "{\"a\":1,}", "tru", "01", "1.", "\"\\x\"", "\"\u{01}\"", "{\"a\":1} x", "\"\\ud800\"",
        "-", "[1 2]",
    ])
    func rejectsInvalid(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }

    @Test("large raw values are handed over as segments, and the segments join to the same JSON")
    func serializedSegments() throws {
        let big = [UInt8](repeating: UInt8(ascii: "1"), count: 70_000)
        let parts: [[UInt8]] = [Array("[".utf8) + big, Array(",2]".utf8)]
        let v = JSONValue.object(["id": .int(1), "results": .raw(parts), "tail": .string("t")])
        let segments = v.serializedSegments()
        #expect(segments.count == 4)  // head, the two raw parts as they are, tail
        #expect(segments[1] == parts[0])
        #expect(segments[2] == parts[1])
        #expect(segments.flatMap { $0 } == v.serialized())
        let text = String(decoding: v.serialized(), as: UTF8.self)
        #expect(text.hasPrefix(#"{"id":1,"results":[111"#) && text.hasSuffix(#"1,2],"tail":"t"}"#))
        // Small raw values (and values without raw) stay one segment.
        let small = JSONValue.object(["results": .raw([Array("[1]".utf8)])])
        #expect(small.serializedSegments() == [Array(#"{"results":[1]}"#.utf8)])
    }

    @Test func rejectsInvalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0xFF, 0x22]) }
    }

    @Test func limitsNesting() {
        let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
        let ok = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect((try? JSONValue.parse(ok)) != nil)
    }

    @Test func duplicateKeysKeepTheLast() throws {
        let v = try JSONValue.parse(#"{"a":1,"a":2}"#)
        #expect(v.objectValue?.pairs.count == 1)
        #expect(v["a"] == .int(2))
    }

    @Test func duplicateKeysInLargeObjectsKeepTheLastAtTheFirstPlace() throws {
        // Past the scan threshold duplicates are found through an index: same result as a scan.
        var text = "{"
        for k in 0..<40 { text += "\"k\(k)\":\(k)," }
        text += "\"k3\":\"late\",\"k39\":true,\"k0\":null,\"new\":1}"
        let o = try #require(try JSONValue.parse(text).objectValue)
        #expect(o.pairs.count == 41)
        #expect(o.pairs[0].0 == "k0" && o.pairs[0].1 == .null)
        #expect(o.pairs[3].0 == "k3" && o.pairs[3].1 == .string("late"))
        #expect(o.pairs[39].0 == "k39" && o.pairs[39].1 == .bool(true))
        #expect(o.pairs[40].0 == "new")
    }

    @Test func manyKeysParseInLinearTime() throws {
        // 200,000 distinct keys: a scan of earlier keys per key took minutes; the index, well under a second.
        var text = "{"
        for k in 0..<200_000 { text += "\"key\(k)\":\(k)," }
        text += "\"key0\":-1}"
        let clock = ContinuousClock()
        let start = clock.now
        let o = try #require(try JSONValue.parse(text).objectValue)
        let took = clock.now - start
        #expect(o.pairs.count == 200_000)
        #expect(o.pairs[0].1 == .int(-1))
        #expect(took < .seconds(20), "parsing 200,000 keys took \(took)")
    }

    @Test func bigIntegersBecomeDoubles() throws {
        #expect(try JSONValue.parse("9223372036854775807") == .int(Int64.max))
        #expect(try JSONValue.parse("92233720368547758070") == .double(92233720368547758070))
    }
}

@Suite struct NotificationTests {
    @Test func parsesCommonFields() throws {
        let n = try PushNotification(parsing: [
            "message": "Hello", "badge": 3, "priority": "high", "extra": ["k": "v"], "content_available": true,
            "time_to_live": 60,
        ])
        #expect(n.bodyText == "Hello")
        #expect(n.badge == 3)
        #expect(n.priority == .high)
        #expect(n.extra?["k"] == .string("v"))
        #expect(n.contentAvailable)
        #expect(n.timeToLive == 60)
    }

    @Test func alertObjectGivesTitleAndBody() throws {
        let n = try PushNotification(parsing: ["message": ["title": "T", "body": "B"]])
        #expect(n.titleText == "T")
        #expect(n.bodyText == "B")
    }

    @Test(arguments: [
        ("badge", JSONValue.int(-1)), ("badge", "x"), ("priority", "urgent"), ("priority", 7), ("message", 5),
        ("extra", "x"), ("expiration", -5), ("content_available", "yes"), ("title", 1),
    ] as [(String, JSONValue)])
    func rejectsBadFieldNamingIt(_ key: String, _ value: JSONValue) {
        do {
            _ = try PushNotification(parsing: JSONObject([(key, value)]))
            Issue.record("accepted \(key)=\(value)")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.details["field"] == .string(key))
        }
    }
}

@Suite struct ArgumentsTests {
    @Test func rejectsUnknownArguments() {
        var a = Arguments(["cmd": "devices", "limit": 5, "lmit": 3])
        #expect((try? a.int("limit")) == 5)
        #expect(throws: CommandError.self) { try a.finish() }
    }

    @Test func prefixesFieldPaths() {
        let e = CommandError.invalid("registration_id", "bad").prefixed("devices[2]")
        #expect(e.details["field"] == .string("devices[2].registration_id"))
        #expect(e.message.contains("devices[2].registration_id"))
    }

    @Test func isoTimestampFormats() {
        #expect(formatTimestamp(0) == "1970-01-01T00:00:00.000Z")
        #expect(formatTimestamp(1_795_000_000_123) == "2026-11-18T11:06:40.123Z")
        #expect(formatTimestamp(951_782_400_000) == "2000-02-29T00:00:00.000Z")
        #expect(formatTimestamp(-1) == "1969-12-31T23:59:59.999Z")
        #expect(formatTimestamp(253_402_300_799_999) == "9999-12-31T23:59:59.999Z")
    }
}

@Suite struct ConfigTests {
    @Test func embeddedDefault() {
        let c = PushlineConfig()
        #expect(c.socket == "./var/pushline.sock")
        #expect(c.socketMode == 0o660)
        #expect(c.maxLineBytes == 1 << 20)
        #expect(c.apps.keys.sorted() == ["default"])
        #expect(c.updateOnDuplicateRegId == false)
        #expect(c.transportOptions.maxConcurrentStreams == 500)
        #expect(c.transportOptions.threads == 2)
    }

    @Test func transportFollowsTheBlocks() throws {
        let c = try PushlineConfig(json: try JSONValue.parse(#"{"max_streams_per_connection":100}"#))
        #expect(c.transportOptions.maxConcurrentStreams == 100)
        #expect(throws: ConfigError.self) { try PushlineConfig(json: try JSONValue.parse(#"{"max_streams_per_connection":0}"#)) }
    }

    @Test func errorsNameTheKeyPath() {
        func path(_ json: String) -> String? {
            do {
                _ = try PushlineConfig(json: try JSONValue.parse(json))
                return nil
            } catch let e as ConfigError {
                return e.path
            } catch {
                return "?"
            }
        }
        #expect(path(#"{"socket_mode":"999"}"#) == "socket_mode")
        #expect(path(#"{"apps":{"a":{"fcm":{"project_id":"p"}}}}"#) == "apps.a.fcm.service_account_path")
        #expect(path(#"{"apps":{"a":{"apns":{"environment":"prod"}}}}"#) == "apps.a.apns")
        #expect(path(#"{"apps":{"a":{"nope":{}}}}"#) == "apps.a.nope")
        #expect(path(#"{"apps":{}}"#) == "apps")
        #expect(path(#"{"update_on_duplicate_reg_id":true,"socket_mode":"0640"}"#) == nil)
    }
}
