import COpenSSL

/// A failure of a cryptographic operation.
///
/// `message` says what was being done and, for OpenSSL failures, ends with the
/// text of OpenSSL's error queue for this thread (which is then cleared). It never
/// contains key material, PEM text or secrets.
///
/// ```swift
/// do { _ = try ECPrivateKey(pem: bytes) }
/// catch { print(error) }  // "EC private key: cannot read PEM (not a private key or wrong password): error:1E08010C:DECODER routines::unsupported"
/// ```
public struct CryptoError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }

    /// An error for a failed OpenSSL call: `context` plus the drained error queue.
    static func openssl(_ context: String) -> CryptoError {
        let queue = drainOpenSSLErrors()
        return CryptoError(message: queue.isEmpty ? context : "\(context): \(queue)")
    }
}

/// Pops every error from this thread's OpenSSL error queue and joins their texts
/// ("error:...:reason") with "; ". Leaves the queue empty.
func drainOpenSSLErrors() -> String {
    var parts: [String] = []
    var buf = [CChar](repeating: 0, count: 256)
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        if parts.count < 8 {  // a runaway queue should not make an unbounded message
            ERR_error_string_n(code, &buf, buf.count)
            parts.append(String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }
    return parts.joined(separator: "; ")
}
