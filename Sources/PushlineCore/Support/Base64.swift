/// Base64 with the URL-safe alphabet (RFC 4648 §5), as JWS and WebPush use it.
///
/// Encoding never pads; decoding accepts input with or without `=` padding and
/// rejects any other character outside the alphabet.
///
/// ```swift
/// Base64URL.encode([0xfb, 0xff])   // "-_8"
/// Base64URL.decode("-_8")          // [0xfb, 0xff]
/// ```
public enum Base64URL {
    /// Encodes `b` without padding.
    public static func encode(_ b: [UInt8]) -> String {
        Base64Codec.encode(b, alphabet: Base64Codec.urlAlphabet, pad: false)
    }
    /// Decodes `s` (padding optional); nil if it holds a character outside the alphabet or has an impossible length.
    public static func decode(_ s: String) -> [UInt8]? {
        Base64Codec.decode(s, url: true, ignoreNewlines: false)
    }
}

/// Base64 with the standard alphabet and `=` padding (RFC 4648 §4).
///
/// Decoding ignores `\n` and `\r` (PEM bodies, wrapped config values); padding is optional.
///
/// ```swift
/// Base64.encode(Array("foob".utf8))  // "Zm9vYg=="
/// ```
public enum Base64 {
    /// Encodes `b` with padding.
    public static func encode(_ b: [UInt8]) -> String {
        Base64Codec.encode(b, alphabet: Base64Codec.stdAlphabet, pad: true)
    }
    /// Decodes `s`, ignoring line breaks; nil on a character outside the alphabet or an impossible length.
    public static func decode(_ s: String) -> [UInt8]? {
        Base64Codec.decode(s, url: false, ignoreNewlines: true)
    }
}

/// The shared encoder/decoder behind `Base64` and `Base64URL`.
enum Base64Codec {
    static let stdAlphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static let urlAlphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    static func encode(_ b: [UInt8], alphabet: [UInt8], pad: Bool) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((b.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= b.count {
            let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)])
            out.append(alphabet[Int(v & 63)])
            i += 3
        }
        let rest = b.count - i
        if rest == 1 {
            let v = UInt32(b[i]) << 16
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            if pad { out.append(UInt8(ascii: "=")); out.append(UInt8(ascii: "=")) }
        } else if rest == 2 {
            let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)])
            if pad { out.append(UInt8(ascii: "=")) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The 6-bit value of one character, or nil.
    @inline(__always)
    static func value(_ c: UInt8, url: Bool) -> UInt32? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return UInt32(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return UInt32(c - UInt8(ascii: "a") + 26)
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - UInt8(ascii: "0") + 52)
        case UInt8(ascii: "+"): return url ? nil : 62
        case UInt8(ascii: "/"): return url ? nil : 63
        case UInt8(ascii: "-"): return url ? 62 : nil
        case UInt8(ascii: "_"): return url ? 63 : nil
        default: return nil
        }
    }

    static func decode(_ s: String, url: Bool, ignoreNewlines: Bool) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count * 3 / 4)
        var acc: UInt32 = 0
        var n = 0          // characters in the current quantum
        var padding = 0    // '=' seen
        for c in s.utf8 {
            if ignoreNewlines && (c == 10 || c == 13) { continue }
            if c == UInt8(ascii: "=") {
                padding += 1
                if padding > 2 { return nil }
                continue
            }
            if padding > 0 { return nil }  // data after padding
            guard let v = value(c, url: url) else { return nil }
            acc = acc << 6 | v
            n += 1
            if n == 4 {
                out.append(UInt8(acc >> 16 & 0xff))
                out.append(UInt8(acc >> 8 & 0xff))
                out.append(UInt8(acc & 0xff))
                acc = 0
                n = 0
            }
        }
        switch n {
        case 0: if padding != 0 { return nil }
        case 2:
            if padding != 0 && padding != 2 { return nil }
            out.append(UInt8(acc >> 4 & 0xff))
        case 3:
            if padding != 0 && padding != 1 { return nil }
            out.append(UInt8(acc >> 10 & 0xff))
            out.append(UInt8(acc >> 2 & 0xff))
        default: return nil  // a single leftover character encodes no whole byte
        }
        return out
    }
}
