import COpenSSL

/// WebPush message encryption (RFC 8291 with the RFC 8188 "aes128gcm" content coding).
///
/// Each message uses a fresh ephemeral P-256 key (unless `senderKey` is given, for
/// test vectors), ECDH with the subscriber's `p256dh` key, HKDF-SHA256 keyed by the
/// subscriber's 16-byte auth secret, and one AES-128-GCM record of at most 4096 bytes.
///
/// ```swift
/// let sub = try P256PublicKey(uncompressed: p256dh)   // once, at registration
/// let body = try WebPushCrypto.encrypt(Array(json.utf8), to: sub, authSecret: auth)
/// // POST body with "Content-Encoding: aes128gcm"
/// ```
public enum WebPushCrypto {
    /// The record size written in the header (one record per message).
    public static let recordSize = 4096
    /// The largest plaintext that fits one record with no extra padding (4096 - 16 tag - 1 delimiter).
    public static let maxPlaintext = recordSize - 17

    /// RFC 8291 aes128gcm: ephemeral ECDH with the subscriber key, HKDF-SHA256 with the auth secret, one record of rs=4096, AES-128-GCM, padding delimiter 0x02 (+ optional zero padding).
    /// Returns the full body: salt(16) || rs(4, BE) || idlen(1) || keyid(65 = sender public key) || ciphertext.
    public static func encrypt(_ plaintext: [UInt8], to subscriber: P256PublicKey, authSecret: [UInt8], paddingLength: Int = 0,
                               salt: [UInt8]? = nil, senderKey: ECPrivateKey? = nil) throws(CryptoError) -> [UInt8] {
        guard authSecret.count == 16 else { throw CryptoError(message: "WebPush encrypt: auth secret must be 16 bytes, got \(authSecret.count)") }
        guard paddingLength >= 0 else { throw CryptoError(message: "WebPush encrypt: negative padding") }
        guard plaintext.count + 1 + paddingLength + 16 <= recordSize else {
            throw CryptoError(message: "WebPush encrypt: payload of \(plaintext.count) bytes (+\(paddingLength) padding) exceeds one \(recordSize)-byte record")
        }
        let salt = salt ?? Random.bytes(16)
        guard salt.count == 16 else { throw CryptoError(message: "WebPush encrypt: salt must be 16 bytes, got \(salt.count)") }
        let sender: ECPrivateKey
        if let senderKey { sender = senderKey } else { sender = try ECPrivateKey.generate() }

        let (cek, nonce) = try deriveKeys(ecdh: sender.sharedSecret(with: subscriber), authSecret: authSecret, salt: salt,
                                          uaPublic: subscriber.uncompressed, asPublic: sender.publicKeyUncompressed)
        var record = plaintext
        record.reserveCapacity(plaintext.count + 1 + paddingLength)
        record.append(0x02)
        if paddingLength > 0 { record.append(contentsOf: repeatElement(0, count: paddingLength)) }
        let ciphertext = try AESGCM.seal(record, key: cek, nonce: nonce)

        var body: [UInt8] = []
        body.reserveCapacity(86 + ciphertext.count)
        body.append(contentsOf: salt)
        let rs = UInt32(recordSize)
        body.append(contentsOf: [UInt8(rs >> 24), UInt8(rs >> 16 & 0xff), UInt8(rs >> 8 & 0xff), UInt8(rs & 0xff)])
        body.append(65)
        body.append(contentsOf: sender.publicKeyUncompressed)
        body.append(contentsOf: ciphertext)
        return body
    }

    /// The inverse (for tests and fakes): decrypts with the subscriber private key.
    public static func decrypt(_ body: [UInt8], subscriberKey: ECPrivateKey, authSecret: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard authSecret.count == 16 else { throw CryptoError(message: "WebPush decrypt: auth secret must be 16 bytes, got \(authSecret.count)") }
        guard body.count >= 21 else { throw CryptoError(message: "WebPush decrypt: body of \(body.count) bytes is shorter than the header") }
        let salt = Array(body[0..<16])
        let rs = Int(body[16]) << 24 | Int(body[17]) << 16 | Int(body[18]) << 8 | Int(body[19])
        let idlen = Int(body[20])
        guard idlen == 65, body.count >= 21 + idlen else { throw CryptoError(message: "WebPush decrypt: keyid must be a 65-byte public key, got \(idlen)") }
        let sender = try P256PublicKey(uncompressed: Array(body[21..<86]))
        let ciphertext = Array(body[86...])
        guard ciphertext.count >= 17 else { throw CryptoError(message: "WebPush decrypt: ciphertext too short") }
        guard rs >= 18, ciphertext.count <= rs else {
            throw CryptoError(message: "WebPush decrypt: \(ciphertext.count) bytes of ciphertext in more than one record (rs=\(rs)) is not supported")
        }
        let (cek, nonce) = try deriveKeys(ecdh: subscriberKey.sharedSecret(with: sender), authSecret: authSecret, salt: salt,
                                          uaPublic: subscriberKey.publicKeyUncompressed, asPublic: sender.uncompressed)
        var record = try AESGCM.open(ciphertext, key: cek, nonce: nonce)
        // Strip zero padding, then the 0x02 last-record delimiter.
        while let last = record.last, last == 0 { record.removeLast() }
        guard record.last == 0x02 else { throw CryptoError(message: "WebPush decrypt: missing last-record delimiter 0x02") }
        record.removeLast()
        return record
    }

    /// RFC 8291 §3.3-3.4 key schedule: the content-encryption key (16) and nonce (12).
    static func deriveKeys(ecdh: [UInt8], authSecret: [UInt8], salt: [UInt8], uaPublic: [UInt8], asPublic: [UInt8]) -> (cek: [UInt8], nonce: [UInt8]) {
        let keyInfo = Array("WebPush: info".utf8) + [0] + uaPublic + asPublic
        let ikm = Digest.hkdfSHA256(salt: authSecret, ikm: ecdh, info: keyInfo, length: 32)
        let prk = Digest.hmacSHA256(key: salt, data: ikm)
        let cek = Array(Digest.hmacSHA256(key: prk, data: Array("Content-Encoding: aes128gcm".utf8) + [0, 1]).prefix(16))
        let nonce = Array(Digest.hmacSHA256(key: prk, data: Array("Content-Encoding: nonce".utf8) + [0, 1]).prefix(12))
        return (cek, nonce)
    }
}

/// AES-128-GCM with a 12-byte nonce, no associated data and a 16-byte tag appended.
enum AESGCM {
    /// Encrypts `plaintext`; returns ciphertext || tag.
    static func seal(_ plaintext: [UInt8], key: [UInt8], nonce: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard key.count == 16, nonce.count == 12 else { throw CryptoError(message: "AES-128-GCM: bad key or nonce size") }
        ERR_clear_error()
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError.openssl("AES-128-GCM: EVP_CIPHER_CTX_new") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        guard EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), nil, key, nonce) == 1 else { throw CryptoError.openssl("AES-128-GCM: EVP_EncryptInit_ex") }
        var out = [UInt8](repeating: 0, count: plaintext.count + 16 + 16)
        var n: Int32 = 0
        guard EVP_EncryptUpdate(ctx, &out, &n, plaintext, Int32(plaintext.count)) == 1 else { throw CryptoError.openssl("AES-128-GCM: EVP_EncryptUpdate") }
        var total = Int(n)
        let ok = out.withUnsafeMutableBufferPointer { buf -> Bool in
            guard let base = buf.baseAddress else { return false }
            var m: Int32 = 0
            guard EVP_EncryptFinal_ex(ctx, base + total, &m) == 1 else { return false }
            total += Int(m)
            return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, base + total) == 1
        }
        guard ok else { throw CryptoError.openssl("AES-128-GCM: EVP_EncryptFinal_ex/GET_TAG") }
        return Array(out.prefix(total + 16))
    }

    /// Decrypts ciphertext || tag; throws if the tag does not verify.
    static func open(_ sealed: [UInt8], key: [UInt8], nonce: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard key.count == 16, nonce.count == 12, sealed.count >= 16 else { throw CryptoError(message: "AES-128-GCM: bad key, nonce or input size") }
        ERR_clear_error()
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError.openssl("AES-128-GCM: EVP_CIPHER_CTX_new") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        guard EVP_DecryptInit_ex(ctx, EVP_aes_128_gcm(), nil, key, nonce) == 1 else { throw CryptoError.openssl("AES-128-GCM: EVP_DecryptInit_ex") }
        let body = Array(sealed.dropLast(16))
        var tag = Array(sealed.suffix(16))
        var out = [UInt8](repeating: 0, count: body.count + 16)
        var n: Int32 = 0
        guard EVP_DecryptUpdate(ctx, &out, &n, body, Int32(body.count)) == 1 else { throw CryptoError.openssl("AES-128-GCM: EVP_DecryptUpdate") }
        guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, &tag) == 1 else { throw CryptoError.openssl("AES-128-GCM: SET_TAG") }
        var total = Int(n)
        let ok = out.withUnsafeMutableBufferPointer { buf -> Bool in
            guard let base = buf.baseAddress else { return false }
            var m: Int32 = 0
            guard EVP_DecryptFinal_ex(ctx, base + total, &m) == 1 else { return false }
            total += Int(m)
            return true
        }
        guard ok else { throw CryptoError.openssl("AES-128-GCM: authentication failed (wrong key or corrupted data)") }
        return Array(out.prefix(total))
    }
}
