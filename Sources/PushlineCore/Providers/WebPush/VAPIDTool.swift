#if canImport(Glibc)
import Glibc
#endif

/// What `pushline vapid generate` and `pushline vapid show` do: make a VAPID key pair
/// and print the applicationServerKey browsers subscribe with.
///
/// ```swift
/// let (path, key) = try VAPIDTool.generate(outDir: "/etc/pushline")
/// // path == "/etc/pushline/vapid_private.pem" (PKCS#8 PEM, mode 0600)
/// // key  == "BEFuGfKK..." (base64url of the 65-byte uncompressed public point)
/// try VAPIDTool.publicKey(privateKeyPath: path) == key
/// ```
public enum VAPIDTool {
    /// Why a key could not be made, written or read.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public static let fileName = "vapid_private.pem"

    /// Writes a new P-256 private key to `outDir/vapid_private.pem` (PKCS#8 PEM, mode 0600;
    /// refuses to overwrite an existing file) and returns its path and the applicationServerKey.
    public static func generate(outDir: String) throws -> (privateKeyPath: String, applicationServerKey: String) {
        let dir = outDir.isEmpty ? "." : outDir
        let path = dir.hasSuffix("/") ? dir + fileName : dir + "/" + fileName
        let key: ECPrivateKey
        let pem: String
        do {
            key = try ECPrivateKey.generate()
            pem = try key.pkcs8PEM()
        } catch {
            throw Failure(message: "cannot generate a P-256 key: \(error)")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let e = errno
            if e == EEXIST { throw Failure(message: "'\(path)' already exists; remove it or choose another --out directory") }
            throw Failure(message: "cannot create '\(path)': \(String(cString: strerror(e)))")
        }
        let bytes = Array(pem.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }  // non-empty array: baseAddress exists
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                close(fd)
                unlink(path)
                throw Failure(message: "cannot write '\(path)': \(String(cString: strerror(e)))")
            }
            written += n
        }
        // open's mode is filtered by the umask; make sure it is exactly 0600.
        fchmod(fd, 0o600)
        guard fsync(fd) == 0, close(fd) == 0 else {
            let e = errno
            throw Failure(message: "cannot write '\(path)': \(String(cString: strerror(e)))")
        }
        return (path, Base64URL.encode(key.publicKeyUncompressed))
    }

    /// The applicationServerKey (base64url uncompressed public point) of a VAPID private key PEM file.
    public static func publicKey(privateKeyPath: String) throws -> String {
        guard let pem = readFile(privateKeyPath) else {
            throw Failure(message: "cannot read '\(privateKeyPath)': \(String(cString: strerror(errno)))")
        }
        do {
            return Base64URL.encode(try ECPrivateKey(pem: pem).publicKeyUncompressed)
        } catch {
            throw Failure(message: "'\(privateKeyPath)' is not a P-256 private key: \(error)")
        }
    }
}
