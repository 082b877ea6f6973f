/// Identity of this build of shardcal, stamped into state files and protocol handshakes.
public enum ToolInfo {
    public static let name = "shardcal"
    public static let version = "0.1.0"
}
