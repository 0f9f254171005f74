/// The `tokens` target (protocol.md section 4): devices an app keeps in its own tables, sent
/// to without the registry. Each token becomes a `Device` with a negative id (`-1`, `-2`...,
/// its position), which the results render as `"id": null` and which no registry write
/// ever touches.
extension Target {
    /// Most tokens one request may carry (as for `registration_ids`).
    static let maxRawTokens = 100_000

    /// Parses `tokens` with `platform` (required) and `app` (default `default`). APNs, FCM and
    /// WNS entries are strings; WebPush entries are objects with `endpoint`, `p256dh`, `auth`.
    static func parseRaw(_ a: inout Arguments) throws(CommandError) -> Target {
        guard let list = try a.list("tokens", max: maxRawTokens) else { throw .invalid(a.path("tokens"), "is required") }
        guard let platform = try a.platform("platform") else {
            throw .invalid(a.path("platform"), "is required with tokens")
        }
        let app = try a.app() ?? "default"
        var devices: [Device] = []
        devices.reserveCapacity(list.count)
        for (i, v) in list.enumerated() {
            let field = a.path("tokens[\(i)]")
            let input: DeviceInput
            do throws(CommandError) {
                if platform == .webpush {
                    guard let o = v.objectValue else {
                        throw .invalid("", "expected a WebPush subscription object with endpoint, p256dh, auth, got \(v.typeName)")
                    }
                    for k in o.keys where !["endpoint", "p256dh", "auth"].contains(k) {
                        throw .invalid(k, "unknown subscription field (expected endpoint, p256dh, auth)")
                    }
                    guard let endpoint = o["endpoint"]?.stringValue else { throw .invalid("endpoint", "is required (a string)") }
                    input = try DeviceInput(
                        platform: platform, app: app, registrationId: endpoint, p256dh: o["p256dh"]?.stringValue,
                        auth: o["auth"]?.stringValue)
                } else {
                    guard let token = v.stringValue else { throw .invalid("", "expected a token string, got \(v.typeName)") }
                    input = try DeviceInput(platform: platform, app: app, registrationId: token)
                }
            } catch {
                throw error.rooted(field, token: platform == .webpush ? "endpoint" : nil)
            }
            devices.append(Device(
                id: -Int64(i + 1), platform: platform, app: app, registrationId: input.registrationId,
                p256dh: input.p256dh, auth: input.auth))
        }
        return .raw(app: app, platform: platform, devices)
    }
}

extension CommandError {
    /// An `invalid_argument` for a field inside `root` (`tokens[3]` + `p256dh` →
    /// `tokens[3].p256dh`); an empty field is `root` itself, and `registration_id` is the
    /// entry's `token` member (nil: `root` itself).
    func rooted(_ root: String, token: String?) -> CommandError {
        guard case .string(let f) = details["field"] ?? .null else { return self }
        var e = self
        let leaf: String? = f.isEmpty ? nil : (f == "registration_id" ? token : f)
        let newField = leaf.map { "\(root).\($0)" } ?? root
        e.details["field"] = .string(newField)
        e.message = message.replacingFirst("field '\(f)'", with: "field '\(newField)'")
        return e
    }
}
