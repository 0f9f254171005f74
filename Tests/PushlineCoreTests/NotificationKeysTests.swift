import Testing

@testable import PushlineCore

/// Model/ knows only the common notification keys; each provider declares its own.
struct NotificationKeysTests {
    @Test("every platform declares its keys, and a request may carry them all")
    func everyPlatformDeclaresItsKeys() {
        for p in Platform.allCases { #expect(ProviderNotificationKeys.byPlatform[p] != nil, "\(p)") }
        #expect(PushlineCore.PushNotification.allKeys.isSuperset(of: PushlineCore.PushNotification.commonKeys))
        for (key, owner) in [("interruption_level", Platform.apns), ("use_fcm_notifications", .fcm), ("wns_type", .wns)] {
            #expect(ProviderNotificationKeys.byPlatform[owner]?.contains(key) == true, "\(key)")
            #expect(PushlineCore.PushNotification.allKeys.contains(key), "\(key)")
            #expect(!PushlineCore.PushNotification.commonKeys.contains(key), "\(key) is \(owner)'s own")
        }
        #expect(!PushlineCore.PushNotification.allKeys.contains("no_such_key"))
    }

    /// `priority` is a provider-neutral level in Model/; APNs' numbers (10, 5, 1) are parsed
    /// and rendered by Providers/APNs, and every provider maps the same level the same way
    /// however the request spelled it.
    @Test("priority: a name or an APNs number is one neutral level, mapped by each provider",
          arguments: [("high", 10), ("normal", 5)] as [(String, Int64)])
    func priorityIsOneLevel(name: String, apns: Int64) throws {
        typealias N = PushlineCore.PushNotification
        let byName = try N(parsing: ["message": "x", "priority": .string(name)])
        let byNumber = try N(parsing: ["message": "x", "priority": .int(apns)])
        #expect(byName.priority == byNumber.priority && byName.priority != nil)
        for n in [byName, byNumber] {
            let fcm = try FCMMessageBuilder.build(n, nowSeconds: 1_700_000_000)
            #expect(fcm["apns"]?["headers"]?["apns-priority"] == .string(String(apns)))
            #expect(fcm["android"]?["priority"] == .string(name.uppercased()))
            #expect(try WebPushProvider.headers(n, defaultTTL: 60, now: 0).first { $0.0 == "urgency" }?.1 == name)
            #expect(try WNSProvider.buildMessage(n).headers.first { $0.0 == "X-WNS-PRIORITY" }?.1 == (name == "high" ? "1" : "2"))
        }
    }

    @Test("priority 1 is the low level: APNs 1, WebPush low, FCM normal on Android")
    func lowPriority() throws {
        let n = try PushlineCore.PushNotification(parsing: ["message": "x", "priority": 1])
        #expect(n.priority == .low)
        #expect(APNsPriority.value(.low) == 1)
        let fcm = try FCMMessageBuilder.build(n, nowSeconds: 1_700_000_000)
        #expect(fcm["apns"]?["headers"]?["apns-priority"] == "1" && fcm["android"]?["priority"] == "NORMAL")
        #expect(try WebPushProvider.headers(n, defaultTTL: 60, now: 0).first { $0.0 == "urgency" }?.1 == "low")
        for bad: JSONValue in [2, 11, "low", "HIGH", 10.5, true] {
            #expect(throws: CommandError.self, "\(bad)") { try PushlineCore.PushNotification(parsing: ["message": "x", "priority": bad]) }
        }
    }
}
