import Testing
import PushlineCore

@Suite("Base64 and Base64URL")
struct CryptoBase64Tests {
    // RFC 4648 §10 test vectors.
    static let vectors: [(String, String)] = [
        ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy"),
    ]

    @Test func standardVectors() {
        for (plain, enc) in Self.vectors {
            #expect(Base64.encode(Array(plain.utf8)) == enc)
            #expect(Base64.decode(enc) == Array(plain.utf8))
        }
    }

    @Test func urlVectors() {
        for (plain, enc) in Self.vectors {
            let unpadded = String(enc.filter { $0 != "=" })
            #expect(Base64URL.encode(Array(plain.utf8)) == unpadded)
            #expect(Base64URL.decode(unpadded) == Array(plain.utf8))
            #expect(Base64URL.decode(enc) == Array(plain.utf8), "padding accepted")
        }
        // The characters that differ between the alphabets.
        #expect(Base64URL.encode([0xfb, 0xff, 0xbf]) == "-_-_")
        #expect(Base64.encode([0xfb, 0xff, 0xbf]) == "+/+/")
        #expect(Base64URL.decode("-_-_") == [0xfb, 0xff, 0xbf])
        #expect(Base64.decode("+/+/") == [0xfb, 0xff, 0xbf])
    }

    @Test func rejectsInvalid() {
        #expect(Base64URL.decode("+/+/") == nil)
        #expect(Base64.decode("-_-_") == nil)
        #expect(Base64URL.decode("Zm9v!") == nil)
        #expect(Base64URL.decode("Z") == nil)          // one leftover character
        #expect(Base64.decode("Zg===") == nil)        // too much padding
        #expect(Base64.decode("Zg=x") == nil)         // data after padding
        #expect(Base64.decode("Zm9v=") == nil)        // padding after a whole quantum
        #expect(Base64URL.decode("Zm 9v") == nil)
    }

    @Test func standardIgnoresNewlines() {
        #expect(Base64.decode("Zm9v\nYmFy\r\n") == Array("foobar".utf8))
        #expect(Base64URL.decode("Zm9v\nYmFy") == nil)
    }

    @Test func roundTripsAllLengths() {
        for n in 0..<70 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ n &* 11) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
            #expect(Base64URL.decode(Base64URL.encode(bytes)) == bytes)
            #expect(!Base64URL.encode(bytes).contains("="))
            #expect(Base64.encode(bytes).count % 4 == 0)
        }
        let all = (0...255).map { UInt8($0) }
        #expect(Base64.decode(Base64.encode(all)) == all)
        #expect(Base64URL.decode(Base64URL.encode(all)) == all)
    }
}
