import Foundation
import Testing
@testable import PushlineCore

// RFC 8291 §5 / Appendix A values (base64url, as printed in the RFC).
private enum RFC8291 {
    static let plaintext = "When I grow up, I want to be a watermelon"
    static let authSecret = "BTBZMqHH6r4Tts7J_aSIgg"
    static let uaPrivate = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
    static let uaPublic = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
    static let asPrivate = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
    static let asPublic = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
    static let salt = "DGv6ra1nlYgDCS1FRnbzlw"
    static let ecdhSecret = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs"
    static let body = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
}

private func b64u(_ s: String) throws -> [UInt8] {
    try #require(Base64URL.decode(s), "bad base64url test vector")
}

@Suite("WebPush encryption (RFC 8291)")
struct CryptoWebPushTests {
    @Test("raw private scalars give the RFC's public keys and ECDH secret")
    func rfcKeys() throws {
        let ua = try ECPrivateKey(rawPrivateKey: b64u(RFC8291.uaPrivate))
        let asKey = try ECPrivateKey(rawPrivateKey: b64u(RFC8291.asPrivate))
        #expect(Base64URL.encode(ua.publicKeyUncompressed) == RFC8291.uaPublic)
        #expect(Base64URL.encode(asKey.publicKeyUncompressed) == RFC8291.asPublic)
        let uaPub = try P256PublicKey(uncompressed: b64u(RFC8291.uaPublic))
        let asPub = try P256PublicKey(uncompressed: b64u(RFC8291.asPublic))
        #expect(Base64URL.encode(try asKey.sharedSecret(with: uaPub)) == RFC8291.ecdhSecret)
        #expect(Base64URL.encode(try ua.sharedSecret(with: asPub)) == RFC8291.ecdhSecret)
    }

    @Test("Appendix A: encrypt gives the RFC body byte for byte, decrypt inverts it")
    func appendixA() throws {
        let sub = try P256PublicKey(uncompressed: b64u(RFC8291.uaPublic))
        let sender = try ECPrivateKey(rawPrivateKey: b64u(RFC8291.asPrivate))
        let body = try WebPushCrypto.encrypt(Array(RFC8291.plaintext.utf8), to: sub, authSecret: b64u(RFC8291.authSecret),
                                             salt: b64u(RFC8291.salt), senderKey: sender)
        #expect(body == (try b64u(RFC8291.body)))
        #expect(body.count == 86 + RFC8291.plaintext.utf8.count + 1 + 16)

        let ua = try ECPrivateKey(rawPrivateKey: b64u(RFC8291.uaPrivate))
        let plain = try WebPushCrypto.decrypt(b64u(RFC8291.body), subscriberKey: ua, authSecret: b64u(RFC8291.authSecret))
        #expect(String(decoding: plain, as: UTF8.self) == RFC8291.plaintext)
    }

    @Test("random keys and padding round trip; header layout; tampering is detected")
    func roundTrip() throws {
        let ua = try ECPrivateKey.generate()
        let sub = try P256PublicKey(uncompressed: ua.publicKeyUncompressed)
        let auth = Random.bytes(16)
        let payload = Array(#"{"title":"hi","body":"\#(String(repeating: "x", count: 180))"}"#.utf8)
        for padding in [0, 1, 100] {
            let body = try WebPushCrypto.encrypt(payload, to: sub, authSecret: auth, paddingLength: padding)
            #expect(body.count == 86 + payload.count + 1 + padding + 16)
            #expect(Array(body[16..<21]) == [0, 0, 0x10, 0, 65])
            #expect(body[21] == 0x04)
            #expect(try WebPushCrypto.decrypt(body, subscriberKey: ua, authSecret: auth) == payload)

            var tampered = body
            tampered[tampered.count - 20] ^= 1
            #expect(throws: CryptoError.self) { try WebPushCrypto.decrypt(tampered, subscriberKey: ua, authSecret: auth) }
            var wrongAuth = auth
            wrongAuth[0] ^= 0xff
            #expect(throws: CryptoError.self) { try WebPushCrypto.decrypt(body, subscriberKey: ua, authSecret: wrongAuth) }
        }
        // Two encryptions of the same message differ (fresh salt and ephemeral key).
        let a = try WebPushCrypto.encrypt(payload, to: sub, authSecret: auth)
        let b = try WebPushCrypto.encrypt(payload, to: sub, authSecret: auth)
        #expect(a != b)
        #expect(a[0..<16] != b[0..<16])
        #expect(a[21..<86] != b[21..<86])
    }

    @Test("limits: record size, auth secret length")
    func limits() throws {
        let ua = try ECPrivateKey.generate()
        let sub = try P256PublicKey(uncompressed: ua.publicKeyUncompressed)
        let auth = Random.bytes(16)
        let max = [UInt8](repeating: 7, count: WebPushCrypto.maxPlaintext)
        let body = try WebPushCrypto.encrypt(max, to: sub, authSecret: auth)
        #expect(body.count == 86 + 4096)
        #expect(try WebPushCrypto.decrypt(body, subscriberKey: ua, authSecret: auth) == max)
        #expect(throws: CryptoError.self) { try WebPushCrypto.encrypt(max + [1], to: sub, authSecret: auth) }
        #expect(throws: CryptoError.self) { try WebPushCrypto.encrypt(max, to: sub, authSecret: auth, paddingLength: 1) }
        #expect(throws: CryptoError.self) { try WebPushCrypto.encrypt([1], to: sub, authSecret: Random.bytes(15)) }
    }

    @Test("subscriber keys must be 65-byte points on P-256")
    func badPublicKeys() throws {
        var point = try b64u(RFC8291.uaPublic)
        #expect(throws: CryptoError.self) { try P256PublicKey(uncompressed: Array(point.prefix(64))) }
        #expect(throws: CryptoError.self) { try P256PublicKey(uncompressed: [0x02] + Array(point[1...])) }
        point[64] ^= 1  // (x, y+-1) is not on the curve
        do {
            _ = try P256PublicKey(uncompressed: point)
            Issue.record("an off-curve point was accepted")
        } catch {
            #expect(error.message.contains("P-256 public key"))
        }
        #expect(throws: CryptoError.self) { try P256PublicKey(uncompressed: [UInt8](repeating: 0, count: 65)) }
    }
}

@Suite("Keys and JWT (ES256/RS256), checked with pyca/cryptography")
struct CryptoJWTTests {
    @Test("ES256 JWT from an Apple-style PKCS#8 .p8 verifies independently")
    func es256() throws {
        let pem = try pythonKeyPEM("p256-pkcs8")
        let key = try ECPrivateKey(pem: Array(pem.utf8))
        #expect(hex(key.publicKeyUncompressed) == (try pythonPublicPoint(pem: pem)))
        let token = try JWT.es256(header: ["kid": "ABC123DEFG", "typ": "JWT"],
                                  claims: ["iss": "DEF123GHIJ", "iat": 1_700_000_000], key: key)
        let r = try pythonVerifyJWT(token, es256PublicHex: hex(key.publicKeyUncompressed))
        #expect(r.ok)
        #expect(r.claims == #"{"iat":1700000000,"iss":"DEF123GHIJ"}|{"alg":"ES256","kid":"ABC123DEFG","typ":"JWT"}"#)
        #expect(token.hasPrefix(Base64URL.encode(Array(#"{"alg":"ES256","kid":"ABC123DEFG","typ":"JWT"}"#.utf8)) + "."))

        // The check can fail: another key, or altered claims, does not verify.
        let other = try ECPrivateKey.generate()
        #expect(!(try pythonVerifyJWT(token, es256PublicHex: hex(other.publicKeyUncompressed))).ok)
        let parts = token.split(separator: ".").map(String.init)
        let forged = parts[0] + "." + Base64URL.encode(Array(#"{"iss":"EVIL"}"#.utf8)) + "." + parts[2]
        #expect(!(try pythonVerifyJWT(forged, es256PublicHex: hex(key.publicKeyUncompressed))).ok)
    }

    @Test("ECDSA signatures are 64 raw bytes and randomized")
    func es256Raw() throws {
        let key = try ECPrivateKey.generate()
        let msg = Array("payload".utf8)
        let s1 = try key.signES256(msg)
        let s2 = try key.signES256(msg)
        #expect(s1.count == 64 && s2.count == 64)
        #expect(s1 != s2)
    }

    @Test("SEC1 and encrypted PEMs load; pkcs8PEM round trips through Python")
    func pemForms() throws {
        let sec1 = try pythonKeyPEM("p256-sec1")
        #expect(sec1.contains("BEGIN EC PRIVATE KEY"))
        let k1 = try ECPrivateKey(pem: Array(sec1.utf8))
        #expect(hex(k1.publicKeyUncompressed) == (try pythonPublicPoint(pem: sec1)))

        let enc = try pythonKeyPEM("p256-encrypted:s3cret")
        #expect(enc.contains("ENCRYPTED"))
        let k2 = try ECPrivateKey(pem: Array(enc.utf8), password: "s3cret")
        #expect(hex(k2.publicKeyUncompressed) == (try pythonPublicPoint(pem: enc, password: "s3cret")))
        #expect(throws: CryptoError.self) { try ECPrivateKey(pem: Array(enc.utf8), password: "wrong") }
        #expect(throws: CryptoError.self) { try ECPrivateKey(pem: Array(enc.utf8)) }

        // `openssl ecparam -genkey` output (EC PARAMETERS block first) and CRLF line ends.
        let withParams = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" + sec1
        #expect((try ECPrivateKey(pem: Array(withParams.utf8))).publicKeyUncompressed == k1.publicKeyUncompressed)
        let crlf = sec1.split(separator: "\n").joined(separator: "\r\n") + "\r\n"
        #expect((try ECPrivateKey(pem: Array(crlf.utf8))).publicKeyUncompressed == k1.publicKeyUncompressed)

        let gen = try ECPrivateKey.generate()
        let out = try gen.pkcs8PEM()
        #expect(out.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
        #expect(hex(gen.publicKeyUncompressed) == (try pythonPublicPoint(pem: out)))
        let again = try ECPrivateKey(pem: Array(out.utf8))
        #expect(again.publicKeyUncompressed == gen.publicKeyUncompressed)
    }

    @Test("RS256 JWT from a service-account PKCS#8 key verifies independently")
    func rs256() throws {
        let pem = try pythonKeyPEM("rsa2048")
        #expect(pem.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        let key = try RSAPrivateKey(pem: Array(pem.utf8))
        #expect(key.bits == 2048)
        let token = try JWT.rs256(header: ["typ": "JWT"],
                                  claims: ["iss": "svc@example.iam.gserviceaccount.com", "aud": "https://oauth2.googleapis.com/token"], key: key)
        let r = try pythonVerifyJWT(token, rsaPEM: pem)
        #expect(r.ok)
        #expect(r.claims.hasSuffix(#"|{"alg":"RS256","typ":"JWT"}"#))
        #expect((try Base64URL.decode(#require(token.split(separator: ".").last.map(String.init))))?.count == 256)
        let otherPEM = try pythonKeyPEM("rsa2048")
        #expect(!(try pythonVerifyJWT(token, rsaPEM: otherPEM)).ok)
    }

    @Test("wrong curve, wrong key type and garbage give CryptoErrors without key material")
    func errors() throws {
        let p384 = try pythonKeyPEM("p384-pkcs8")
        let rsa = try pythonKeyPEM("rsa2048")
        let p256 = try pythonKeyPEM("p256-pkcs8")
        let rsaShort = try pythonKeyPEM("rsa1024")
        let garbage = "-----BEGIN PRIVATE KEY-----\nTm90IGEga2V5IGF0IGFsbCwganVzdCBzb21lIHRleHQ=\n-----END PRIVATE KEY-----\n"

        func message(_ body: () throws(CryptoError) -> Void) -> String? {
            do { try body(); return nil } catch { return error.message }
        }
        /// Each base64 body line of a PEM (the key material).
        func bodyLines(_ pem: String) -> [String] {
            pem.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("-----") && $0.count > 8 }
        }
        let cases: [(String, String, String?)] = [
            ("P-384 as EC", p384, message { () throws(CryptoError) in _ = try ECPrivateKey(pem: Array(p384.utf8)) }),
            ("RSA as EC", rsa, message { () throws(CryptoError) in _ = try ECPrivateKey(pem: Array(rsa.utf8)) }),
            ("garbage as EC", garbage, message { () throws(CryptoError) in _ = try ECPrivateKey(pem: Array(garbage.utf8)) }),
            ("EC as RSA", p256, message { () throws(CryptoError) in _ = try RSAPrivateKey(pem: Array(p256.utf8)) }),
            ("garbage as RSA", garbage, message { () throws(CryptoError) in _ = try RSAPrivateKey(pem: Array(garbage.utf8)) }),
            ("RSA-1024 as RSA", rsaShort, message { () throws(CryptoError) in _ = try RSAPrivateKey(pem: Array(rsaShort.utf8)) }),
            ("empty as EC", "", message { () throws(CryptoError) in _ = try ECPrivateKey(pem: []) }),
        ]
        for (name, pem, msg) in cases {
            guard let msg else { Issue.record("\(name): no error"); continue }
            #expect(!msg.isEmpty, "\(name)")
            for line in bodyLines(pem) { #expect(!msg.contains(line), "\(name): message contains PEM text") }
            #expect(!msg.contains("BEGIN"), "\(name)")
        }
        #expect(cases[0].2?.contains("not P-256") == true)
        #expect(cases[1].2?.contains("not an EC key") == true)
        #expect(cases[2].2?.contains("error:") == true, "OpenSSL queue text is included")
        #expect(cases[3].2?.contains("not RSA") == true)
        #expect(throws: CryptoError.self) { try ECPrivateKey(rawPrivateKey: [UInt8](repeating: 0, count: 32)) }
        #expect(throws: CryptoError.self) { try ECPrivateKey(rawPrivateKey: [UInt8](repeating: 0xff, count: 32)) }
        #expect(throws: CryptoError.self) { try ECPrivateKey(rawPrivateKey: [1, 2, 3]) }
    }

    @Test("after a failure the OpenSSL error queue is left empty")
    func queueCleared() throws {
        #expect(throws: CryptoError.self) { try ECPrivateKey(pem: Array("nope".utf8)) }
        #expect(drainOpenSSLErrors() == "")
    }

    @Test("one key signs from many threads at once")
    func concurrentSigning() async throws {
        let key = try ECPrivateKey.generate()
        let pubHex = hex(key.publicKeyUncompressed)
        let tokens = try await withThrowingTaskGroup(of: String.self) { group in
            for i in 0..<8 {
                group.addTask {
                    var last = ""
                    for j in 0..<50 { last = try JWT.es256(header: [:], claims: ["n": .int(Int64(i * 100 + j))], key: key) }
                    return last
                }
            }
            var all: [String] = []
            for try await t in group { all.append(t) }
            return all
        }
        #expect(tokens.count == 8)
        #expect(try pythonVerifyJWT(tokens[0], es256PublicHex: pubHex).ok)
    }
}

@Suite("Digest and Random")
struct CryptoDigestTests {
    @Test func sha256Vectors() {
        #expect(hex(Digest.sha256([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex(Digest.sha256(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func hmacVectors() {
        // RFC 4231 test cases 1 and 2.
        #expect(hex(Digest.hmacSHA256(key: [UInt8](repeating: 0x0b, count: 20), data: Array("Hi There".utf8)))
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(hex(Digest.hmacSHA256(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8)))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(Digest.hmacSHA256(key: [], data: []).count == 32)
    }

    @Test func hkdfVector() {
        // RFC 5869 test case 1, truncated to one block (32 bytes).
        let okm = Digest.hkdfSHA256(salt: unhex("000102030405060708090a0b0c"), ikm: [UInt8](repeating: 0x0b, count: 22),
                                    info: unhex("f0f1f2f3f4f5f6f7f8f9"), length: 32)
        #expect(hex(okm) == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
    }

    @Test func random() {
        #expect(Random.bytes(0).isEmpty)
        let a = Random.bytes(32), b = Random.bytes(32)
        #expect(a.count == 32 && a != b)
    }
}

// MARK: - Helpers: an independent implementation (Python pyca/cryptography) to check against.

/// Runs `python3 -c script args...` and returns its exit status and stdout.
func runPython(_ script: String, _ args: [String] = []) throws -> (status: Int32, out: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", script] + args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}
/// Prints a PEM private key generated by Python: kind is "p256-pkcs8", "p256-sec1",
/// "p256-encrypted:<password>", "p384-pkcs8", "rsa2048", "rsa1024".
func pythonKeyPEM(_ kind: String) throws -> String {
    let script = """
    import sys
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives import serialization as s
    kind = sys.argv[1]
    enc = s.NoEncryption(); fmt = s.PrivateFormat.PKCS8
    if kind.startswith('p256-encrypted:'):
        k = ec.generate_private_key(ec.SECP256R1()); enc = s.BestAvailableEncryption(kind.split(':', 1)[1].encode())
    elif kind == 'p256-pkcs8': k = ec.generate_private_key(ec.SECP256R1())
    elif kind == 'p256-sec1': k = ec.generate_private_key(ec.SECP256R1()); fmt = s.PrivateFormat.TraditionalOpenSSL
    elif kind == 'p384-pkcs8': k = ec.generate_private_key(ec.SECP384R1())
    elif kind == 'rsa2048': k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == 'rsa1024': k = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    sys.stdout.write(k.private_bytes(s.Encoding.PEM, fmt, enc).decode())
    """
    let r = try runPython(script, [kind])
    guard r.status == 0 else { throw CryptoError(message: "python key generation failed for \(kind)") }
    return r.out
}

/// Python: prints the uncompressed public point (hex) of a PEM private key, optionally encrypted.
func pythonPublicPoint(pem: String, password: String? = nil) throws -> String {
    let script = """
    import sys
    from cryptography.hazmat.primitives import serialization as s
    pw = sys.argv[2].encode() if len(sys.argv) > 2 else None
    k = s.load_pem_private_key(sys.argv[1].encode(), password=pw)
    sys.stdout.write(k.public_key().public_bytes(s.Encoding.X962, s.PublicFormat.UncompressedPoint).hex())
    """
    let r = try runPython(script, [pem] + (password.map { [$0] } ?? []))
    guard r.status == 0 else { throw CryptoError(message: "python could not load the PEM") }
    return r.out
}

/// Python: verifies a compact JWS (ES256 with an uncompressed public point in hex, or
/// RS256 with the PEM private key's public half). Prints the claims JSON; exit 0 iff valid.
func pythonVerifyJWT(_ token: String, es256PublicHex: String? = nil, rsaPEM: String? = nil) throws -> (ok: Bool, claims: String) {
    let script = """
    import sys, base64, json
    from cryptography.hazmat.primitives.asymmetric import ec, utils, padding
    from cryptography.hazmat.primitives import hashes, serialization as s
    def d(x): return base64.urlsafe_b64decode(x + '=' * (-len(x) % 4))
    tok, mode, key = sys.argv[1], sys.argv[2], sys.argv[3]
    h, c, sig = tok.split('.')
    for part in (h, c, sig): assert '=' not in part and '+' not in part and '/' not in part
    hdr = json.loads(d(h)); sig = d(sig); msg = (h + '.' + c).encode()
    if mode == 'es256':
        assert hdr['alg'] == 'ES256' and len(sig) == 64
        der = utils.encode_dss_signature(int.from_bytes(sig[:32], 'big'), int.from_bytes(sig[32:], 'big'))
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(key)).verify(der, msg, ec.ECDSA(hashes.SHA256()))
    else:
        assert hdr['alg'] == 'RS256'
        s.load_pem_private_key(key.encode(), password=None).public_key().verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
    sys.stdout.write(json.dumps(json.loads(d(c)), separators=(',', ':'), sort_keys=True) + '|' + json.dumps(hdr, separators=(',', ':'), sort_keys=True))
    """
    let args = es256PublicHex.map { [token, "es256", $0] } ?? [token, "rs256", rsaPEM ?? ""]
    let r = try runPython(script, args)
    return (r.status == 0, r.out)
}

func hex(_ b: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for x in b { out.append(digits[Int(x >> 4)]); out.append(digits[Int(x & 15)]) }
    return String(decoding: out, as: UTF8.self)
}

func unhex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = s.utf8.makeIterator()
    while let a = it.next(), let b = it.next() {
        out.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16) ?? 0)
    }
    return out
}
