import COpenSSL
import CPushlineShims

/// SHA-256 and HMAC-SHA256 through OpenSSL.
///
/// ```swift
/// Digest.sha256(Array("abc".utf8)).count  // 32
/// ```
public enum Digest {
    /// The SHA-256 hash of `b` (32 bytes).
    public static func sha256(_ b: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        let ok = EVP_Digest(b, b.count, &out, &len, EVP_sha256(), nil)
        // EVP_Digest with the built-in SHA-256 fails only when memory allocation fails:
        // there is no error to report to a caller that could recover.
        guard ok == 1, len == 32 else { fatalError(CryptoError.openssl("SHA-256 failed").message) }
        return out
    }

    /// HMAC-SHA256 of `data` under `key` (32 bytes).
    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        // An empty key must still be a valid pointer for HMAC().
        let keyBuf = key.isEmpty ? [UInt8(0)] : key
        let r = HMAC(EVP_sha256(), keyBuf, Int32(key.count), data, data.count, &out, &len)
        // As above: HMAC-SHA256 fails only when memory allocation fails.
        guard r != nil, len == 32 else { fatalError(CryptoError.openssl("HMAC-SHA256 failed").message) }
        return out
    }

    /// HKDF-SHA256 (RFC 5869) extract-then-expand, for outputs of at most 32 bytes (one block).
    static func hkdfSHA256(salt: [UInt8], ikm: [UInt8], info: [UInt8], length: Int) -> [UInt8] {
        precondition(length <= 32, "hkdfSHA256 supports one output block")
        let prk = hmacSHA256(key: salt, data: ikm)
        return Array(hmacSHA256(key: prk, data: info + [1]).prefix(length))
    }
}

/// Cryptographically secure random bytes.
public enum Random {
    /// `n` bytes from RAND_bytes.
    ///
    /// Stops the process if OpenSSL cannot produce them (no entropy source):
    /// continuing with predictable keys, salts or nonces would be worse.
    public static func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        if n == 0 { return out }
        guard RAND_bytes(&out, Int32(n)) == 1 else { fatalError(CryptoError.openssl("RAND_bytes failed").message) }
        return out
    }
}
