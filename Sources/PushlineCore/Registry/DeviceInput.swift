/// One device of a `register` request, validated and normalised.
///
/// Tokens are checked per platform (APNs hex, FCM opaque, WebPush and WNS https
/// URLs) and stored in canonical form (APNs lowercase, UUIDs lowercase, WebPush
/// keys as unpadded base64url). Error messages name the field and never echo a
/// full token.
///
/// ```swift
/// let d = try DeviceInput(parsing: ["platform": "apns", "registration_id": "AB12...", "user": 42])
/// d.user // "42"
/// ```
public struct DeviceInput: Sendable, Equatable {
    public var platform: Platform
    public var app: String
    public var registrationId: String
    public var name: String?
    public var user: String?
    public var deviceId: String?
    public var active: Bool
    public var p256dh: String?
    public var auth: String?
    public var browser: String?
    /// When the device was first registered (Unix ms), if not now: set by `import-dpn` from
    /// django-push-notifications' `date_created`; never parsed from a request.
    public var createdAt: Int64?

    /// The keys a device object may carry.
    public static let keys: Set<String> = [
        "platform", "app", "registration_id", "name", "user", "device_id", "active", "p256dh", "auth", "browser",
    ]

    /// Validates and normalises every field (see the type's documentation).
    public init(
        platform: Platform, app: String = "default", registrationId: String, name: String? = nil, user: String? = nil,
        deviceId: String? = nil, active: Bool = true, p256dh: String? = nil, auth: String? = nil, browser: String? = nil
    ) throws(CommandError) {
        self.platform = platform
        self.app = try Self.validateApp(app)
        self.registrationId = try Self.normalizeToken(registrationId, platform: platform)
        self.name = try name.map { (s: String) throws(CommandError) in try Self.limited(s, "name", max: 255) }
        self.user = try user.map { (s: String) throws(CommandError) in try Self.limited(s, "user", max: 255) }
        self.deviceId = try deviceId.map { (s: String) throws(CommandError) in try Self.normalizeUUID(s) }
        self.active = active
        if platform == .webpush {
            guard let p256dh else { throw .invalid("p256dh", "required for webpush (the subscription's public key)") }
            guard let auth else { throw .invalid("auth", "required for webpush (the subscription's auth secret)") }
            self.p256dh = try Self.webPushKey(p256dh, field: "p256dh", length: 65, firstByte: 0x04)
            self.auth = try Self.webPushKey(auth, field: "auth", length: 16, firstByte: nil)
            self.browser = try browser.map { (s: String) throws(CommandError) in try Self.limited(s, "browser", max: 64) }
        } else {
            if p256dh != nil { throw .invalid("p256dh", "only for webpush devices") }
            if auth != nil { throw .invalid("auth", "only for webpush devices") }
            if browser != nil { throw .invalid("browser", "only for webpush devices") }
            self.p256dh = nil
            self.auth = nil
            self.browser = nil
        }
    }

    /// Parses one device object of a `register` request.
    ///
    /// `platform` and `registration_id` are required; `app` defaults to `defaultApp`;
    /// `user` may be a string or an integer (stored as its decimal string); null
    /// means absent. Unknown keys are rejected, naming the key.
    public init(parsing o: JSONObject, defaultApp: String = "default") throws(CommandError) {
        for k in o.keys where !Self.keys.contains(k) {
            throw .invalid(k, "unknown device field (expected one of \(Self.keys.sorted().joined(separator: ", ")))")
        }
        guard let pv = o["platform"], !pv.isNull else { throw .invalid("platform", "required") }
        guard let ps = pv.stringValue else { throw .invalid("platform", "expected a string, got \(pv.typeName)") }
        guard let platform = Platform(rawValue: ps) else {
            throw .invalid("platform", "expected one of apns, fcm, webpush, wns")
        }
        guard let rv = o["registration_id"], !rv.isNull else { throw .invalid("registration_id", "required") }
        guard let token = rv.stringValue else {
            throw .invalid("registration_id", "expected a string, got \(rv.typeName)")
        }
        let app = try Self.string(o, "app") ?? defaultApp
        var user: String?
        if let uv = o["user"], !uv.isNull {
            switch uv {
            case .string(let s): user = s
            case .int(let i): user = String(i)
            case .double:
                guard let i = uv.intValue else { throw .invalid("user", "expected a string or an integer") }
                user = String(i)
            default: throw .invalid("user", "expected a string or an integer, got \(uv.typeName)")
            }
        }
        var active = true
        if let av = o["active"], !av.isNull {
            if let b = av.boolValue {
                active = b
            } else if let i = av.intValue, i == 0 || i == 1 {
                active = i == 1
            } else {
                throw .invalid("active", "expected a boolean, got \(av.typeName)")
            }
        }
        try self.init(
            platform: platform, app: app, registrationId: token, name: try Self.string(o, "name"), user: user,
            deviceId: try Self.string(o, "device_id"), active: active, p256dh: try Self.string(o, "p256dh"),
            auth: try Self.string(o, "auth"), browser: try Self.string(o, "browser"))
    }

    /// Parses the `devices` array of a `register` request; errors name the element,
    /// e.g. field `devices[3].registration_id`.
    public static func parseList(_ values: [JSONValue], defaultApp: String = "default", field: String = "devices")
        throws(CommandError) -> [DeviceInput]
    {
        var out: [DeviceInput] = []
        out.reserveCapacity(values.count)
        for (i, v) in values.enumerated() {
            guard let o = v.objectValue else { throw .invalid("\(field)[\(i)]", "expected a device object, got \(v.typeName)") }
            do {
                out.append(try DeviceInput(parsing: o, defaultApp: defaultApp))
            } catch {
                throw error.prefixingField("\(field)[\(i)].")
            }
        }
        return out
    }

    static func string(_ o: JSONObject, _ k: String) throws(CommandError) -> String? {
        guard let v = o[k], !v.isNull else { return nil }
        guard let s = v.stringValue else { throw .invalid(k, "expected a string, got \(v.typeName)") }
        return s
    }

    static func limited(_ s: String, _ field: String, max: Int) throws(CommandError) -> String {
        guard s.utf8.count <= max else { throw .invalid(field, "longer than \(max) bytes") }
        return s
    }

    /// Checks an app name: 1 to 64 of letters, digits, `.`, `_`, `-`.
    public static func validateApp(_ app: String, field: String = "app") throws(CommandError) -> String {
        let u = app.utf8
        guard !u.isEmpty, u.count <= 64 else { throw .invalid(field, "must be 1 to 64 characters") }
        for c in u {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                continue
            default: throw .invalid(field, "may only contain letters, digits, '.', '_' and '-'")
            }
        }
        return app
    }

    /// A token shortened for messages and logs: URLs to scheme and host, others to 8 characters.
    public static func redact(_ token: String) -> String {
        let u = Array(token.utf8)
        // An endpoint URL keeps its host (public) and hides its path. Without a path there is
        // nothing to hide the token behind (fuzz request: "https://push. x" was echoed whole).
        if u.starts(with: Array("https://".utf8)),
            let hostEnd = u[8...].firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") })
        {
            let host = String(decoding: u[8..<min(hostEnd, 8 + 64)], as: UTF8.self)
            return "https://\(host)/..."
        }
        if token.count <= 8 { return token.count <= 4 ? "..." : String(token.prefix(4)) + "..." }
        return String(token.prefix(8)) + "..."
    }

    /// Checks a token for `platform` and returns its canonical form (APNs: lowercase hex).
    ///
    /// Also used to look devices up by token, so lookups match what `register` stored.
    public static func normalizeToken(_ token: String, platform: Platform, field: String = "registration_id")
        throws(CommandError) -> String
    {
        let u = token.utf8
        switch platform {
        case .apns:
            guard u.count >= 64, u.count <= 200, u.count % 2 == 0 else {
                throw .invalid(field, "an APNs token is an even number (64 to 200) of hex digits, got \(u.count) characters ('\(redact(token))')")
            }
            for c in u where !isHex(c) {
                throw .invalid(field, "an APNs token is hexadecimal, found a non-hex character ('\(redact(token))')")
            }
            return canonicalToken(token, platform: .apns)
        case .fcm:
            guard !u.isEmpty else { throw .invalid(field, "an FCM token cannot be empty") }
            guard u.count <= 4096 else { throw .invalid(field, "an FCM token is at most 4096 bytes, got \(u.count)") }
            for c in u where c <= 0x20 || c == 0x7F {
                throw .invalid(field, "an FCM token cannot contain whitespace or control characters ('\(redact(token))')")
            }
            // Unicode whitespace (NBSP, U+2028...) is only possible in non-ASCII tokens; the property lookup is slow.
            if u.contains(where: { $0 >= 0x80 }), token.unicodeScalars.contains(where: { $0.properties.isWhitespace }) {
                throw .invalid(field, "an FCM token cannot contain whitespace ('\(redact(token))')")
            }
            return token
        case .webpush:
            try checkHTTPSURL(token, field: field, what: "a WebPush registration_id is the subscription endpoint")
            return token
        case .wns:
            try checkHTTPSURL(token, field: field, what: "a WNS registration_id is the channel URI")
            return token
        }
    }

    /// The stored form of an already valid token, for lookups: APNs tokens lowercase, others unchanged.
    ///
    /// Cheaper than `normalizeToken` (no validation): a token that fails validation cannot be stored anyway.
    public static func canonicalToken(_ token: String, platform: Platform) -> String {
        guard platform == .apns, token.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "F") }) else {
            return token
        }
        return String(decoding: token.utf8.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    static func checkHTTPSURL(_ s: String, field: String, what: String) throws(CommandError) {
        let u = Array(s.utf8)
        guard u.count <= 4096 else { throw .invalid(field, "\(what), at most 4096 bytes, got \(u.count)") }
        let scheme = Array("https://".utf8)
        guard u.count > scheme.count, u[0..<scheme.count].map({ $0 | 0x20 }) == scheme.map({ $0 | 0x20 }) else {
            throw .invalid(field, "\(what): an https:// URL")
        }
        for c in u where c <= 0x20 || c == 0x7F {
            throw .invalid(field, "\(what): a URL without whitespace or control characters")
        }
        let rest = u[scheme.count...]
        let hostEnd = rest.firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) ?? rest.endIndex
        guard hostEnd > scheme.count else { throw .invalid(field, "\(what): an https:// URL with a host") }
    }

    @inline(__always)
    static func isHex(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
            UInt8(ascii: "A")...UInt8(ascii: "F"):
            return true
        default: return false
        }
    }

    /// Checks a UUID (`8-4-4-4-12` hex, or 32 hex digits) and returns it lowercase with hyphens.
    public static func normalizeUUID(_ s: String, field: String = "device_id") throws(CommandError) -> String {
        var hex: [UInt8] = []
        let u = Array(s.utf8)
        if u.count == 36 {
            for (i, c) in u.enumerated() {
                if i == 8 || i == 13 || i == 18 || i == 23 {
                    guard c == UInt8(ascii: "-") else { throw .invalid(field, "expected a UUID") }
                } else {
                    guard isHex(c) else { throw .invalid(field, "expected a UUID") }
                    hex.append(c)
                }
            }
        } else if u.count == 32 {
            guard u.allSatisfy(isHex) else { throw .invalid(field, "expected a UUID") }
            hex = u
        } else {
            throw .invalid(field, "expected a UUID")
        }
        let l = hex.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "F") ? $0 | 0x20 : $0 }
        let parts = [l[0..<8], l[8..<12], l[12..<16], l[16..<20], l[20..<32]]
        return parts.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "-")
    }

    /// Decodes a WebPush key (base64url, padding optional; standard base64 `+`/`/` tolerated
    /// as browsers' `btoa` snippets send it) and returns it as unpadded base64url.
    static func webPushKey(_ s: String, field: String, length: Int, firstByte: UInt8?) throws(CommandError) -> String {
        let urlSafe = String(
            decoding: s.utf8.map { $0 == UInt8(ascii: "+") ? UInt8(ascii: "-") : $0 == UInt8(ascii: "/") ? UInt8(ascii: "_") : $0 },
            as: UTF8.self)
        guard let bytes = Base64URL.decode(urlSafe) else { throw .invalid(field, "expected base64url") }
        guard bytes.count == length else {
            throw .invalid(field, "expected \(length) bytes once decoded, got \(bytes.count)")
        }
        if let firstByte, bytes[0] != firstByte {
            throw .invalid(field, "expected an uncompressed P-256 point (first byte 0x04)")
        }
        return Base64URL.encode(bytes)
    }
}

extension CommandError {
    /// The same `invalid_argument` error with its field prefixed (`registration_id` ->
    /// `devices[3].registration_id`); other errors are returned unchanged.
    public func prefixingField(_ prefix: String) -> CommandError {
        guard code == .invalidArgument, let field = details["field"]?.stringValue else { return self }
        let head = "field '\(field)': "
        let why = message.hasPrefix(head) ? String(message.dropFirst(head.count)) : message
        var e = CommandError.invalid(prefix + field, why)
        for (k, v) in details.pairs where k != "field" { e.details[k] = v }
        return e
    }
}

extension DeviceKey {
    /// Parses a device reference: `{"id": 12}` or `{"platform": "apns", "registration_id": "...", "app": "..."}`
    /// (`app` defaults to `defaultApp`). Tokens are canonicalised as `register` stores them.
    public init(parsing o: JSONObject, defaultApp: String = "default") throws(CommandError) {
        if let idv = o["id"], !idv.isNull {
            guard let id = idv.intValue, id > 0 else { throw .invalid("id", "expected a positive integer") }
            for k in o.keys where k != "id" {
                throw .invalid(k, "not allowed together with 'id'")
            }
            self = .id(id)
            return
        }
        for k in o.keys where !["platform", "registration_id", "app", "id"].contains(k) {
            throw .invalid(k, "unknown field (expected 'id', or 'platform', 'registration_id' and optionally 'app')")
        }
        guard let ps = o["platform"]?.stringValue, let platform = Platform(rawValue: ps) else {
            throw .invalid("platform", "expected one of apns, fcm, webpush, wns (or give 'id')")
        }
        guard let token = o["registration_id"]?.stringValue, !token.isEmpty else {
            throw .invalid("registration_id", "required (or give 'id')")
        }
        let app = try DeviceInput.validateApp(try DeviceInput.string(o, "app") ?? defaultApp)
        self = .token(app: app, platform: platform, registrationId: DeviceInput.canonicalToken(token, platform: platform))
    }
}
