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
}
