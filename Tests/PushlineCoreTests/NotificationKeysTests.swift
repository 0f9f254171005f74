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
}
