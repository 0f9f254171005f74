// libFuzzer target: WNS request building (WNSProvider.buildMessage). Headers must be sendable
// as they are; an XML notification must be well-formed enough that what the client wrote
// cannot close or open elements (every '<' we did not write is escaped).
@testable import PushlineCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWNS(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let fields = fuzzObject(UnsafeBufferPointer(start: data, count: size)) else { return 0 }
    do throws(CommandError) {
        let n = try PushNotification(parsing: fields)
        let m = try WNSProvider.buildMessage(n)
        checkHeaders(m.headers, "wns", lowercase: false)
        checkHeaders([("x-wns-type", m.type), ("content-type", m.contentType)], "wns", lowercase: false)
        guard ["wns/toast", "wns/tile", "wns/badge", "wns/raw"].contains(m.type) else { fuzzFail("wns type \(m.type)") }
        if m.contentType.hasPrefix("text/xml"), fields["wns_payload"] == nil {
            // Built by us from the notification's text: balanced tags, nothing injected.
            var depth = 0
            var i = 0
            let b = m.body
            while i < b.count {
                if b[i] == UInt8(ascii: "<") {
                    if i + 1 < b.count, b[i + 1] == UInt8(ascii: "/") { depth -= 1 } else { depth += 1 }
                    while i < b.count, b[i] != UInt8(ascii: ">") { i += 1 }
                    if i > 0, b[i - 1] == UInt8(ascii: "/") { depth -= 1 }
                }
                guard depth >= 0 else { fuzzFail("wns xml closes more elements than it opens: \(String(decoding: b, as: UTF8.self))") }
                i += 1
            }
            guard depth == 0 else { fuzzFail("wns xml leaves \(depth) elements open: \(String(decoding: b, as: UTF8.self))") }
        }
    } catch {
        checkError(error, "wns")
    }
    return 0
}
