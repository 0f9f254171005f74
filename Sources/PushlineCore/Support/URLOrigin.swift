/// Where the origin (`scheme://authority`) of an absolute http(s) URL ends: the one parser of
/// URL origins, for the transport's per-origin limits (`originKey`) and the WebPush/WNS
/// endpoint URLs (`WebWNS.parseURL`).
///
/// ```swift
/// let s = URLOrigin.split("https://push.example/abc?x")   // scheme "https", origin "https://push.example"
/// ```
enum URLOrigin {
    struct Split {
        /// `http` or `https`.
        var scheme: String
        /// Where the authority (host[:port], as written) starts and ends in the URL's UTF-8:
        /// the end is the first `/`, `?` or `#` after the scheme, or the URL's end.
        var authorityStart: String.Index
        var authorityEnd: String.Index
    }

    /// Splits an absolute `https://` (or, with `allowHTTP`, `http://`) URL with a non-empty
    /// authority; nil for anything else.
    static func split(_ url: String, allowHTTP: Bool = true) -> Split? {
        let utf8 = url.utf8
        let scheme: String
        if utf8.starts(with: "https://".utf8) {
            scheme = "https"
        } else if allowHTTP, utf8.starts(with: "http://".utf8) {
            scheme = "http"
        } else {
            return nil
        }
        let start = utf8.index(utf8.startIndex, offsetBy: scheme.utf8.count + 3)
        var end = start
        while end != utf8.endIndex {
            let c = utf8[end]
            if c == UInt8(ascii: "/") || c == UInt8(ascii: "?") || c == UInt8(ascii: "#") { break }
            end = utf8.index(after: end)
        }
        guard end != start else { return nil }
        return Split(scheme: scheme, authorityStart: start, authorityEnd: end)
    }
}
