// libFuzzer target: the server's line framing (Sources/PushlineCore/Server/LineFramer.swift).
// The input picks a line limit, how the stream is cut into reads and where the server
// pauses (too many requests in flight); the events must equal a reference split of the
// whole stream, and the framer must never hold more than the limit between reads.
@testable import PushlineCore

enum Expected: Equatable {
    case line([UInt8])
    case tooLong
}

/// The reference: every `\n`-terminated line, a line longer than `max` as one `tooLong`;
/// an unterminated tail only if it is already too long.
func reference(_ stream: ArraySlice<UInt8>, max: Int) -> [Expected] {
    var out: [Expected] = []
    var cur: [UInt8] = []
    for b in stream {
        if b == 0x0A {
            out.append(cur.count > max ? .tooLong : .line(cur))
            cur.removeAll()
        } else {
            cur.append(b)
        }
    }
    if cur.count > max { out.append(.tooLong) }
    return out
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFraming(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size >= 3 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let max = Int(input[0] % 48)
    var rng = UInt32(input[1]) << 8 | UInt32(input[2]) | 1
    func next() -> UInt32 {  // xorshift32: the cuts and pauses are a function of the input
        rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5
        return rng
    }
    let stream = input[3...]
    var framer = LineFramer(maxLineBytes: max)
    var got: [Expected] = []
    var paused = false
    let emit: (LineFramer.Event) -> Bool = { event in
        switch event {
        case .line(let p): got.append(.line(Array(p)))
        case .tooLong: got.append(.tooLong)
        }
        if next() % 5 == 0 {
            paused = true
            return false
        }
        return true
    }
    var at = stream.startIndex
    while at < stream.endIndex {
        let n = Swift.min(Int(next() % 24) + 1, stream.endIndex - at)
        let chunk = Array(stream[at..<at + n])
        at += n
        chunk.withUnsafeBufferPointer { framer.feed($0, emit) }
        // As the server does: no new bytes until the paused lines are handled.
        var rounds = 0
        while paused {
            paused = false
            framer.resume(emit)
            rounds += 1
            if rounds > 10_000 { fuzzFail("resume does not make progress") }
        }
        if framer.buffer.count > max { fuzzFail("buffer holds \(framer.buffer.count) bytes over the \(max)-byte limit") }
    }
    let want = reference(stream, max: max)
    guard got == want else { fuzzFail("max \(max): events \(got) != reference \(want)") }
    return 0
}
