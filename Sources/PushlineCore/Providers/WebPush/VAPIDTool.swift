/// VAPID key tools behind `pushline vapid`. PLACEHOLDER: the WebPush work replaces this file.
public enum VAPIDTool {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }
    public static func generate(outDir: String) throws -> (privateKeyPath: String, applicationServerKey: String) {
        throw Failure(description: "not implemented yet")
    }
    public static func publicKey(privateKeyPath: String) throws -> String {
        throw Failure(description: "not implemented yet")
    }
}
