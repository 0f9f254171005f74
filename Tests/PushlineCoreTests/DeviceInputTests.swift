import Testing

@testable import PushlineCore

enum Fixtures {
    static let apnsToken = String(repeating: "AB12cd34", count: 8)  // 64 hex chars, mixed case
    static let p256dh: String = Base64URL.encode([0x04] + (1...64).map { UInt8($0) })
    static let auth: String = Base64URL.encode((100..<116).map { UInt8($0) })
    static let endpoint = "https://fcm.googleapis.com/fcm/send/dQw4w9WgXcQ:APA91bHsecretsecretsecretsecret"
    static let wnsURI = "https://db5p.notify.windows.com/?token=AwYAAABsecretsecretsecretsecret"

    static func webpush(_ extra: JSONObject = [:]) -> JSONObject {
        var o: JSONObject = ["platform": "webpush", "registration_id": .string(endpoint), "p256dh": .string(p256dh), "auth": .string(auth)]
        for (k, v) in extra.pairs { o[k] = v }
        return o
    }
}

/// Expects `body` to throw an `invalid_argument` naming `field`; returns the error.
@discardableResult
func expectInvalid(_ field: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws(CommandError) -> Void) -> CommandError? {
    do {
        try body()
        Issue.record("expected invalid_argument for field '\(field)'", sourceLocation: sourceLocation)
        return nil
    } catch {
        #expect(error.code == .invalidArgument, sourceLocation: sourceLocation)
        #expect(error.details["field"] == .string(field), "message: \(error.message)", sourceLocation: sourceLocation)
        return error
    }
}

@Suite struct DeviceInputTests {
    @Test func apnsMinimalIsNormalised() throws {
        let d = try DeviceInput(parsing: ["platform": "apns", "registration_id": .string(Fixtures.apnsToken)])
        #expect(d.platform == .apns)
        #expect(d.app == "default")
        #expect(d.registrationId == Fixtures.apnsToken.lowercased())
        #expect(d.active)
        #expect(d.user == nil && d.name == nil && d.deviceId == nil && d.p256dh == nil)
    }

    @Test func defaultAppIsUsed() throws {
        let d = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "tok"], defaultApp: "shop")
        #expect(d.app == "shop")
        let e = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "tok", "app": "com.example_x-1"], defaultApp: "shop")
        #expect(e.app == "com.example_x-1")
    }

    @Test func userNumberBecomesString() throws {
        let d = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "tok", "user": 42, "name": "Pixel", "active": false])
        #expect(d.user == "42")
        #expect(d.name == "Pixel")
        #expect(!d.active)
        let s = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "tok", "user": "alice"])
        #expect(s.user == "alice")
        expectInvalid("user") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "user": 1.5]) }
        expectInvalid("user") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "user": true]) }
    }

    @Test func deviceIdIsCanonicalUUID() throws {
        let d = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "device_id": "0A1B2C3D-4E5F-6789-ABCD-EF0123456789"])
        #expect(d.deviceId == "0a1b2c3d-4e5f-6789-abcd-ef0123456789")
        let e = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "device_id": "0A1B2C3D4E5F6789ABCDEF0123456789"])
        #expect(e.deviceId == "0a1b2c3d-4e5f-6789-abcd-ef0123456789")
        for bad in ["nope", "0a1b2c3d-4e5f-6789-abcd-ef012345678g", "0a1b2c3d04e5f-6789-abcd-ef0123456789"] {
            expectInvalid("device_id") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "device_id": .string(bad)]) }
        }
    }

    @Test func apnsTokenRules() {
        let long = String(repeating: "a", count: 202)
        let cases = [
            String(repeating: "a", count: 63),  // odd, too short
            String(repeating: "a", count: 62),  // too short
            long,  // too long
            String(repeating: "a", count: 65),  // odd
            String(repeating: "a", count: 63) + "g",  // non-hex
        ]
        for t in cases {
            let e = expectInvalid("registration_id") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "apns", "registration_id": .string(t)]) }
            #expect(e.map { !$0.message.contains(t) } ?? false, "the full token must not be in the message")
        }
        // 200 is the upper bound, 64 the lower one.
        #expect((try? DeviceInput(platform: .apns, registrationId: String(repeating: "F", count: 200)))?.registrationId == String(repeating: "f", count: 200))
    }

    @Test func fcmTokenRules() {
        let secret = "secrettokensecrettoken"
        for t in ["", "abc def" + secret, "abc\n" + secret, "abc\u{00A0}" + secret, String(repeating: "x", count: 4097)] {
            let e = expectInvalid("registration_id") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": .string(t)]) }
            if !t.isEmpty { #expect(e.map { !$0.message.contains(t) } ?? false) }
        }
        #expect((try? DeviceInput(platform: .fcm, registrationId: String(repeating: "x", count: 4096))) != nil)
    }

    @Test func webPushRules() throws {
        let d = try DeviceInput(parsing: Fixtures.webpush(["browser": "FIREFOX"]))
        #expect(d.registrationId == Fixtures.endpoint)
        #expect(d.p256dh == Fixtures.p256dh)
        #expect(d.auth == Fixtures.auth)
        #expect(d.browser == "FIREFOX")

        let http = expectInvalid("registration_id") { () throws(CommandError) in
            _ = try DeviceInput(parsing: Fixtures.webpush(["registration_id": "http://push.example/abcdefsecret"]))
        }
        #expect(http.map { !$0.message.contains("abcdefsecret") } ?? false)
        expectInvalid("registration_id") { () throws(CommandError) in _ = try DeviceInput(parsing: Fixtures.webpush(["registration_id": "https:///nohost"])) }
        expectInvalid("p256dh") { () throws(CommandError) in _ = try DeviceInput(parsing: Fixtures.webpush(["p256dh": nil])) }
        expectInvalid("auth") { () throws(CommandError) in _ = try DeviceInput(parsing: Fixtures.webpush(["auth": nil])) }
        // 64 bytes instead of 65.
        expectInvalid("p256dh") { () throws(CommandError) in
            _ = try DeviceInput(parsing: Fixtures.webpush(["p256dh": .string(Base64URL.encode([0x04] + [UInt8](repeating: 1, count: 63)))]))
        }
        // Not an uncompressed point.
        expectInvalid("p256dh") { () throws(CommandError) in
            _ = try DeviceInput(parsing: Fixtures.webpush(["p256dh": .string(Base64URL.encode([0x03] + [UInt8](repeating: 1, count: 64)))]))
        }
        expectInvalid("p256dh") { () throws(CommandError) in _ = try DeviceInput(parsing: Fixtures.webpush(["p256dh": "not base64!"])) }
        expectInvalid("auth") { () throws(CommandError) in
            _ = try DeviceInput(parsing: Fixtures.webpush(["auth": .string(Base64URL.encode([UInt8](repeating: 7, count: 15)))]))
        }
        // Padded standard base64 (what btoa gives) is accepted and stored as unpadded base64url.
        let raw: [UInt8] = [0x04] + [UInt8](repeating: 0xFB, count: 64)
        let std = Base64URL.encode(raw).replacingAll("-", "+").replacingAll("_", "/") + "="
        let p = try DeviceInput(parsing: Fixtures.webpush(["p256dh": .string(std)]))
        #expect(p.p256dh == Base64URL.encode(raw))
    }

    @Test func wnsRules() throws {
        let d = try DeviceInput(parsing: ["platform": "wns", "registration_id": .string(Fixtures.wnsURI)])
        #expect(d.registrationId == Fixtures.wnsURI)
        let e = expectInvalid("registration_id") { () throws(CommandError) in
            _ = try DeviceInput(parsing: ["platform": "wns", "registration_id": "http://db5p.notify.windows.com/?token=secretsecret"])
        }
        #expect(e.map { !$0.message.contains("secretsecret") } ?? false)
    }

    @Test func webPushFieldsOnlyForWebPush() {
        expectInvalid("p256dh") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "p256dh": .string(Fixtures.p256dh)]) }
        expectInvalid("browser") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "browser": "CHROME"]) }
    }

    @Test func requiredFieldsTypesAndUnknownKeys() {
        expectInvalid("platform") { () throws(CommandError) in _ = try DeviceInput(parsing: ["registration_id": "t"]) }
        expectInvalid("platform") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "gcm", "registration_id": "t"]) }
        expectInvalid("registration_id") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm"]) }
        expectInvalid("registration_id") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": 12]) }
        expectInvalid("registration_idd") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "registration_idd": "x"]) }
        expectInvalid("app") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "app": "has space"]) }
        expectInvalid("app") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "app": .string(String(repeating: "a", count: 65))]) }
        expectInvalid("app") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "app": ""]) }
        expectInvalid("active") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "active": "yes"]) }
        expectInvalid("name") { () throws(CommandError) in _ = try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t", "name": 3]) }
    }
}

@Suite struct DeviceListAndKeyTests {
    @Test func listErrorsNameTheElement() throws {
        let ok = try DeviceInput.parseList([["platform": "fcm", "registration_id": "a"], .object(Fixtures.webpush())], defaultApp: "x")
        #expect(ok.map(\.app) == ["x", "x"])
        let e = expectInvalid("devices[1].registration_id") { () throws(CommandError) in
            _ = try DeviceInput.parseList([["platform": "fcm", "registration_id": "a"], ["platform": "apns", "registration_id": "zz"]])
        }
        #expect(e?.message.hasPrefix("field 'devices[1].registration_id': an APNs token") == true)
        expectInvalid("devices[0]") { () throws(CommandError) in _ = try DeviceInput.parseList(["nope"]) }
    }

    @Test func deviceKeys() throws {
        #expect(try DeviceKey(parsing: ["id": 5]) == .id(5))
        #expect(
            try DeviceKey(parsing: ["platform": "apns", "registration_id": .string(Fixtures.apnsToken)], defaultApp: "a")
                == .token(app: "a", platform: .apns, registrationId: Fixtures.apnsToken.lowercased()))
        expectInvalid("id") { () throws(CommandError) in _ = try DeviceKey(parsing: ["id": 0]) }
        expectInvalid("platform") { () throws(CommandError) in _ = try DeviceKey(parsing: ["id": 3, "platform": "fcm"]) }
        expectInvalid("platform") { () throws(CommandError) in _ = try DeviceKey(parsing: ["registration_id": "t"]) }
        expectInvalid("registration_id") { () throws(CommandError) in _ = try DeviceKey(parsing: ["platform": "fcm"]) }
        expectInvalid("token") { () throws(CommandError) in _ = try DeviceKey(parsing: ["token": "t"]) }
    }
}

@Suite struct Base64URLTests {
    @Test func roundTripsEveryLength() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 250) }
            let s = Base64URL.encode(bytes)
            #expect(!s.contains("=") && !s.contains("+") && !s.contains("/"))
            #expect(Base64URL.decode(s) == bytes)
        }
    }

    @Test func knownVectors() {
        #expect(Base64URL.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64URL.encode(Array("fooba".utf8)) == "Zm9vYmE")
        #expect(Base64URL.encode([0xFB, 0xFF]) == "-_8")
        #expect(Base64URL.decode("Zm9vYmE=") == Array("fooba".utf8))
        #expect(Base64URL.decode("Zm9vYg==") == Array("foob".utf8))
        #expect(Base64URL.decode("Zm9vYg") == Array("foob".utf8))
    }

    @Test func rejectsInvalid() {
        #expect(Base64URL.decode("Zm9v+mFy") == nil)  // standard alphabet
        #expect(Base64URL.decode("Z") == nil)  // dangling character
        #expect(Base64URL.decode("Zm9=vYg") == nil)  // padding in the middle
        #expect(Base64URL.decode("Zm9vYg=") == nil)  // wrong padding amount
    }
}

@Suite struct TimestampTests {
    @Test func formatsWithMilliseconds() {
        #expect(formatTimestamp(0) == "1970-01-01T00:00:00.000Z")
        #expect(formatTimestamp(1_700_000_000_123) == "2023-11-14T22:13:20.123Z")
        #expect(formatTimestamp(-1) == "1969-12-31T23:59:59.999Z")
    }

    @Test func parsesNumbersAndStrings() {
        #expect(parseTimestamp(.int(1_700_000_000)) == 1_700_000_000_000)
        #expect(parseTimestamp(.double(1_700_000_000.5)) == 1_700_000_000_500)
        #expect(parseTimestamp("2023-11-14") == 1_699_920_000_000)
        #expect(parseTimestamp("2023-11-14T22:13:20Z") == 1_700_000_000_000)
        #expect(parseTimestamp("2023-11-14T22:13:20.123Z") == 1_700_000_000_123)
        #expect(parseTimestamp("2023-11-14T22:13:20.1Z") == 1_700_000_000_100)
        #expect(parseTimestamp("2023-11-14T22:13:20.123456Z") == 1_700_000_000_123)
        #expect(parseTimestamp("2024-02-29") != nil)
        for bad: JSONValue in ["2023-02-29", "2023-13-01", "2023-11-14T22:13:20", "2023-11-14T24:00:00Z", "2023-11-14T22:13:20.Z", "yesterday", "2023-11-14x", .bool(true), .null] {
            #expect(parseTimestamp(bad) == nil, "\(bad)")
        }
        // Round trip through the formatter.
        for ms: Int64 in [0, 1, 999, 86_399_999, 1_795_914_000_500, 4_102_444_800_000] {
            #expect(parseTimestamp(.string(formatTimestamp(ms))) == ms)
        }
    }
}

@Suite struct DeviceJSONTests {
    @Test func rendersFieldsPerPlatformAndState() {
        let fcm = Device(id: 7, platform: .fcm, app: "default", registrationId: "tok", user: "42", createdAt: 1_700_000_000_123, updatedAt: 1_700_000_000_124)
        let o = fcm.json.objectValue
        #expect(o?.keys == ["id", "platform", "app", "registration_id", "name", "user", "device_id", "active", "created_at", "updated_at"])
        #expect(o?["id"] == .int(7))
        #expect(o?["name"] == .null)
        #expect(o?["user"] == "42")
        #expect(o?["active"] == .bool(true))
        #expect(o?["created_at"] == "2023-11-14T22:13:20.123Z")
        #expect(o?["updated_at"] == "2023-11-14T22:13:20.124Z")

        let wp = Device(id: 8, platform: .webpush, app: "a", registrationId: Fixtures.endpoint, active: false, p256dh: "k", auth: "s", inactiveReason: "Unregistered", inactiveAt: 0)
        let w = wp.json.objectValue
        #expect(w?["p256dh"] == "k")
        #expect(w?["auth"] == "s")
        #expect(w?["browser"] == .null)
        #expect(w?["inactive_reason"] == "Unregistered")
        #expect(w?["inactive_at"] == "1970-01-01T00:00:00.000Z")
    }
}

extension String {
    func replacingAll(_ a: Character, _ b: Character) -> String { String(map { $0 == a ? b : $0 }) }
}
