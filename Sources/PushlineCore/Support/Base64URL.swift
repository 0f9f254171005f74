/// Base64url (RFC 4648 §5) encoding and decoding, without Foundation.
///
/// `encode` writes no padding (as WebPush and JWTs want). `decode` accepts input
/// with or without `=` padding and rejects anything outside the url-safe alphabet.
///
/// ```swift
/// Base64URL.encode([0xfb, 0xff])   // "-_8"
/// Base64URL.decode("-_8")          // [0xfb, 0xff]
/// ```
public enum Base64URL {
    static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Encodes bytes as unpadded base64url.
    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var it = bytes.makeIterator()
        while let b0 = it.next() {
            let b1 = it.next()
            let b2 = it.next()
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | (b1 ?? 0) >> 4)])
            if let b1 {
                out.append(alphabet[Int((b1 & 0x0F) << 2 | (b2 ?? 0) >> 6)])
                if let b2 { out.append(alphabet[Int(b2 & 0x3F)]) }
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes base64url, padded or not; nil if the text is not valid base64url.
    ///
    /// Rejects characters outside `A-Z a-z 0-9 - _`, a length that leaves a
    /// single dangling character, padding in the middle, and non-zero unused bits.
    public static func decode(_ text: String) -> [UInt8]? {
        var chars = Array(text.utf8)
        // Strip up to two '=' of padding; then the remaining length must fit.
        var pad = 0
        while let last = chars.last, last == UInt8(ascii: "="), pad < 2 { chars.removeLast(); pad += 1 }
        if pad > 0 && (chars.count + pad) % 4 != 0 { return nil }
        if chars.count % 4 == 1 { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count * 3 / 4)
        var acc: UInt32 = 0
        var bits = 0
        for c in chars {
            guard let v = value(c) else { return nil }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
                acc &= (1 << UInt32(bits)) - 1
            }
        }
        // Leftover bits must be zero (canonical encoding).
        if acc != 0 { return nil }
        return out
    }

    @inline(__always)
    static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "-"): return 62
        case UInt8(ascii: "_"): return 63
        default: return nil
        }
    }
}
