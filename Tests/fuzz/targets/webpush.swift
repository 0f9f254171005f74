// libFuzzer target: WebPush encryption input (WebPushProvider.payload and .headers, the
// subscription key decoding of WebPushProvider.keys, and WebPushCrypto.encrypt).
// The first byte picks the mode:
//  - even: the rest is a notification object: the plaintext and headers a send builds;
//    when the plaintext fits one record it is encrypted to a fixed subscriber and must decrypt
//    to the same bytes (only for every 8th input: encryption costs ~0.1 ms).
//  - odd: the rest is "p256dh\nauth" as a subscription gives them: decoding and point
//    validation must refuse or accept without crashing, and an accepted key must encrypt.
@testable import PushlineCore

let subscriber: ECPrivateKey = {
    do { return try ECPrivateKey(rawPrivateKey: Array(repeating: 7, count: 32)) } catch { fatalError("subscriber key: \(error)") }
}()
let subscriberPublic: P256PublicKey = {
    do { return try P256PublicKey(uncompressed: subscriber.publicKeyUncompressed) } catch { fatalError("subscriber public key: \(error)") }
}()
let sender: ECPrivateKey = {
    do { return try ECPrivateKey(rawPrivateKey: Array(repeating: 9, count: 32)) } catch { fatalError("sender key: \(error)") }
}()
let authSecret = Array<UInt8>(repeating: 0x42, count: 16)
let salt = Array<UInt8>(repeating: 0x24, count: 16)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWebPush(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size >= 1 else { return 0 }
    let mode = data[0]
    let rest = UnsafeBufferPointer(start: data + 1, count: size - 1)
    if mode & 1 == 1 {
        let text = String(decoding: rest, as: UTF8.self)
        let parts = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return 0 }
        guard let point = WebPushProvider.decodeKey(String(parts[0])), point.count == 65,
            let auth = WebPushProvider.decodeKey(String(parts[1])), auth.count == 16,
            let pk = try? P256PublicKey(uncompressed: point)
        else { return 0 }
        do {
            let body = try WebPushCrypto.encrypt(Array("hi".utf8), to: pk, authSecret: auth, salt: salt, senderKey: sender)
            guard body.count == 86 + 2 + 1 + 16 else { fuzzFail("encrypted body of \(body.count) bytes") }
        } catch {
            fuzzFail("a key that P256PublicKey accepted cannot be encrypted to: \(error)")
        }
        return 0
    }
    guard let fields = fuzzObject(rest) else { return 0 }
    do throws(CommandError) {
        let n = try PushNotification(parsing: fields)
        let plaintext = try WebPushProvider.payload(n)
        let headers = try WebPushProvider.headers(n, defaultTTL: 2_419_200, now: fuzzNow)
        checkHeaders(headers, "webpush")
        guard let ttl = headers.first(where: { $0.0 == "ttl" }), let t = Int64(ttl.1), t >= 0 else { fuzzFail("webpush without a valid ttl header") }
        if fields["payload"] == nil { _ = checkJSON(plaintext, "webpush plaintext") }
        if mode & 0x0E == 0, plaintext.count <= WebPushCrypto.maxPlaintext {
            do {
                let body = try WebPushCrypto.encrypt(plaintext, to: subscriberPublic, authSecret: authSecret, salt: salt, senderKey: sender)
                let back = try WebPushCrypto.decrypt(body, subscriberKey: subscriber, authSecret: authSecret)
                guard back == plaintext else { fuzzFail("webpush decrypts to different bytes") }
            } catch {
                fuzzFail("webpush encryption of a \(plaintext.count)-byte plaintext failed: \(error)")
            }
        }
    } catch {
        checkError(error, "webpush")
    }
    return 0
}
