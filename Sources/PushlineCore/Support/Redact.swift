/// A secret (device token, endpoint URL, key or client id) shortened for logs and messages, so
/// that a full one never reaches either: an `https://` URL keeps its host (public) and hides
/// its path; anything else keeps its first 8 characters (4 when it has 8 or fewer, none when 4
/// or fewer).
///
/// ```swift
/// redact("https://push.example.com/send/abcdef")   // "https://push.example.com/..."
/// redact("0123456789abcdef")                       // "01234567..."
/// ```
public func redact(_ token: String) -> String {
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

/// A value that is not secret (a misspelt platform name, a command word) cut to `max`
/// characters for an error message: whole when short enough, so the client sees what it sent.
///
/// ```swift
/// clipped("apnz")                       // "apnz"
/// clipped(String(repeating: "x", count: 100), max: 8)   // "xxxxxxxx..."
/// ```
public func clipped(_ value: String, max: Int = 32) -> String {
    value.count <= max ? value : String(value.prefix(max)) + "..."
}
