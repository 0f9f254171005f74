#if canImport(Glibc)
import Glibc
#endif

extension Device {
    /// The device as the protocol shows it (`devices`, `register` responses).
    ///
    /// Timestamps are ISO 8601 UTC with milliseconds; absent optional fields are
    /// null; `p256dh`/`auth`/`browser` appear for webpush devices only, and
    /// `inactive_reason`/`inactive_at` for inactive devices only.
    ///
    /// ```json
    /// {"id":1,"platform":"fcm","app":"default","registration_id":"...","name":null,"user":"42",
    ///  "device_id":null,"active":true,"created_at":"2026-11-29T01:00:00.123Z","updated_at":"2026-11-29T01:00:00.123Z"}
    /// ```
    public var json: JSONValue {
        var o: JSONObject = [
            "id": .int(id),
            "platform": .string(platform.rawValue),
            "app": .string(app),
            "registration_id": .string(registrationId),
            "name": name.map { .string($0) } ?? .null,
            "user": user.map { .string($0) } ?? .null,
            "device_id": deviceId.map { .string($0) } ?? .null,
            "active": .bool(active),
            "created_at": .string(formatTimestamp(createdAt)),
            "updated_at": .string(formatTimestamp(updatedAt)),
        ]
        if platform == .webpush {
            o["p256dh"] = p256dh.map { .string($0) } ?? .null
            o["auth"] = auth.map { .string($0) } ?? .null
            o["browser"] = browser.map { .string($0) } ?? .null
        }
        if !active {
            o["inactive_reason"] = inactiveReason.map { .string($0) } ?? .null
            o["inactive_at"] = inactiveAt.map { .string(formatTimestamp($0)) } ?? .null
        }
        return .object(o)
    }
}

/// Formats Unix milliseconds as ISO 8601 UTC with milliseconds: `2026-11-29T01:00:00.123Z`.
public func formatTimestamp(_ ms: Int64) -> String {
    // Floor division so times before 1970 keep a positive millisecond part.
    var secs = ms / 1000
    var milli = ms % 1000
    if milli < 0 { milli += 1000; secs -= 1 }
    var days = secs / 86_400
    var sod = secs % 86_400
    if sod < 0 { sod += 86_400; days -= 1 }
    // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil inverse):
    // pure arithmetic, no gmtime_r and its time-zone lock on a hot path.
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    guard (0...9999).contains(year) else { return String(ms) }
    var b = [UInt8](repeating: 0, count: 24)
    func put(_ v: Int64, _ at: Int, _ width: Int) {
        var v = v
        for k in stride(from: at + width - 1, through: at, by: -1) {
            b[k] = UInt8(truncatingIfNeeded: 0x30 + v % 10)
            v /= 10
        }
    }
    put(year, 0, 4); b[4] = 0x2D; put(month, 5, 2); b[7] = 0x2D; put(day, 8, 2); b[10] = 0x54
    put(sod / 3600, 11, 2); b[13] = 0x3A; put(sod / 60 % 60, 14, 2); b[16] = 0x3A; put(sod % 60, 17, 2)
    b[19] = 0x2E; put(milli, 20, 3); b[23] = 0x5A
    return String(decoding: b, as: UTF8.self)
}

/// Parses a timestamp from a request into Unix milliseconds.
///
/// Accepts Unix seconds (a number, fractions kept to the millisecond), or an ISO 8601
/// UTC string: `YYYY-MM-DD` (midnight), `YYYY-MM-DDTHH:MM:SSZ` or with a fraction
/// (`.sss`, up to 9 digits). Returns nil for anything else or an invalid date.
///
/// ```swift
/// parseTimestamp(.int(1_700_000_000))        // 1_700_000_000_000
/// parseTimestamp("2026-11-29T01:00:00.5Z")   // 1_795_914_000_500
/// ```
public func parseTimestamp(_ v: JSONValue) -> Int64? {
    switch v {
    case .int(let s):
        let (r, o) = s.multipliedReportingOverflow(by: 1000)
        return o ? nil : r
    case .double(let d):
        guard d.isFinite, abs(d) < 9.0e12 else { return nil }
        return Int64((d * 1000).rounded())
    case .string(let s):
        return parseISO8601(Array(s.utf8))
    default:
        return nil
    }
}

func parseISO8601(_ u: [UInt8]) -> Int64? {
    var i = 0
    func digits(_ n: Int) -> Int? {
        guard i + n <= u.count else { return nil }
        var v = 0
        for k in 0..<n {
            let c = u[i + k]
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            v = v * 10 + Int(c - UInt8(ascii: "0"))
        }
        i += n
        return v
    }
    func expect(_ c: Character) -> Bool {
        guard i < u.count, let a = c.asciiValue, u[i] == a else { return false }
        i += 1
        return true
    }
    guard let year = digits(4), expect("-"), let month = digits(2), expect("-"), let day = digits(2) else { return nil }
    guard (1...12).contains(month), day >= 1, day <= daysInMonth(year, month) else { return nil }
    var hour = 0, minute = 0, second = 0, milli = 0
    if i < u.count {
        guard u[i] == UInt8(ascii: "T") || u[i] == UInt8(ascii: "t") || u[i] == UInt8(ascii: " ") else { return nil }
        i += 1
        guard let h = digits(2), expect(":"), let m = digits(2), expect(":"), let s = digits(2) else { return nil }
        guard h < 24, m < 60, s < 60 else { return nil }
        hour = h; minute = m; second = s
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            var n = 0
            var frac = 0
            while i < u.count, u[i] >= UInt8(ascii: "0"), u[i] <= UInt8(ascii: "9") {
                if n < 3 { frac = frac * 10 + Int(u[i] - UInt8(ascii: "0")) }
                n += 1
                i += 1
            }
            guard n >= 1, n <= 9 else { return nil }
            if n < 3 { for _ in n..<3 { frac *= 10 } }
            milli = frac
        }
        guard i < u.count, u[i] == UInt8(ascii: "Z") || u[i] == UInt8(ascii: "z") else { return nil }
        i += 1
    }
    guard i == u.count else { return nil }
    let days = daysFromCivil(year, month, day)
    return ((Int64(days) * 24 + Int64(hour)) * 60 + Int64(minute)) * 60_000 + Int64(second) * 1000 + Int64(milli)
}

func daysInMonth(_ y: Int, _ m: Int) -> Int {
    switch m {
    case 2: return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 29 : 28
    case 4, 6, 9, 11: return 30
    default: return 31
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int {
    let y = m <= 2 ? y0 - 1 : y0
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let mp = (m + 9) % 12
    let doy = (153 * mp + 2) / 5 + d - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146097 + doe - 719468
}
