import Testing

@testable import PushlineCore

/// The FCM v1 message builder: django-push-notifications' mapping, data stringification, override
/// blocks, and the checks `validate` makes before anything is sent.
@Suite struct FCMMessageTests {
    func build(_ o: JSONObject, now: Int64 = 1_700_000_000) throws -> JSONObject {
        try FCMMessageBuilder.build(try PushNotification(parsing: o), nowSeconds: now)
    }

    @Test func notificationMessageByDefault() throws {
        let m = try build(["message": "Hello", "title": "Hi", "image": "https://x/i.png"])
        #expect(m["notification"] == ["title": "Hi", "body": "Hello", "image": "https://x/i.png"])
        #expect(m["data"] == nil)
        #expect(m["android"] == nil)
    }

    @Test func extraGoesToDataAsStrings() throws {
        let m = try build([
            "message": "x",
            "extra": ["s": "str", "n": 3, "f": 1.5, "b": true, "o": ["k": [1, 2]], "a": [1, "two"], "z": nil],
        ])
        let d = try #require(m["data"]?.objectValue)
        #expect(d["s"] == "str")
        #expect(d["n"] == "3")
        #expect(d["f"] == "1.5")
        #expect(d["b"] == "true")
        #expect(d["o"] == #"{"k":[1,2]}"#)
        #expect(d["a"] == #"[1,"two"]"#)
        #expect(d["z"] == "null")
        for (_, v) in d.pairs { #expect(v.stringValue != nil) }
    }

    @Test func extraNotificationKeysAreLiftedAsDjangoDoes() throws {
        // django-push-notifications: send_message("msg", extra={"title": ..., "icon": ...}) fills the notification.
        let m = try build(["message": "Body", "extra": ["title": "T", "icon": "ic", "other": "content"]])
        #expect(m["notification"] == ["title": "T", "body": "Body"])
        #expect(m["android"]?["notification"]?["icon"] == "ic")
        #expect(m["data"] == ["other": "content"])
    }

    @Test func dataOnlyWhenNotificationsOff() throws {
        let m = try build(["message": "Body", "title": "T", "use_fcm_notifications": false, "extra": ["title": "kept"]])
        #expect(m["notification"] == nil)
        let d = try #require(m["data"]?.objectValue)
        #expect(d["message"] == "Body")
        #expect(d["title"] == "T")
        #expect(m["android"]?["notification"] == nil)
    }

    @Test func onlyExtraGivesDataOnlyMessage() throws {
        let m = try build(["extra": ["other": "content", "misc": "data"]])
        #expect(m["notification"] == nil)
        #expect(m["data"] == ["other": "content", "misc": "data"])
    }

    @Test func deliveryOptions() throws {
        let m = try build(["message": "x", "time_to_live": 3600, "priority": "high", "collapse_id": "c1"])
        let a = try #require(m["android"]?.objectValue)
        #expect(a["ttl"] == "3600s")
        #expect(a["priority"] == "HIGH")
        #expect(a["collapse_key"] == "c1")
        let h = try #require(m["apns"]?["headers"]?.objectValue)
        #expect(h["apns-priority"] == "10")
        #expect(h["apns-collapse-id"] == "c1")
        #expect(h["apns-expiration"] == "1700003600")
        #expect(m["webpush"]?["headers"]?["TTL"] == "3600")
        #expect(m["webpush"]?["headers"]?["Urgency"] == "high")

        let n = try build(["message": "x", "priority": "normal"])
        #expect(n["android"]?["priority"] == "NORMAL")
        #expect(n["apns"]?["headers"]?["apns-priority"] == "5")
    }

    @Test func expirationBecomesTTL() throws {
        let m = try build(["message": "x", "expiration": 1_700_000_100])
        #expect(m["android"]?["ttl"] == "100s")
        #expect(m["apns"]?["headers"]?["apns-expiration"] == "1700000100")
    }

    @Test func androidAndApnsNotificationFields() throws {
        let m = try build([
            "message": "x", "sound": "ping.caf", "badge": 4, "color": "#ff0000", "tag": "t", "click_action": "OPEN",
            "channel_id": "news", "thread_id": "th", "category": "cat", "mutable_content": true,
            "content_available": true,
        ])
        let an = try #require(m["android"]?["notification"]?.objectValue)
        #expect(an["sound"] == "ping.caf")
        #expect(an["color"] == "#ff0000")
        #expect(an["tag"] == "t")
        #expect(an["click_action"] == "OPEN")
        #expect(an["channel_id"] == "news")
        #expect(an["notification_count"] == 4)
        let aps = try #require(m["apns"]?["payload"]?["aps"]?.objectValue)
        #expect(aps["sound"] == "ping.caf")
        #expect(aps["badge"] == 4)
        #expect(aps["thread-id"] == "th")
        #expect(aps["category"] == "cat")
        #expect(aps["mutable-content"] == 1)
        #expect(aps["content-available"] == 1)
    }

    @Test func rawBlocksDeepMerge() throws {
        let m = try build([
            "message": "x", "priority": "high", "time_to_live": 60,
            "android": ["priority": "normal", "restricted_package_name": "com.x", "notification": ["icon": "i2"]],
            "apns": ["headers": ["apns-priority": 5], "payload": ["aps": ["sound": "default"]]],
            "webpush": ["fcm_options": ["link": "https://x"]],
            "fcm_options": ["analytics_label": "camp_1"],
        ])
        let a = try #require(m["android"]?.objectValue)
        #expect(a["priority"] == "NORMAL")  // normalized to the enum name
        #expect(a["ttl"] == "60s")  // kept from the built part
        #expect(a["restricted_package_name"] == "com.x")
        #expect(a["notification"]?["icon"] == "i2")
        #expect(m["apns"]?["headers"]?["apns-priority"] == "5")  // converted to a string
        #expect(m["apns"]?["payload"]?["aps"]?["sound"] == "default")
        #expect(m["webpush"]?["fcm_options"]?["link"] == "https://x")
        #expect(m["webpush"]?["headers"]?["TTL"] == "60")
        #expect(m["fcm_options"] == ["analytics_label": "camp_1"])
    }

    @Test func nullInOverrideRemovesBuiltMember() throws {
        let m = try build(["message": "x", "collapse_id": "c", "android": ["collapse_key": nil]])
        #expect(m["android"]?["collapse_key"] == nil)
    }

    @Test func badOverrideBlocksNameTheField() throws {
        func field(_ o: JSONObject) -> String? {
            do { _ = try build(o); return nil } catch let e as CommandError {
                #expect(e.code == .invalidArgument)
                return e.details["field"]?.stringValue
            } catch { return "?" }
        }
        #expect(field(["message": "x", "android": "no"]) == "android")
        #expect(field(["message": "x", "android": ["priority": "urgent"]]) == "android.priority")
        #expect(field(["message": "x", "android": ["ttl": "10 minutes"]]) == "android.ttl")
        #expect(field(["message": "x", "android": ["ttl": "1.5s"]]) == nil)
        #expect(field(["message": "x", "apns": ["headers": ["a": ["b": 1]]]]) == "apns.headers.a")
        #expect(field(["message": "x", "webpush": ["data": ["k": []]]]) == "webpush.data.k")
        #expect(field(["message": "x", "fcm_options": ["analytics_label": "has space"]]) == "fcm_options.analytics_label")
        #expect(field(["message": "x", "fcm": ["token": "t"]]) == "fcm.token")
        #expect(field(["message": "x", "extra": ["from": "me"]]) == "extra.from")
        #expect(field(["message": "x", "extra": ["google.x": "1"]]) == "extra.google.x")
        #expect(field(["message": "x", "use_fcm_notifications": "no"]) == "use_fcm_notifications")
    }

    @Test func dataOver4096IsRefused() throws {
        let ok = String(repeating: "a", count: 4096 - 1)
        _ = try build(["extra": ["k": .string(ok)]])  // 1 + 4095 bytes: at the limit
        do {
            _ = try build(["extra": ["k": .string(ok + "b")]])
            Issue.record("expected payload_too_large")
        } catch let e as CommandError {
            #expect(e.code == .payloadTooLarge)
            #expect(e.details["size"] == 4097)
            #expect(e.details["limit"] == 4096)
        }
    }

    @Test func preparedBodySplicesTarget() throws {
        let n = try PushNotification(parsing: ["message": "Hi", "dry_run": true])
        let p = try PreparedMessage(n)
        let body = p.body(target: "token", "tok\"1")
        let v = try JSONValue.parse(body)
        #expect(v["message"]?["token"] == "tok\"1")
        #expect(v["message"]?["notification"]?["body"] == "Hi")
        #expect(v["validate_only"] == true)

        let empty = try PreparedMessage(try PushNotification(parsing: [:]))
        let v2 = try JSONValue.parse(empty.body(target: "topic", "news"))
        #expect(v2 == ["message": ["topic": "news"]])
    }
}
