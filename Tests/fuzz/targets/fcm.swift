// libFuzzer target: FCM message building (Sources/PushlineCore/Providers/FCM/FCMMessage.swift and
// the PreparedMessage splice in FCMProvider.swift). The request body must be JSON of the
// HTTP v1 shape: {"message": {"token": ..., ...}} with string-only `data` values.
@testable import PushlineCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFCM(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let fields = fuzzObject(UnsafeBufferPointer(start: data, count: size)) else { return 0 }
    do throws(CommandError) {
        let n = try PushNotification(parsing: fields)
        let built = try FCMMessageBuilder.build(n, nowSeconds: fuzzNow)
        let prepared = try PreparedMessage(n)
        let token = "fuzz-token-\"\\\u{1}é"
        let body = checkJSON(prepared.body(target: "token", token), "fcm body")
        guard let message = body["message"]?.objectValue else { fuzzFail("fcm body without a message object") }
        guard message["token"] == .string(token) else { fuzzFail("fcm body lost its token") }
        if let d = message["data"] {
            guard let o = d.objectValue else { fuzzFail("fcm data is not an object") }
            for (k, v) in o.pairs where v.stringValue == nil { fuzzFail("fcm data value '\(k)' is not a string") }
        }
        guard (body["validate_only"] == .bool(true)) == n.dryRun else { fuzzFail("validate_only does not follow dry_run") }
        _ = built
    } catch {
        checkError(error, "fcm")
    }
    return 0
}
