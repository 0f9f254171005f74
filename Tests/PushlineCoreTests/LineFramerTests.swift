import Testing

@testable import PushlineCore

/// The server's framing (LineFramer), which Tests/fuzz/targets/framing.swift fuzzes against
/// a reference split; these are the cases worth naming.
@Suite struct LineFramerTests {
    enum E: Equatable {
        case line(String)
        case tooLong
    }

    /// Feeds `chunks` in order; `stopAfter` events make the callback return false once each
    /// (the server pausing a connection), after which `resume` is called as the server does.
    func frame(_ chunks: [String], max: Int, stopAt: Set<Int> = []) -> (events: [E], framer: LineFramer) {
        var f = LineFramer(maxLineBytes: max)
        var events: [E] = []
        var stopped = false
        let emit: (LineFramer.Event) -> Bool = { e in
            switch e {
            case .line(let p): events.append(.line(String(decoding: p, as: UTF8.self)))
            case .tooLong: events.append(.tooLong)
            }
            if stopAt.contains(events.count) {
                stopped = true
                return false
            }
            return true
        }
        for c in chunks {
            Array(c.utf8).withUnsafeBufferPointer { f.feed($0, emit) }
            while stopped {
                stopped = false
                f.resume(emit)
            }
        }
        return (events, f)
    }

    @Test func linesAcrossReads() {
        let r = frame(["{\"a\"", ":1}\n{\"b\":2}\n{\"c\"", ""], max: 100)
        #expect(r.events == [.line("{\"a\":1}"), .line("{\"b\":2}")])
        #expect(r.framer.buffer == Array("{\"c\"".utf8))
    }

    @Test func emptyLinesAreLinesAndCRIsKept() {
        // Blank lines and a trailing \r are the server's business (handleLine), not the framer's.
        #expect(frame(["\n\r\nx\n"], max: 10).events == [.line(""), .line("\r"), .line("x")])
    }

    @Test func limitIsInclusive() {
        #expect(frame(["12345\n123456\n"], max: 5).events == [.line("12345"), .tooLong])
        // The same with the line split over reads (the buffered path).
        #expect(frame(["123", "45\n123", "456\n"], max: 5).events == [.line("12345"), .tooLong])
    }

    @Test func longLineIsReportedOnceAndDiscardedToItsNewline() {
        let r = frame(["aaaaaa", "aaaaaaa", "aaaa\nok\n"], max: 5)
        #expect(r.events == [.tooLong, .line("ok")])
        // Known too long before its newline arrives: reported at once, nothing buffered.
        let open = frame(["aaaaaaaa"], max: 5)
        #expect(open.events == [.tooLong])
        #expect(open.framer.buffer.isEmpty && open.framer.discarding)
    }

    @Test func stoppingKeepsTheRestForResume() {
        // Stop after the first line: the rest of the read is framed by resume, in order.
        let r = frame(["a\nb\nc\nd", "\n"], max: 10, stopAt: [1, 2])
        #expect(r.events == [.line("a"), .line("b"), .line("c"), .line("d")])
        #expect(r.framer.buffer.isEmpty)
    }

    @Test func bufferNeverExceedsTheLimitBetweenReads() {
        var f = LineFramer(maxLineBytes: 8)
        for _ in 0..<100 {
            Array("0123456".utf8).withUnsafeBufferPointer { f.feed($0) { _ in true } }
            #expect(f.buffer.count <= 8)
        }
    }
}
