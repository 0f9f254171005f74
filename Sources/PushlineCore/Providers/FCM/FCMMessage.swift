/// Builds the FCM HTTP v1 `message` object (without its target) from a flat notification,
/// the way django-push-notifications maps its `send_message` arguments for FCM.
///
/// - A notification message by default: `message`/`body` and `title` (or the same keys found in
///   `extra`, as django-push-notifications lifts them) go to `notification`; `icon`, `color`,
///   `tag`, `click_action`, `channel_id`, `sound`, `badge` and the localization keys go to
///   `android.notification` and to the `apns` payload where they belong.
/// - `use_fcm_notifications: false` gives a data-only message: `extra` plus `message` (and `title`)
///   in `data`.
/// - `extra` (and a raw `data` object) go to `data`, every value a string (non-strings JSON-encoded).
/// - `time_to_live` → `android.ttl` ("3600s"), apns-expiration and the WebPush `TTL` header;
///   `priority` → `android.priority` HIGH/NORMAL, apns-priority 10/5, WebPush `Urgency`;
///   `collapse_id` → `android.collapse_key` and apns-collapse-id.
/// - Raw `android`, `apns`, `webpush` and `fcm_options` blocks (and `fcm`, for the whole message)
///   are deep-merged over what was built; a `null` member removes a built one.
///
/// ```swift
/// let m = try FCMMessageBuilder.build(try PushNotification(parsing: ["message": "Hi", "extra": ["n": 1]]))
/// // {"notification": {"body": "Hi"}, "data": {"n": "1"}}
/// ```
enum FCMMessageBuilder {
    /// Google's limit on the data payload (keys and values, UTF-8 bytes).
    static let dataLimit = 4096

    /// Keys django-push-notifications moves from `extra` to the notification when notifications are on.
    static let liftedExtraKeys: [String] = [
        "title", "body", "icon", "image", "sound", "badge", "color", "tag", "click_action", "body_loc_key",
        "body_loc_args", "title_loc_key", "title_loc_args", "android_channel_id", "channel_id",
    ]

    /// The message without `token`/`topic`/`condition`, checked as Google would check it.
    static func build(_ n: PushNotification, nowSeconds: Int64 = nowMillis() / 1000) throws(CommandError) -> JSONObject {
        let f = n.fields
        let useNotifications = try PushNotification.bool(f, "use_fcm_notifications") ?? true

        var data = JSONObject()
        var extra = n.extra ?? JSONObject()
        var lifted = JSONObject()
        if useNotifications {
            for k in liftedExtraKeys {
                if let v = extra[k] {
                    lifted[k] = v
                    extra[k] = nil
                }
            }
        }
        for (k, v) in extra.pairs { data[k] = .string(stringify(v)) }
        if let d = f["data"], !d.isNull {
            guard let dobj = d.objectValue else { throw .invalid("data", "expected an object, got \(d.typeName)") }
            for (k, v) in dobj.pairs { data[k] = .string(stringify(v)) }
        }

        var message = JSONObject()
        var android = JSONObject()
        var androidNotification = JSONObject()
        var apnsHeaders = JSONObject()
        var aps = JSONObject()
        var webpushHeaders = JSONObject()

        func str(_ k: String) throws(CommandError) -> String? {
            if let s = try PushNotification.string(f, k) { return s }
            guard let v = lifted[k], !v.isNull else { return nil }
            return v.stringValue ?? stringify(v)
        }
        func strArray(_ k: String, _ alt: JSONValue?) throws(CommandError) -> JSONValue? {
            guard let v = f[k] ?? alt ?? lifted[k], !v.isNull else { return nil }
            guard let a = v.arrayValue else { throw .invalid(k, "expected an array of strings") }
            return .array(a.map { .string($0.stringValue ?? stringify($0)) })
        }

        if useNotifications {
            let alert = n.message?.objectValue
            var notification = JSONObject()
            if let t = n.titleText ?? lifted["title"].map({ $0.stringValue ?? stringify($0) }) { notification["title"] = .string(t) }
            if let b = n.bodyText ?? lifted["body"].map({ $0.stringValue ?? stringify($0) }) { notification["body"] = .string(b) }
            if let i = try str("image") { notification["image"] = .string(i) }
            if !notification.isEmpty { message["notification"] = .object(notification) }

            for k in ["icon", "color", "tag", "click_action"] {
                if let v = try str(k) { androidNotification[k] = .string(v) }
            }
            var channel = try str("channel_id")
            if channel == nil { channel = try str("android_channel_id") }
            if let c = channel { androidNotification["channel_id"] = .string(c) }
            if let v = try str("body_loc_key") { androidNotification["body_loc_key"] = .string(v) }
            else if let v = alert?["loc_key"]?.stringValue { androidNotification["body_loc_key"] = .string(v) }
            if let v = try strArray("body_loc_args", alert?["loc_args"]) { androidNotification["body_loc_args"] = v }
            if let v = try str("title_loc_key") { androidNotification["title_loc_key"] = .string(v) }
            else if let v = alert?["title_loc_key"]?.stringValue { androidNotification["title_loc_key"] = .string(v) }
            if let v = try strArray("title_loc_args", alert?["title_loc_args"]) { androidNotification["title_loc_args"] = v }

            var apsAlert = JSONObject()
            if let v = androidNotification["body_loc_key"] { apsAlert["loc-key"] = v }
            if let v = androidNotification["body_loc_args"] { apsAlert["loc-args"] = v }
            if let v = androidNotification["title_loc_key"] { apsAlert["title-loc-key"] = v }
            if let v = androidNotification["title_loc_args"] { apsAlert["title-loc-args"] = v }
            if let s = alert?["subtitle"]?.stringValue { apsAlert["subtitle"] = .string(s) }
            if !apsAlert.isEmpty { aps["alert"] = .object(apsAlert) }

            let sound = n.sound ?? lifted["sound"]
            switch sound {
            case .string(let s)?:
                androidNotification["sound"] = .string(s)
                aps["sound"] = .string(s)
            case .object(let o)?:
                if let name = o["name"]?.stringValue { androidNotification["sound"] = .string(name) }
                aps["sound"] = .object(o)
            default: break
            }
            let badge: Int64? = n.badge.map(Int64.init) ?? lifted["badge"]?.intValue
            if let b = badge {
                aps["badge"] = .int(b)
                androidNotification["notification_count"] = .int(b)
            }
        } else {
            if let m = n.message { data["message"] = .string(m.stringValue ?? stringify(m)) }
            if let t = n.title { data["title"] = .string(t) }
        }
        if let c = n.category { aps["category"] = .string(c) }
        if let t = n.threadId { aps["thread-id"] = .string(t) }
        if n.contentAvailable { aps["content-available"] = .int(1) }
        if n.mutableContent { aps["mutable-content"] = .int(1) }

        if !data.isEmpty { message["data"] = .object(data) }

        // Delivery options.
        switch n.priority {
        case .high?:
            android["priority"] = "HIGH"
            webpushHeaders["Urgency"] = "high"
        case .normal?, .low?:
            android["priority"] = "NORMAL"
            webpushHeaders["Urgency"] = "normal"
        case nil: break
        }
        if let level = n.priority { apnsHeaders["apns-priority"] = .string(String(APNsPriority.value(level))) }
        if let ttl = n.timeToLive {
            android["ttl"] = .string("\(ttl)s")
            apnsHeaders["apns-expiration"] = .string(String(ttl == 0 ? 0 : nowSeconds + ttl))
            webpushHeaders["TTL"] = .string(String(ttl))
        } else if let exp = n.expiration {
            android["ttl"] = .string("\(max(0, exp - nowSeconds))s")
            apnsHeaders["apns-expiration"] = .string(String(exp))
            webpushHeaders["TTL"] = .string(String(max(0, exp - nowSeconds)))
        }
        if let c = n.collapseId {
            android["collapse_key"] = .string(c)
            apnsHeaders["apns-collapse-id"] = .string(c)
        }
        if let p = n.pushType { apnsHeaders["apns-push-type"] = .string(p) }

        if !androidNotification.isEmpty { android["notification"] = .object(androidNotification) }
        if !android.isEmpty { message["android"] = .object(android) }
        var apns = JSONObject()
        if !apnsHeaders.isEmpty { apns["headers"] = .object(apnsHeaders) }
        if !aps.isEmpty { apns["payload"] = ["aps": .object(aps)] }
        if !apns.isEmpty { message["apns"] = .object(apns) }
        if !webpushHeaders.isEmpty { message["webpush"] = ["headers": .object(webpushHeaders)] }
        if let label = try PushNotification.string(f, "analytics_label") { message["fcm_options"] = ["analytics_label": .string(label)] }

        // Raw blocks, deep-merged over what was built.
        for k in ["android", "apns", "webpush", "fcm_options"] {
            guard let v = f[k], !v.isNull else { continue }
            guard let o = v.objectValue else { throw .invalid(k, "expected an object, got \(v.typeName)") }
            message[k] = .object(deepMerge(message[k]?.objectValue ?? JSONObject(), o))
        }
        if let v = f["fcm"], !v.isNull {
            guard let o = v.objectValue else { throw .invalid("fcm", "expected an FCM v1 message object, got \(v.typeName)") }
            for k in ["token", "topic", "condition"] where o[k] != nil {
                throw .invalid("fcm.\(k)", "the target is set by the command, not the message")
            }
            message = deepMerge(message, o)
        }
        try check(&message)
        return message
    }

    /// Turns a data value into the string FCM requires: strings as they are, anything else as JSON.
    static func stringify(_ v: JSONValue) -> String {
        if case .string(let s) = v { return s }
        return v.jsonString
    }

    /// `over` merged into `base`: objects recursively, anything else replaced; `null` removes.
    static func deepMerge(_ base: JSONObject, _ over: JSONObject) -> JSONObject {
        var out = base
        for (k, v) in over.pairs {
            if v.isNull {
                out[k] = nil
            } else if let vo = v.objectValue, let bo = out[k]?.objectValue {
                out[k] = .object(deepMerge(bo, vo))
            } else {
                out[k] = v
            }
        }
        return out
    }

    /// The size Google counts for the data payload: UTF-8 bytes of every key and value.
    static func dataSize(_ data: JSONObject) -> Int {
        data.pairs.reduce(0) { $0 + $1.0.utf8.count + (($1.1.stringValue ?? stringify($1.1)).utf8.count) }
    }

    static func isReservedDataKey(_ k: String) -> Bool {
        let l = k.lowercased()
        return l == "from" || l == "message_type" || l == "notification" || l.hasPrefix("google") || l.hasPrefix("gcm")
    }

    /// Checks (and normalizes) the parts Google is strict about, naming the field in errors.
    static func check(_ m: inout JSONObject) throws(CommandError) {
        if let d = m["data"] {
            guard let o = d.objectValue else { throw .invalid("data", "expected an object") }
            var fixed = JSONObject()
            for (k, v) in o.pairs {
                if isReservedDataKey(k) {
                    throw .invalid("extra.\(k)", "'\(k)' is reserved by FCM (so are keys starting with 'google' or 'gcm')")
                }
                fixed[k] = .string(stringify(v))
            }
            let size = dataSize(fixed)
            if size > dataLimit {
                throw CommandError(
                    .payloadTooLarge, "FCM data payload is \(size) bytes, the limit is \(dataLimit)",
                    details: ["size": .int(Int64(size)), "limit": .int(Int64(dataLimit))])
            }
            m["data"] = .object(fixed)
        }
        if let n = m["notification"], n.objectValue == nil { throw .invalid("fcm.notification", "expected an object") }
        if var a = try block(m, "android") {
            if let p = a["priority"] {
                guard let s = p.stringValue, ["HIGH", "NORMAL"].contains(s.uppercased()) else {
                    throw .invalid("android.priority", "expected \"HIGH\" or \"NORMAL\"")
                }
                a["priority"] = .string(s.uppercased())
            }
            if let t = a["ttl"] {
                if let i = t.intValue, case .int = t, i >= 0 {
                    a["ttl"] = .string("\(i)s")
                } else if let s = t.stringValue, isDuration(s) {
                } else {
                    throw .invalid("android.ttl", "expected a duration such as \"3600s\" or \"0.5s\"")
                }
            }
            if let c = a["collapse_key"], c.stringValue == nil { throw .invalid("android.collapse_key", "expected a string") }
            if let d = a["data"] { a["data"] = .object(try stringMap(d, "android.data")) }
            if let n = a["notification"], n.objectValue == nil { throw .invalid("android.notification", "expected an object") }
            m["android"] = .object(a)
        }
        if var a = try block(m, "apns") {
            if let h = a["headers"] { a["headers"] = .object(try stringMap(h, "apns.headers")) }
            if let p = a["payload"] {
                guard let po = p.objectValue else { throw .invalid("apns.payload", "expected an object") }
                if let aps = po["aps"], aps.objectValue == nil { throw .invalid("apns.payload.aps", "expected an object") }
            }
            m["apns"] = .object(a)
        }
        if var w = try block(m, "webpush") {
            if let h = w["headers"] { w["headers"] = .object(try stringMap(h, "webpush.headers")) }
            if let d = w["data"] { w["data"] = .object(try stringMap(d, "webpush.data")) }
            if let n = w["notification"], n.objectValue == nil { throw .invalid("webpush.notification", "expected an object") }
            m["webpush"] = .object(w)
        }
        if let o = try block(m, "fcm_options"), let l = o["analytics_label"] {
            guard let s = l.stringValue, !s.isEmpty, s.utf8.count <= 50, s.utf8.allSatisfy(TopicName.isNameByte) else {
                throw .invalid("fcm_options.analytics_label", "expected 1-50 characters of [a-zA-Z0-9-_.~%]")
            }
        }
    }

    static func block(_ m: JSONObject, _ k: String) throws(CommandError) -> JSONObject? {
        guard let v = m[k] else { return nil }
        guard let o = v.objectValue else { throw .invalid(k, "expected an object, got \(v.typeName)") }
        return o
    }

    /// A map whose values must end up strings (numbers and booleans are converted, objects refused).
    static func stringMap(_ v: JSONValue, _ field: String) throws(CommandError) -> JSONObject {
        guard let o = v.objectValue else { throw .invalid(field, "expected an object of strings") }
        var out = JSONObject()
        for (k, x) in o.pairs {
            switch x {
            case .string: out[k] = x
            case .int, .double, .bool: out[k] = .string(x.jsonString)
            default: throw .invalid("\(field).\(k)", "expected a string, got \(x.typeName)")
            }
        }
        return out
    }

    /// A protobuf JSON duration: digits, up to nine decimals, "s".
    static func isDuration(_ s: String) -> Bool {
        guard s.hasSuffix("s") else { return false }
        let parts = s.dropLast().split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !whole.isEmpty, whole.allSatisfy(\.isASCII),
            whole.allSatisfy(\.isNumber)
        else { return false }
        if parts.count == 2 {
            let frac = parts[1]
            return !frac.isEmpty && frac.count <= 9 && frac.allSatisfy { $0.isASCII && $0.isNumber }
        }
        return true
    }
}
