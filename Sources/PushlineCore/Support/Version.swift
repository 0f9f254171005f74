/// Versions reported by `ping`.
public enum PushlineVersion {
    /// The daemon's version.
    public static let daemon = "0.1.0"
    /// The protocol version, "major.minor": clients refuse a different major.
    public static let proto = "1.3"
}
