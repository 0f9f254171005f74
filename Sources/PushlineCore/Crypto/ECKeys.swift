import COpenSSL
import CPushlineShims

/// A P-256 (secp256r1) private key: APNs token signing (ES256), VAPID, and the
/// WebPush sender's ephemeral key.
///
/// Thread safety: the `EVP_PKEY` is never modified after `init`; every operation
/// creates its own `EVP_MD_CTX`/`EVP_PKEY_CTX`, and OpenSSL 3 documents that a
/// key used read-only that way may be shared between threads. That is why this
/// class is `@unchecked Sendable`.
///
/// ```swift
/// let key = try ECPrivateKey(pem: Array(p8Text.utf8))
/// let sig = try key.signES256(Array("header.claims".utf8))   // 64 bytes r||s
/// ```
public final class ECPrivateKey: @unchecked Sendable {
    /// The EVP_PKEY (owned; freed in deinit).
    let pkey: OpaquePointer
    /// The public point 0x04||X||Y (65 bytes).
    public let publicKeyUncompressed: [UInt8]

    /// Takes ownership of `pkey` after checking it is a P-256 key (skipped when
    /// `knownP256`, for keys this file just made on P-256); frees it on failure.
    init(owning pkey: OpaquePointer, context: String, knownP256: Bool = false) throws(CryptoError) {
        do throws(CryptoError) {
            if !knownP256 { try ECPrivateKey.checkP256(pkey, context: context) }
            publicKeyUncompressed = try ECPrivateKey.publicPoint(pkey, context: context)
        } catch {
            EVP_PKEY_free(pkey)
            throw error
        }
        self.pkey = pkey
    }

    deinit { EVP_PKEY_free(pkey) }

    /// Reads a PEM private key: PKCS#8 "PRIVATE KEY" (Apple .p8), SEC1 "EC PRIVATE KEY",
    /// or "ENCRYPTED PRIVATE KEY" with `password`. Throws unless the key is on P-256.
    public convenience init(pem: [UInt8], password: String? = nil) throws(CryptoError) {
        guard pem.count < Int(Int32.max) else { throw CryptoError(message: "EC private key: PEM too large") }
        ERR_clear_error()
        guard let p = pl_pem_read_private_key(pem, Int32(pem.count), password) else {
            throw CryptoError.openssl("EC private key: cannot read PEM (not a PEM private key, or wrong/missing password)")
        }
        try self.init(owning: p, context: "EC private key")
    }

    /// Builds a key from the raw 32-byte private scalar `d` (big-endian), computing the public point.
    public convenience init(rawPrivateKey d: [UInt8]) throws(CryptoError) {
        let ctx = "EC private key from raw scalar"
        guard d.count == 32 else { throw CryptoError(message: "\(ctx): expected 32 bytes, got \(d.count)") }
        ERR_clear_error()
        guard let group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1) else { throw CryptoError.openssl("\(ctx): EC_GROUP_new_by_curve_name") }
        defer { EC_GROUP_free(group) }
        // A secure-heap BIGNUM, so the scalar is also cleared when OpenSSL copies it into the key params.
        guard let priv = BN_secure_new() else { throw CryptoError.openssl("\(ctx): BN_secure_new") }
        defer { BN_clear_free(priv) }
        guard BN_bin2bn(d, 32, priv) != nil else { throw CryptoError.openssl("\(ctx): BN_bin2bn") }
        guard let order = EC_GROUP_get0_order(group) else { throw CryptoError.openssl("\(ctx): EC_GROUP_get0_order") }
        guard BN_is_zero(priv) == 0, BN_cmp(priv, order) < 0 else {
            throw CryptoError(message: "\(ctx): scalar out of range for P-256")
        }
        guard let point = EC_POINT_new(group) else { throw CryptoError.openssl("\(ctx): EC_POINT_new") }
        defer { EC_POINT_free(point) }
        guard EC_POINT_mul(group, point, priv, nil, nil, nil) == 1 else { throw CryptoError.openssl("\(ctx): EC_POINT_mul") }
        var pub = [UInt8](repeating: 0, count: 65)
        guard EC_POINT_point2oct(group, point, POINT_CONVERSION_UNCOMPRESSED, &pub, 65, nil) == 65 else {
            throw CryptoError.openssl("\(ctx): EC_POINT_point2oct")
        }
        let p = try ECKeyData.fromData(priv: priv, pub: pub, context: ctx)
        try self.init(owning: p, context: ctx, knownP256: true)
    }

    /// A fresh random P-256 key.
    public static func generate() throws(CryptoError) -> ECPrivateKey {
        ERR_clear_error()
        guard let p = pl_evp_ec_gen_p256() else { throw CryptoError.openssl("EC key generation failed") }
        return try ECPrivateKey(owning: p, context: "generated EC key", knownP256: true)
    }

    /// The key as unencrypted PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----").
    public func pkcs8PEM() throws(CryptoError) -> String {
        try pemPKCS8(pkey, context: "EC private key")
    }

    /// Signs SHA-256(`message`) with ECDSA; returns raw r||s (64 bytes), as JWS ES256 needs.
    public func signES256(_ message: [UInt8]) throws(CryptoError) -> [UInt8] {
        let der = try digestSign(pkey, message, context: "ES256 sign")
        return try ECKeyData.derToRaw(der)
    }

    /// ECDH: the 32-byte shared secret (the X coordinate) with `peer`.
    ///
    /// The peer was validated when it was parsed, so it is not validated again here.
    public func sharedSecret(with peer: P256PublicKey) throws(CryptoError) -> [UInt8] {
        ERR_clear_error()
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, pkey, nil) else { throw CryptoError.openssl("ECDH: EVP_PKEY_CTX_new_from_pkey") }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_derive_init(ctx) == 1 else { throw CryptoError.openssl("ECDH: EVP_PKEY_derive_init") }
        guard EVP_PKEY_derive_set_peer_ex(ctx, peer.pkey, 0) == 1 else { throw CryptoError.openssl("ECDH: EVP_PKEY_derive_set_peer_ex") }
        var len = 0
        guard EVP_PKEY_derive(ctx, nil, &len) == 1, len > 0, len <= 66 else { throw CryptoError.openssl("ECDH: EVP_PKEY_derive (size)") }
        var out = [UInt8](repeating: 0, count: len)
        guard EVP_PKEY_derive(ctx, &out, &len) == 1 else { throw CryptoError.openssl("ECDH: EVP_PKEY_derive") }
        return Array(out.prefix(len))
    }

    /// Throws unless `pkey` is an EC key on P-256.
    static func checkP256(_ pkey: OpaquePointer, context: String) throws(CryptoError) {
        guard EVP_PKEY_is_a(pkey, "EC") == 1 else {
            throw CryptoError(message: "\(context): not an EC key (\(keyTypeName(pkey)))")
        }
        var name = [CChar](repeating: 0, count: 64)
        var len = 0
        guard EVP_PKEY_get_utf8_string_param(pkey, "group", &name, name.count, &len) == 1 else {
            throw CryptoError.openssl("\(context): cannot read the curve name")
        }
        let curve = String(decoding: name.prefix(len).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard curve == "prime256v1" || curve == "P-256" || curve == "secp256r1" else {
            throw CryptoError(message: "\(context): curve \(curve) is not P-256")
        }
    }

    /// The public point of an EC key, uncompressed (65 bytes).
    static func publicPoint(_ pkey: OpaquePointer, context: String) throws(CryptoError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 133)
        var len = 0
        guard EVP_PKEY_get_octet_string_param(pkey, "encoded-pub-key", &out, out.count, &len) == 1 else {
            throw CryptoError.openssl("\(context): cannot read the public key")
        }
        guard len == 65, out[0] == 0x04 else {
            throw CryptoError(message: "\(context): public key is not an uncompressed P-256 point (\(len) bytes)")
        }
        return Array(out.prefix(65))
    }
}

/// A P-256 public key (a WebPush subscriber's `p256dh`), parsed and validated once.
///
/// Built with `EVP_PKEY_fromdata` (cheaper per message than `d2i_PUBKEY`), and
/// checked with `EVP_PKEY_public_check` at init so ECDH need not re-check it.
///
/// Thread safety: the `EVP_PKEY` is immutable after init and only read (as an ECDH
/// peer) by operations that each create their own context, which OpenSSL 3
/// allows from several threads; hence `@unchecked Sendable`.
public final class P256PublicKey: @unchecked Sendable {
    /// The EVP_PKEY (owned; freed in deinit).
    let pkey: OpaquePointer
    /// The point as given, 0x04||X||Y.
    public let uncompressed: [UInt8]

    /// Parses a 65-byte uncompressed point; throws unless it is on P-256.
    public init(uncompressed: [UInt8]) throws(CryptoError) {
        let ctx = "P-256 public key"
        guard uncompressed.count == 65, uncompressed[0] == 0x04 else {
            throw CryptoError(message: "\(ctx): expected 65 bytes starting with 0x04, got \(uncompressed.count) bytes")
        }
        ERR_clear_error()
        let p = try ECKeyData.fromData(priv: nil, pub: uncompressed, context: ctx)
        guard let check = EVP_PKEY_CTX_new_from_pkey(nil, p, nil) else {
            EVP_PKEY_free(p)
            throw CryptoError.openssl("\(ctx): EVP_PKEY_CTX_new_from_pkey")
        }
        let ok = EVP_PKEY_public_check(check)
        EVP_PKEY_CTX_free(check)
        guard ok == 1 else {
            EVP_PKEY_free(p)
            throw CryptoError.openssl("\(ctx): point is not on the curve")
        }
        self.pkey = p
        self.uncompressed = uncompressed
    }

    deinit { EVP_PKEY_free(pkey) }
}

/// Helpers shared by the EC key classes.
enum ECKeyData {
    /// An EC P-256 EVP_PKEY from a private scalar (optional) and an uncompressed public point.
    static func fromData(priv: OpaquePointer?, pub: [UInt8], context: String) throws(CryptoError) -> OpaquePointer {
        guard let key = pl_ec_p256_fromdata(pub, pub.count, priv) else {
            throw CryptoError.openssl("\(context): invalid key data")
        }
        return key
    }

    /// Converts a DER ECDSA-Sig-Value to raw r||s, 32 bytes each.
    static func derToRaw(_ der: [UInt8]) throws(CryptoError) -> [UInt8] {
        let sig: OpaquePointer? = der.withUnsafeBufferPointer { buf in
            var p: UnsafePointer<UInt8>? = buf.baseAddress
            return d2i_ECDSA_SIG(nil, &p, buf.count)
        }
        guard let sig else { throw CryptoError.openssl("ES256 sign: cannot parse the DER signature") }
        defer { ECDSA_SIG_free(sig) }
        var r: OpaquePointer? = nil
        var s: OpaquePointer? = nil
        ECDSA_SIG_get0(sig, &r, &s)
        var out = [UInt8](repeating: 0, count: 64)
        let ok = out.withUnsafeMutableBufferPointer { buf -> Bool in
            guard let base = buf.baseAddress else { return false }
            return BN_bn2binpad(r, base, 32) == 32 && BN_bn2binpad(s, base + 32, 32) == 32
        }
        guard ok else { throw CryptoError.openssl("ES256 sign: r or s does not fit 32 bytes") }
        return out
    }
}

/// The key type name for messages ("RSA", "EC", ...), never key data.
func keyTypeName(_ pkey: OpaquePointer) -> String {
    guard let n = EVP_PKEY_get0_type_name(pkey) else { return "unknown type" }
    return String(cString: n)
}

/// Signs `message` with EVP_DigestSign and SHA-256 (ECDSA gives DER, RSA gives PKCS#1 v1.5).
func digestSign(_ pkey: OpaquePointer, _ message: [UInt8], context: String) throws(CryptoError) -> [UInt8] {
    ERR_clear_error()
    guard let md = EVP_MD_CTX_new() else { throw CryptoError.openssl("\(context): EVP_MD_CTX_new") }
    defer { EVP_MD_CTX_free(md) }
    guard EVP_DigestSignInit(md, nil, EVP_sha256(), nil, pkey) == 1 else { throw CryptoError.openssl("\(context): EVP_DigestSignInit") }
    var len = 0
    guard EVP_DigestSign(md, nil, &len, message, message.count) == 1, len > 0 else {
        throw CryptoError.openssl("\(context): EVP_DigestSign (size)")
    }
    var sig = [UInt8](repeating: 0, count: len)
    guard EVP_DigestSign(md, &sig, &len, message, message.count) == 1 else { throw CryptoError.openssl("\(context): EVP_DigestSign") }
    return Array(sig.prefix(len))
}

/// Writes `pkey` as unencrypted PKCS#8 PEM.
func pemPKCS8(_ pkey: OpaquePointer, context: String) throws(CryptoError) -> String {
    ERR_clear_error()
    guard let bio = BIO_new(BIO_s_secmem()) else { throw CryptoError.openssl("\(context): BIO_new") }
    defer { BIO_free(bio) }
    guard PEM_write_bio_PKCS8PrivateKey(bio, pkey, nil, nil, 0, nil, nil) == 1 else {
        throw CryptoError.openssl("\(context): PEM_write_bio_PKCS8PrivateKey")
    }
    var p: UnsafePointer<CChar>? = nil
    let n = pl_bio_get_mem_data(bio, &p)
    guard n > 0, let p else { throw CryptoError.openssl("\(context): empty PEM output") }
    let bytes = UnsafeRawBufferPointer(start: p, count: n)
    return String(decoding: bytes, as: UTF8.self)
}
