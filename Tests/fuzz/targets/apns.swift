// libFuzzer target: APNs payload building (Sources/PushlineCore/Providers/APNs/APNsPayload.swift).
// A notification object goes through PushNotification(parsing:) and APNsMessage as a send does;
// it must either be refused with a clear error or give headers libcurl can send as they are
// and a payload that is JSON, within Apple's limit once checkSize passed.
@testable import PushlineCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAPNs(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let fields = fuzzObject(UnsafeBufferPointer(start: data, count: size)) else { return 0 }
    do throws(CommandError) {
        let n = try PushNotification(parsing: fields)
        // Token auth needs a topic; certificate auth does not: alternate with the input.
        let token = size % 2 == 0
        let m = try APNsMessage(n, defaultTopic: token ? "com.example.app" : nil, requireTopic: token, nowSeconds: fuzzNow)
        checkHeaders(m.headers, "apns")
        guard m.header("apns-push-type") == m.pushType else { fuzzFail("apns-push-type header differs from pushType") }
        guard let aps = checkJSON(m.body, "apns payload")["aps"], aps.objectValue != nil else { fuzzFail("payload without an aps object") }
        for (t, _) in m.badges.prefix(4) { _ = checkJSON(m.body(for: t), "apns payload with a badge") }
        do throws(CommandError) {
            try m.checkSize()
            guard m.body.count <= m.limit else { fuzzFail("checkSize passed a \(m.body.count)-byte payload over \(m.limit)") }
        } catch {
            guard error.code == .payloadTooLarge else { fuzzFail("checkSize threw \(error.code)") }
        }
    } catch {
        checkError(error, "apns")
    }
    return 0
}
