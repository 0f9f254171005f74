import Testing

@testable import PushlineCore

/// Inputs the libFuzzer targets (Tests/fuzz/) crashed on, as named tests. The raw inputs are
/// also committed under Tests/fuzz/corpus/<target>/crash-* and replayed by `make test`.
@Suite struct FuzzRegressionTests {
    func notification(_ json: String) throws -> PushNotification {
        guard case .object(let o) = try JSONValue.parse(json) else { throw CommandError(.badJSON, "not an object") }
        return try PushNotification(parsing: o)
    }

    func field(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch let e as CommandError {
            #expect(e.code == .invalidArgument)
            return e.details["field"]?.stringValue
        } catch {
            return "unexpected \(error)"
        }
    }

    /// fuzz apns/fcm: `now + time_to_live` overflowed Int64 and trapped, stopping the daemon
    /// (a `send` with "time_to_live": 9223372036854775807 to an APNs or FCM device).
    @Test func hugeTimeToLiveIsRefusedNotAnOverflow() throws {
        #expect(field { _ = try notification(#"{"message":"x","time_to_live":9223372036854775807}"#) } == "time_to_live")
        #expect(field { _ = try notification(#"{"message":"x","time_to_live":2147483648}"#) } == "time_to_live")
        // The largest accepted value builds for every provider without overflowing.
        let n = try notification(#"{"message":"x","time_to_live":2147483647}"#)
        let m = try APNsMessage(n, defaultTopic: "com.example.app", requireTopic: true, nowSeconds: Int64(Int32.max) * 2)
        #expect(m.header("apns-expiration") == String(Int64(Int32.max) * 3))
        let fcm = try FCMMessageBuilder.build(n, nowSeconds: 1_790_000_000)
        #expect(fcm["android"]?["ttl"] == .string("2147483647s"))
    }

    /// fuzz apns: an `apns.headers` name with DEL (or a space, ':'...) went to libcurl as it was.
    @Test func apnsHeaderNamesAndValuesAreChecked() throws {
        let build = { (json: String) throws -> Void in
            _ = try APNsMessage(try notification(json), defaultTopic: "com.example.app", requireTopic: true, nowSeconds: 0)
        }
        #expect(field { try build(#"{"message":"x","apns":{"headers":{"apns-c\u007flapse-id":"a"}}}"#) } == "apns.headers.apns-c\u{7f}lapse-id")
        #expect(field { try build(#"{"message":"x","apns":{"headers":{"apns-x y":"a"}}}"#) } == "apns.headers.apns-x y")
        #expect(field { try build(#"{"message":"x","apns":{"headers":{"apns-x":"a\r\nx-evil: 1"}}}"#) } == "apns.headers.apns-x")
        #expect(field { try build(#"{"message":"x","collapse_id":"a\r\nx-evil: 1"}"#) } == "collapse_id")
        #expect(field { try build(#"{"message":"x","topic":"com.example\nx"}"#) } == "topic")
        #expect(field { try build(#"{"message":"x","apns":{"headers":{"apns-topic":"t\u0000"}}}"#) } == "apns.headers.apns-topic")
        // fuzz apns: apns.payload replaced `aps` with a number, and that payload was sent.
        #expect(field { try build(#"{"message":"x","apns":{"payload":{"aps":2}}}"#) } == "apns.payload.aps")
        #expect(field { try build(#"{"message":"x","apns":{"payload":{"aps":null}}}"#) } == "apns.payload.aps")
        // Valid names and values still pass.
        #expect(field { try build(#"{"message":"x","collapse_id":"c1","apns":{"headers":{"apns-priority":5,"apns-x_y.z":"v"}}}"#) } == nil)
    }

    /// fuzz wns: a `wns` header name with DEL (`X-WNS-Ta\u{7f}...`) was accepted.
    @Test func wnsHeaderNamesAreTokens() throws {
        let build = { (json: String) throws -> Void in _ = try WNSProvider.buildMessage(try notification(json)) }
        #expect(field { try build(#"{"message":"x","wns":{"X-WNS-Ta\u007fg":"t"}}"#) } == "wns.X-WNS-Ta\u{7f}g")
        #expect(field { try build(#"{"message":"x","wns":{"X-WNS-Tag: x":"t"}}"#) } == "wns.X-WNS-Tag: x")
        #expect(field { try build(#"{"message":"x","wns":{"X-WNS-Tag":"t","cache_policy":"cache"}}"#) } == nil)
    }

    /// Same check for `webpush.headers` (a tab or DEL in the name passed the old space/colon test).
    @Test func webPushHeaderNamesAreTokens() throws {
        let build = { (json: String) throws -> Void in
            _ = try WebPushProvider.headers(try notification(json), defaultTTL: 60, now: 0)
        }
        #expect(field { try build(#"{"message":"x","webpush":{"headers":{"X-A\tB":"v"}}}"#) } == "webpush.headers.X-A\tB")
        #expect(field { try build(#"{"message":"x","webpush":{"headers":{"X-\u007f":"v"}}}"#) } == "webpush.headers.X-\u{7f}")
        #expect(field { try build(#"{"message":"x","webpush":{"headers":{"X-Ok":"v"}}}"#) } == nil)
    }

    /// fuzz request: an `https://` token without a path was quoted whole in the error
    /// (the URL redaction kept everything up to the first '/', and there was none).
    @Test func urlLikeTokenWithoutPathIsRedacted() throws {
        let token = "https://push. registration_ids"
        do {
            _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": .string(token)])
            Issue.record("a token with a space was accepted")
        } catch {
            #expect(error.details["field"] == "registration_id")
            #expect(!error.message.contains(token), "\(error.message)")
        }
        #expect(DeviceInput.redact(token) == "https://...")
        // Endpoint URLs keep their host, as before.
        #expect(DeviceInput.redact("https://push.example.com/send/abcdef") == "https://push.example.com/...")
    }
}
