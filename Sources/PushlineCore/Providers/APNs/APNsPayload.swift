/// A notification turned into APNs headers and a JSON payload, built once and shared by every device of a send.
///
/// The only per-device difference is the badge when the client gives a per-token badge map
/// (`badges`: token → count, the seed's badge callable for bulk sends).
///
/// ```swift
/// let m = try APNsMessage(n, defaultTopic: "com.example.app", requireTopic: true, nowSeconds: 1_700_000_000)
/// m.pushType          // "alert"
/// m.header("apns-topic") // "com.example.app"
/// ```
public struct APNsMessage: Sendable {
    /// `apns-push-type`.
    public var pushType: String
    /// Request headers without `authorization` (added per request in token mode).
    public var headers: [(String, String)]
    /// The whole payload: `aps` plus custom top-level keys.
    public var payload: JSONObject
    /// The serialized payload (without per-token badge overrides).
    public var body: [UInt8]
    /// Apple's size limit for this push type: 5120 bytes for VoIP, 4096 otherwise.
    public var limit: Int
    /// Per-token badge overrides.
    public var badges: [String: Int]
    /// The outbox job being delivered (`PushNotification.outboxJob`), unless the notification
    /// names its own `apns_id`: each device with an `outboxDelivery` number then gets the
    /// `apns-id` made of both, so a re-send after a crash carries the first attempt's id.
    public var outboxJob: String?

    /// The push types Apple accepts in `apns-push-type`.
    public static let pushTypes: Set<String> = [
        "alert", "background", "voip", "complication", "fileprovider", "mdm", "location", "liveactivity", "pushtotalk",
        "widgets",
    ]

    /// The topic suffix Apple expects for a push type (appended to the bundle id).
    public static func topicSuffix(_ pushType: String) -> String {
        switch pushType {
        case "voip": return ".voip"
        case "complication": return ".complication"
        case "fileprovider": return ".pushkit.fileprovider"
        case "liveactivity": return ".push-type.liveactivity"
        case "pushtotalk": return ".voip-ptt"
        case "location": return ".location-query"
        case "widgets": return ".push-type.widgets"
        default: return ""
        }
    }

    /// Builds headers and payload from a notification.
    ///
    /// - Parameters:
    ///   - defaultTopic: the app's configured topic (bundle id); the notification's `topic` overrides it.
    ///   - requireTopic: token auth needs `apns-topic` (certificate auth lets Apple take it from the certificate).
    ///   - nowSeconds: Unix time used for `time_to_live` → `apns-expiration`.
    public init(
        _ n: PushNotification, defaultTopic: String?, requireTopic: Bool, nowSeconds: Int64
    ) throws(CommandError) {
        let f = n.fields
        var aps = JSONObject()

        // alert
        if let alert = try Self.alert(n) { aps["alert"] = alert }
        if let b = n.badge { aps["badge"] = .int(Int64(b)) }
        if let s = n.sound { aps["sound"] = s }
        if let c = n.category { aps["category"] = .string(c) }
        if let t = n.threadId { aps["thread-id"] = .string(t) }
        if n.contentAvailable { aps["content-available"] = .int(1) }
        if n.mutableContent { aps["mutable-content"] = .int(1) }
        if let v = try Self.string(f, "target_content_id") { aps["target-content-id"] = .string(v) }
        if let v = try Self.string(f, "interruption_level") {
            guard ["passive", "active", "time-sensitive", "critical"].contains(v) else {
                throw .invalid("interruption_level", "expected passive, active, time-sensitive or critical, got \"\(v)\"")
            }
            aps["interruption-level"] = .string(v)
        }
        if let v = f["relevance_score"], !v.isNull {
            guard let d = v.doubleValue, d >= 0, d <= 1 else {
                throw .invalid("relevance_score", "expected a number between 0 and 1")
            }
            aps["relevance-score"] = v
        }
        if let v = try Self.string(f, "filter_criterion") { aps["filter-criterion"] = .string(v) }
        if let v = try Self.stringArray(f, "url_args") { aps["url-args"] = v }
        // Live Activities.
        if let v = try Self.int(f, "timestamp") { aps["timestamp"] = .int(v) }
        if let v = try Self.string(f, "event") {
            guard ["start", "update", "end"].contains(v) else {
                throw .invalid("event", "expected start, update or end, got \"\(v)\"")
            }
            aps["event"] = .string(v)
        }
        if let v = f["content_state"], !v.isNull {
            guard case .object = v else { throw .invalid("content_state", "expected an object, got \(v.typeName)") }
            aps["content-state"] = v
        }
        if let v = try Self.int(f, "stale_date") { aps["stale-date"] = .int(v) }
        if let v = try Self.int(f, "dismissal_date") { aps["dismissal-date"] = .int(v) }
        if let v = try Self.string(f, "attributes_type") { aps["attributes-type"] = .string(v) }
        if let v = f["attributes"], !v.isNull {
            guard case .object = v else { throw .invalid("attributes", "expected an object, got \(v.typeName)") }
            aps["attributes"] = v
        }

        var payload = JSONObject()
        payload["aps"] = .object(aps)
        if let extra = n.extra {
            for (k, v) in extra.pairs {
                guard k != "aps" else { throw .invalid("extra", "must not contain 'aps' (use the notification's fields or apns.payload)") }
                payload[k] = v
            }
        }

        // The raw `apns` block: {headers: {...}, payload: {...}}, deep-merged last.
        var rawHeaders: [(String, String)] = []
        if let raw = f["apns"], !raw.isNull {
            guard let ro = raw.objectValue else { throw .invalid("apns", "expected an object {headers, payload}, got \(raw.typeName)") }
            for k in ro.keys where k != "headers" && k != "payload" {
                throw .invalid("apns.\(k)", "unknown key (expected headers or payload)")
            }
            if let p = ro["payload"], !p.isNull {
                guard let po = p.objectValue else { throw .invalid("apns.payload", "expected an object, got \(p.typeName)") }
                payload = Self.deepMerge(payload, po)
                // Apple refuses a payload whose `aps` is not a dictionary (fuzz apns: {"aps": 2} was sent).
                guard case .object = payload["aps"] else {
                    throw .invalid("apns.payload.aps", "expected an object, got \(payload["aps"]?.typeName ?? "nothing")")
                }
            }
            if let h = ro["headers"], !h.isNull {
                guard let ho = h.objectValue else { throw .invalid("apns.headers", "expected an object, got \(h.typeName)") }
                for (k, v) in ho.pairs {
                    let name = k.lowercased()
                    guard name.hasPrefix("apns-") else {
                        throw .invalid("apns.headers.\(k)", "only apns-* headers may be set")
                    }
                    guard WebWNS.isHeaderName(name) else {
                        throw .invalid("apns.headers.\(k)", "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
                    }
                    switch v {
                    case .string(let s): rawHeaders.append((name, s))
                    case .int(let i): rawHeaders.append((name, String(i)))
                    default: throw .invalid("apns.headers.\(k)", "expected a string or an integer, got \(v.typeName)")
                    }
                }
            }
        }
        func rawHeader(_ name: String) -> String? { rawHeaders.first { $0.0 == name }?.1 }

        // Push type: explicit, raw header, or inferred from the payload.
        let finalAps = payload["aps"]?.objectValue ?? JSONObject()
        var type: String
        if let t = rawHeader("apns-push-type") {
            type = t
        } else if let t = n.pushType {
            type = t
        } else if finalAps["event"] != nil || finalAps["content-state"] != nil {
            type = "liveactivity"
        } else if finalAps["content-available"] != nil && finalAps["alert"] == nil && finalAps["badge"] == nil
            && finalAps["sound"] == nil
        {
            type = "background"
        } else {
            type = "alert"
        }
        guard Self.pushTypes.contains(type) else {
            throw .invalid("push_type", "expected one of \(Self.pushTypes.sorted().joined(separator: ", ")), got \"\(type)\"")
        }
        pushType = type
        limit = type == "voip" ? 5120 : 4096

        var headers: [(String, String)] = [("apns-push-type", type)]

        // Priority: 10, or 5 where Apple requires it (background pushes).
        var priority: Int
        switch n.priority {
        case let level?: priority = APNsPriority.value(level)
        case nil: priority = (type == "background" || type == "fileprovider") ? 5 : 10
        }
        if type == "background" { priority = min(priority, 5) }
        headers.append(("apns-priority", String(priority)))

        if let e = n.expiration {
            headers.append(("apns-expiration", String(e)))
        } else if let ttl = n.timeToLive {
            headers.append(("apns-expiration", ttl == 0 ? "0" : String(nowSeconds + ttl)))
        }
        if let c = n.collapseId {
            guard c.utf8.count <= 64 else {
                throw .invalid("collapse_id", "APNs allows at most 64 bytes, got \(c.utf8.count)")
            }
            headers.append(("apns-collapse-id", c))
        }
        if let id = try Self.string(f, "apns_id") {
            guard Self.isUUID(id) else { throw .invalid("apns_id", "expected a UUID such as 123e4567-e89b-12d3-a456-426614174000") }
            headers.append(("apns-id", id))
        }
        if let t = rawHeader("apns-topic") {
            headers.append(("apns-topic", t))
        } else if let base = n.topic ?? defaultTopic {
            let suffix = Self.topicSuffix(type)
            headers.append(("apns-topic", base.hasSuffix(suffix) ? base : base + suffix))
        } else if requireTopic {
            throw .invalid("topic", "APNs token auth needs a topic: set topic in the app's apns block or in the notification")
        }
        for (k, v) in rawHeaders {
            if k == "apns-topic" || k == "apns-push-type" { continue }
            if let i = headers.firstIndex(where: { $0.0 == k }) { headers[i].1 = v } else { headers.append((k, v)) }
        }
        if let c = headers.first(where: { $0.0 == "apns-collapse-id" })?.1, c.utf8.count > 64 {
            throw .invalid("apns.headers.apns-collapse-id", "APNs allows at most 64 bytes, got \(c.utf8.count)")
        }
        // A topic, collapse id or raw header value with CR, LF or NUL would end the header early.
        for (name, value) in headers where !WebWNS.isSafeHeaderValue(value) {
            let field = name == "apns-topic" && rawHeader(name) == nil ? "topic"
                : name == "apns-collapse-id" && rawHeader(name) == nil ? "collapse_id" : "apns.headers.\(name)"
            throw .invalid(field, "must not contain CR, LF or NUL (it is sent as the \(name) header)")
        }
        self.headers = headers

        var badges: [String: Int] = [:]
        if let b = f["badges"], !b.isNull {
            guard let bo = b.objectValue else { throw .invalid("badges", "expected an object of device token to badge count") }
            for (token, v) in bo.pairs {
                guard let i = v.intValue, i >= 0, i <= Int64(Int32.max) else {
                    throw .invalid("badges", "badge for \(redact(token)) must be a non-negative integer")
                }
                badges[token.lowercased()] = Int(i)  // the registry stores APNs tokens lowercase
            }
        }
        self.badges = badges
        outboxJob = headers.contains { $0.0 == "apns-id" } ? nil : n.outboxJob
        self.payload = payload
        body = JSONValue.object(payload).serialized()
    }

    /// The value of a built header.
    public func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }

    /// The payload for one device: the shared body, or a copy with the device's badge from the badge map.
    public func body(for token: String) -> [UInt8] {
        guard !badges.isEmpty, let b = badges[token] ?? badges[token.lowercased()] else { return body }
        return Self.withBadge(payload, b)
    }

    /// The largest payload any device of the send may get (the badge map changes a few bytes).
    public var largestSize: Int {
        guard let maxBadge = badges.values.max() else { return body.count }
        return max(body.count, Self.withBadge(payload, maxBadge).count)
    }

    /// Refuses a payload over Apple's limit before anything is sent (the seed's APNSDataOverflow).
    public func checkSize() throws(CommandError) {
        let size = largestSize
        guard size <= limit else {
            throw CommandError(
                .payloadTooLarge, "APNs payload is \(size) bytes, the limit for push type \(pushType) is \(limit) bytes",
                details: ["size": .int(Int64(size)), "limit": .int(Int64(limit))])
        }
    }

    static func withBadge(_ payload: JSONObject, _ badge: Int) -> [UInt8] {
        var p = payload
        var aps = p["aps"]?.objectValue ?? JSONObject()
        aps["badge"] = .int(Int64(badge))
        p["aps"] = .object(aps)
        return JSONValue.object(p).serialized()
    }

    /// Apple's alert: a string, or a dictionary with kebab-case keys.
    static func alert(_ n: PushNotification) throws(CommandError) -> JSONValue? {
        let f = n.fields
        var dict = JSONObject()
        var bodyString: String?
        switch n.message {
        case .string(let s)?: bodyString = s
        case .object(let o)?:
            for (k, v) in o.pairs {
                let apple = Self.kebab(k)
                // Apple wants strings in the *-loc-args arrays.
                dict[apple] = apple.hasSuffix("-args") ? try Self.stringArray(o, k, field: "message.\(k)") : v
            }
        default: break
        }
        if let t = n.title { dict["title"] = .string(t) }
        for (key, apple) in [
            ("subtitle", "subtitle"), ("launch_image", "launch-image"), ("title_loc_key", "title-loc-key"),
            ("subtitle_loc_key", "subtitle-loc-key"), ("loc_key", "loc-key"), ("action_loc_key", "action-loc-key"),
        ] {
            if let v = try Self.string(f, key) { dict[apple] = .string(v) }
        }
        for (key, apple) in [("title_loc_args", "title-loc-args"), ("subtitle_loc_args", "subtitle-loc-args"), ("loc_args", "loc-args")] {
            if let v = try Self.stringArray(f, key) { dict[apple] = v }
        }
        if dict.isEmpty { return bodyString.map { .string($0) } }
        if let b = bodyString { dict["body"] = .string(b) }
        // Put title first, body after it, for readable payloads.
        var ordered = JSONObject()
        for k in ["title", "subtitle", "body"] { if let v = dict[k] { ordered[k] = v } }
        for (k, v) in dict.pairs where ordered[k] == nil { ordered[k] = v }
        return .object(ordered)
    }

    /// `loc_key` → `loc-key` (clients write snake_case; Apple's alert keys are kebab-case).
    static func kebab(_ s: String) -> String {
        String(s.map { $0 == "_" ? "-" : $0 })
    }

    /// Merges `b` into `a`: objects recursively, anything else replaced.
    static func deepMerge(_ a: JSONObject, _ b: JSONObject) -> JSONObject {
        var out = a
        for (k, v) in b.pairs {
            if case .object(let bo) = v, case .object(let ao)? = out[k] {
                out[k] = .object(deepMerge(ao, bo))
            } else {
                out[k] = v
            }
        }
        return out
    }

    static func isUUID(_ s: String) -> Bool {
        // The UTF-8 view read in place (no copy: an outbox batch checks a thousand of these).
        guard s.utf8.count == 36 else { return false }
        for (i, c) in s.utf8.enumerated() {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                if c != UInt8(ascii: "-") { return false }
            } else if !Self.isHex(c) {
                return false
            }
        }
        return true
    }

    static func isHex(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
    }

    static func string(_ o: JSONObject, _ k: String) throws(CommandError) -> String? {
        guard let v = o[k], !v.isNull else { return nil }
        guard let s = v.stringValue else { throw .invalid(k, "expected a string, got \(v.typeName)") }
        return s
    }
    static func int(_ o: JSONObject, _ k: String) throws(CommandError) -> Int64? {
        guard let v = o[k], !v.isNull else { return nil }
        guard let i = v.intValue else { throw .invalid(k, "expected an integer, got \(v.typeName)") }
        return i
    }
    static func stringArray(_ o: JSONObject, _ k: String, field: String? = nil) throws(CommandError) -> JSONValue? {
        guard let v = o[k], !v.isNull else { return nil }
        guard let a = v.arrayValue else { throw .invalid(field ?? k, "expected an array of strings, got \(v.typeName)") }
        for e in a {
            switch e {
            case .string, .int, .double: continue
            default: throw .invalid(field ?? k, "expected an array of strings")
            }
        }
        return .array(a.map { e in e.stringValue.map { JSONValue.string($0) } ?? .string(e.jsonString) })
    }
}
