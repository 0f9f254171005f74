import Testing

@testable import PushlineCore

/// A result's target is an enum: an id that names no device is `.unknownId`, not marker values.
@Suite struct DeliveryResultTests {
    let renderer = Dispatcher.ResultRenderer(done: [], appOf: [:], app: "shop")

    @Test("an unknown id is rendered without platform or registration id")
    func unknownId() {
        let r = DeliveryResult(target: .unknownId(42), status: .failed, failure: .notRegistered)
        let o = renderer.json(r)
        #expect(o["id"] == .int(42))
        #expect(o["platform"] == .null)
        #expect(o["registration_id"] == .null)
        #expect(o["reason"] == .string("not_registered"))
        #expect(o["reason_class"] == .string("not_registered"))
        #expect(r.deviceId == 42)
    }

    @Test("the compatible initializer reads the old marker values as an unknown id")
    func compatibleInitializer() {
        let marker = DeliveryResult(deviceId: 42, platform: .apns, registrationId: "", status: .failed, reason: "not_registered")
        #expect(marker.target == .unknownId(42))
        // An unregistered token keeps its platform and token.
        let token = DeliveryResult(deviceId: nil, platform: .fcm, registrationId: "tok", status: .failed, reason: "not_registered")
        #expect(token.target == .device(id: nil, platform: .fcm, registrationId: "tok"))
        let o = renderer.json(token)
        #expect(o["platform"] == .string("fcm"))
        #expect(o["registration_id"] == .string("tok"))
        // A device's result keeps its parts.
        let d = Device(id: 7, platform: .wns, app: "a", registrationId: "https://wns.example/x")
        var sent = DeliveryResult.sent(d)
        #expect(sent.target == .device(id: 7, platform: .wns, registrationId: "https://wns.example/x"))
        sent.registrationId = "https://wns.example/y"
        #expect(sent.platform == .wns && sent.deviceId == 7 && sent.registrationId == "https://wns.example/y")
    }

    @Test("write gives the same text as the rendered object with attempts, for every kind of result")
    func writeMatchesTheRenderedObject() {
        let apns = Device(id: 7, platform: .apns, app: "a", registrationId: String(repeating: "ab", count: 32))
        let token = Device(id: -3, platform: .fcm, app: "shop", registrationId: "tok\"with\\quotes\n")
        let raw = Device(id: 0, platform: .wns, app: "shop", registrationId: "https://wns.example/x")
        // Ids and counts of every width (the integers are written digit by digit).
        let big = Device(id: Int64.max, platform: .apns, app: "a", registrationId: "cd")
        let ten = Device(id: 10, platform: .apns, app: "a", registrationId: "ef")
        var twice = JSONObject()
        twice.pairs = [("x", 1), ("x", 2)]
        let renderers = [
            renderer,
            Dispatcher.ResultRenderer(done: [7], appOf: [7: "a"], app: nil),
            Dispatcher.ResultRenderer(done: [], appOf: [:], app: nil),
        ]
        let results: [DeliveryResult] = [
            .sent(apns),
            .sent(apns, extra: ["apns_id": "0b8e5a52-0000-4000-8000-000000000001", "apns_unique_id": "u"]),
            .sent(token, extra: ["message_id": "projects/p/messages/1"]),
            .sent(raw),
            .sent(big),
            .sent(ten),
            .sent(Device(id: 1_000_000_007, platform: .fcm, app: "shop", registrationId: "gh")),
            // Extra keys that replace a field in place, or come twice: left to `json`.
            .sent(apns, extra: ["app": "other"]),
            .sent(apns, extra: twice),
            .failed(apns, reason: "BadDeviceToken", deactivate: true),
            .failed(token, reason: "UNAVAILABLE", retryable: true, extra: ["retry_after_ms": 1000]),
            DeliveryResult(target: .unknownId(42), status: .failed, failure: .notRegistered),
        ]
        for rr in renderers {
            for r in results {
                for message in [nil, 0, 3, 10, 999] as [Int?] {
                    for attempts in [0, 1, 9, 10, 12, 100, 1234] {
                        var o = rr.json(r, message: message)
                        o["attempts"] = .int(Int64(attempts))
                        var out: [UInt8] = Array("[".utf8)
                        rr.write(r, message: message, attempts: attempts, to: &out)
                        #expect(String(decoding: out.dropFirst(), as: UTF8.self) == JSONValue.object(o).jsonString)
                    }
                }
            }
        }
    }
}
