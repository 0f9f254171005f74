import COpenSSL
import CPushlineShims

/// An RSA private key (a Google service account's `private_key`) for RS256.
///
/// Thread safety: the `EVP_PKEY` is never modified after `init` and each signature
/// creates its own `EVP_MD_CTX`; OpenSSL 3 allows such shared read-only use of a
/// key from several threads. That is why this class is `@unchecked Sendable`.
///
/// ```swift
/// let key = try RSAPrivateKey(pem: Array(serviceAccount.privateKey.utf8))
/// let sig = try key.signRS256(Array("header.claims".utf8))
/// ```
public final class RSAPrivateKey: @unchecked Sendable {
    /// The EVP_PKEY (owned; freed in deinit).
    let pkey: OpaquePointer

    /// Reads a PEM RSA private key ("-----BEGIN PRIVATE KEY-----" PKCS#8, or "RSA PRIVATE KEY").
    public init(pem: [UInt8]) throws(CryptoError) {
        guard pem.count < Int(Int32.max) else { throw CryptoError(message: "RSA private key: PEM too large") }
        ERR_clear_error()
        guard let p = pl_pem_read_private_key(pem, Int32(pem.count), nil) else {
            throw CryptoError.openssl("RSA private key: cannot read PEM (not an unencrypted PEM private key)")
        }
        guard EVP_PKEY_is_a(p, "RSA") == 1 else {
            let type = keyTypeName(p)
            EVP_PKEY_free(p)
            throw CryptoError(message: "RSA private key: the PEM holds a \(type) key, not RSA")
        }
        let bits = EVP_PKEY_get_bits(p)
        guard bits >= 2048 else {
            EVP_PKEY_free(p)
            throw CryptoError(message: "RSA private key: \(bits) bits is too short (RS256 needs at least 2048)")
        }
        pkey = p
    }

    deinit { EVP_PKEY_free(pkey) }

    /// The modulus size in bits.
    public var bits: Int { Int(EVP_PKEY_get_bits(pkey)) }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (JWS RS256).
    public func signRS256(_ message: [UInt8]) throws(CryptoError) -> [UInt8] {
        try digestSign(pkey, message, context: "RS256 sign")
    }
}
