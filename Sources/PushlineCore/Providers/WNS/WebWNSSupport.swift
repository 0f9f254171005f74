/// Helpers the WebPush and WNS providers share: URL origins,
/// form and XML escaping, response bodies for messages.
///
/// Names are prefixed (`WebWNS`) because the whole of PushlineCore is one module.
enum WebWNS {
    /// A parsed absolute http(s) URL: `origin` is `scheme://host[:port]` (lowercased
    /// scheme and host, default port omitted), `rest` the path and query ("/" if empty).
    struct URLParts: Equatable {
        var scheme: String
        var origin: String
        var rest: String
    }

    /// Splits an absolute `https://` (or `http://`) URL; nil when it is not one.
    static func parseURL(_ url: String) -> URLParts? {
        guard let s = URLOrigin.split(url) else { return nil }
        let scheme = s.scheme
        var authority = url[s.authorityStart..<s.authorityEnd].lowercased()
        guard !authority.contains("@"), !authority.contains(" ") else { return nil }
        if scheme == "https", authority.hasSuffix(":443") { authority.removeLast(4) }
        if scheme == "http", authority.hasSuffix(":80") { authority.removeLast(3) }
        var rest = String(url[s.authorityEnd...])
        if let hash = rest.firstIndex(of: "#") { rest = String(rest[..<hash]) }
        if rest.isEmpty || rest.first == "?" { rest = "/" + rest }
        return URLParts(scheme: scheme, origin: scheme + "://" + authority, rest: rest)
    }

    /// `url` with its origin replaced by `endpoint` (an origin or a base URL) when
    /// `endpoint` is set: the way tests and proxies point every device at one server.
    static func rewrite(_ url: URLParts, endpoint: String?) -> URLParts? {
        guard let endpoint else { return url }
        guard let e = parseURL(endpoint) else { return nil }
        let base = e.rest == "/" ? "" : e.rest
        return URLParts(scheme: e.scheme, origin: e.origin, rest: base + url.rest)
    }

    /// `application/x-www-form-urlencoded` encoding of one value.
    static func formEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            case UInt8(ascii: " "):
                out += "+"
            default:
                out += "%" + hex2(b)
            }
        }
        return out
    }

    static func hex2(_ b: UInt8) -> String {
        let d: [Character] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "A", "B", "C", "D", "E", "F"]
        return String([d[Int(b >> 4)], d[Int(b & 0xF)]])
    }

    /// Escapes text for an XML element or attribute value (`&`, `<`, `>`, `"`, `'`),
    /// dropping characters XML 1.0 forbids (C0 controls other than tab, LF, CR).
    static func xmlEscape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\t", "\n", "\r": out.unicodeScalars.append(c)
            default:
                if c.value < 0x20 || c.value == 0xFFFE || c.value == 0xFFFF { continue }
                out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A short, printable excerpt of a response body for a failure reason (at most 200 characters).
    static func bodyExcerpt(_ body: [UInt8]) -> String {
        var s = String(decoding: body.prefix(400), as: UTF8.self)
        // A JSON error body: prefer its message.
        if let v = try? JSONValue.parse(body) {
            if let m = v["message"]?.stringValue ?? v["error"]?["message"]?.stringValue ?? v["reason"]?.stringValue
                ?? v["error"]?.stringValue ?? v["error_description"]?.stringValue
            {
                s = m
            }
        }
        s = String(s.unicodeScalars.map { $0.value < 0x20 ? " " : Character($0) })
        return s.count > 200 ? String(s.prefix(200)) + "..." : s.trimmingCharacters(in: " ")
    }

    /// Whether a header value is safe to send (no CR, LF or NUL).
    static func isSafeHeaderValue(_ s: String) -> Bool {
        !s.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 }
    }

    /// Whether `s` is an HTTP field name: a non-empty RFC 9110 token (section 5.6.2: letters,
    /// digits and !#$%&'*+-.^_`|~). Anything else (a space, ':', DEL, non-ASCII) would either
    /// change the header libcurl sends or make the provider refuse the whole request.
    static func isHeaderName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }

    /// The text after the first occurrence of `needle` in `s`, or nil (no Foundation `range(of:)`).
    static func after(_ needle: String, in s: Substring) -> Substring? {
        let n = Array(needle.utf8)
        let u = s.utf8
        var i = u.startIndex
        while i != u.endIndex {
            if u[i...].starts(with: n) { return Substring(u[u.index(i, offsetBy: n.count)...]) }
            i = u.index(after: i)
        }
        return nil
    }

    /// The class of each reason code the WebPush and WNS providers write (`gone`, `throttled`,
    /// `token_error: ...`...; `http_NNN` and `payload_too_large` are common to every provider).
    static let reasonClasses: [Substring: ReasonClass] = [
        "not_found": .invalidToken, "gone": .invalidToken, "channel_expired": .invalidToken,
        "invalid_channel_uri": .invalidToken, "invalid_subscription": .invalidToken, "too_many_requests": .rateLimited,
        "throttled": .rateLimited, "channelthrottled": .rateLimited, "dropped": .providerError, "unauthorized": .auth,
        "forbidden": .auth, "token_error": .auth, "bad_request": .badRequest, "encryption_failed": .badRequest,
    ]

    /// A reason the WebPush or WNS provider reports, under its class.
    static func failure(_ wire: String) -> FailureReason {
        FailureReason.common(wire) ?? failure(parsing: wire) ?? .unknown(wire)
    }

    /// A WebPush/WNS code in `wire` under its class; nil when it is not one.
    static func failure(parsing wire: String) -> FailureReason? {
        reasonClasses[FailureReason.head(wire)].flatMap { FailureReason.classified($0, wire) }
    }
}
