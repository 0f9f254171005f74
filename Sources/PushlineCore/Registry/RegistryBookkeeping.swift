/// What both registry stores (`SQLiteRegistryStore`, `PostgresStore`) decide the same way outside
/// their SQL: the device a registration creates, the errors of a duplicate token, and which
/// columns an `update` sets after validating it. One place, so the backends cannot drift apart
/// (the storage conformance suite runs both).
enum RegistryBookkeeping {
    /// `inactive_reason` and `inactive_at` of a device registered (or re-registered) as `active`.
    static func inactive(_ active: Bool, now: Int64) -> (reason: String?, at: Int64?) {
        active ? (nil, nil) : (SQLiteRegistry.clientDeactivationReason, now)
    }

    /// The device row an insert of `d` under `id` has just written.
    static func inserted(_ d: DeviceInput, id: Int64, now: Int64) -> Device {
        let (reason, at) = inactive(d.active, now: now)
        return Device(
            id: id, platform: d.platform, app: d.app, registrationId: d.registrationId, name: d.name,
            user: d.user, deviceId: d.deviceId, active: d.active, createdAt: d.createdAt ?? now, updatedAt: now, p256dh: d.p256dh,
            auth: d.auth, browser: d.browser, inactiveReason: reason, inactiveAt: at)
    }

    /// `devices[i]` names a token already registered (and the config does not update it).
    static func alreadyRegistered(_ i: Int, _ d: DeviceInput) -> CommandError {
        CommandError(
            .duplicateRegistration,
            "devices[\(i)]: \(d.platform.rawValue) token '\(DeviceInput.redact(d.registrationId))' is already registered in app '\(d.app)' (set update_on_duplicate_reg_id in the config to update instead)",
            details: ["index": .int(Int64(i))])
    }

    /// `devices[i]` repeats the token of `devices[j]` of the same request.
    static func sameInRequest(_ i: Int, as j: Int, _ d: DeviceInput) -> CommandError {
        CommandError(
            .duplicateRegistration,
            "devices[\(i)]: same \(d.platform.rawValue) token '\(DeviceInput.redact(d.registrationId))' in app '\(d.app)' as devices[\(j)] of this request",
            details: ["index": .int(Int64(i))])
    }

    /// The columns `u` sets on `existing` (`updated_at` first), each validated as `register`
    /// validates it, in the order the errors are reported. `taken(token)` is asked, when the token
    /// changes, for another device of the same app and platform that holds it already.
    static func updateColumns(
        _ u: DeviceUpdate, of existing: Device, key: DeviceKey, now: Int64, taken: (String) throws -> Int64?
    ) throws -> [(column: String, value: SQLValue)] {
        var sets: [(column: String, value: SQLValue)] = [("updated_at", .int(now))]
        if let name = u.name {
            if let n = name { _ = try DeviceInput.limited(n, "name", max: 255) }
            sets.append(("name", .from(name)))
        }
        if let user = u.user {
            if let n = user { _ = try DeviceInput.limited(n, "user", max: 255) }
            sets.append(("user_id", .from(user)))
        }
        if let deviceId = u.deviceId {
            let v = try deviceId.map { (s: String) throws(CommandError) in try DeviceInput.normalizeUUID(s) }
            sets.append(("device_id", .from(v)))
        }
        if let raw = u.registrationId {
            let field = key.isId ? "registration_id" : "new_registration_id"
            let token = try DeviceInput.normalizeToken(raw, platform: existing.platform, field: field)
            if token != existing.registrationId {
                if let other = try taken(token) {
                    throw CommandError(
                        .duplicateRegistration,
                        "\(existing.platform.rawValue) token '\(DeviceInput.redact(token))' is already registered in app '\(existing.app)' as device \(other)",
                        details: ["field": .string(field), "device": .int(other)])
                }
                sets.append(("registration_id", .text(token)))
            }
        }
        for (field, value, length, first) in [("p256dh", u.p256dh, 65, UInt8(0x04)), ("auth", u.auth, 16, nil)] {
            guard let value else { continue }
            guard existing.platform == .webpush else { throw CommandError.invalid(field, "only for webpush devices") }
            sets.append((field, .text(try DeviceInput.webPushKey(value, field: field, length: length, firstByte: first))))
        }
        if let active = u.active {
            sets.append(("active", .from(active)))
            if active {
                sets.append(("inactive_reason", .null))
                sets.append(("inactive_at", .null))
            } else if existing.active {
                sets.append(("inactive_reason", .text(SQLiteRegistry.clientDeactivationReason)))
                sets.append(("inactive_at", .int(now)))
            }
        }
        return sets
    }
}
