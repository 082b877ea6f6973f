import Yams
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A YAML tree with positions, detached from Yams so overrides can be spliced in.
indirect enum ConfigNode: Sendable {
    case scalar(String, ConfigLocation)
    case null(ConfigLocation)
    case mapping([(key: String, keyLocation: ConfigLocation, value: ConfigNode)], ConfigLocation)
    case sequence([ConfigNode], ConfigLocation)

    var location: ConfigLocation {
        switch self {
        case let .scalar(_, l), let .null(l), let .mapping(_, l), let .sequence(_, l): return l
        }
    }

    var kindName: String {
        switch self {
        case let .scalar(s, _): return "'\(s)'"
        case .null: return "nothing"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        }
    }

    init(_ node: Node, commandLine: Bool) {
        func loc(_ m: Mark?) -> ConfigLocation {
            commandLine ? ConfigLocation(line: nil, column: nil, fromCommandLine: true)
                        : ConfigLocation(line: m?.line, column: m?.column)
        }
        switch node {
        case let .scalar(s):
            let l = loc(s.mark)
            if s.style == .plain, ["", "~", "null", "Null", "NULL"].contains(s.string) { self = .null(l) }
            else { self = .scalar(s.string, l) }
        case let .mapping(m):
            self = .mapping(m.map { pair in
                let keyText = pair.key.scalar?.string ?? "\(pair.key)"
                return (keyText, loc(pair.key.mark), ConfigNode(pair.value, commandLine: commandLine))
            }, loc(m.mark))
        case let .sequence(s):
            self = .sequence(s.map { ConfigNode($0, commandLine: commandLine) }, loc(s.mark))
        case let .alias(a):
            self = .null(loc(a.mark))
        }
    }

    /// Sets `value` at `path` (creating mappings as needed).
    mutating func set(_ path: ArraySlice<String>, to value: ConfigNode) {
        guard let head = path.first else { self = value; return }
        var pairs: [(key: String, keyLocation: ConfigLocation, value: ConfigNode)] = []
        var l = ConfigLocation(line: nil, column: nil, fromCommandLine: true)
        if case let .mapping(p, ml) = self { pairs = p; l = ml }
        if let i = pairs.firstIndex(where: { $0.key == head }) {
            pairs[i].value.set(path.dropFirst(), to: value)
            pairs[i].keyLocation = ConfigLocation(line: nil, column: nil, fromCommandLine: true)
        } else {
            var fresh = ConfigNode.null(ConfigLocation(line: nil, column: nil, fromCommandLine: true))
            fresh.set(path.dropFirst(), to: value)
            pairs.append((head, ConfigLocation(line: nil, column: nil, fromCommandLine: true), fresh))
        }
        self = .mapping(pairs, l)
    }
}

/// A `key.path=value` override (value in YAML syntax, e.g. `cluster.workers=4`,
/// `dataset.preprocessing.mean=[0.5,0.5,0.5]`).
public struct ConfigOverride: Sendable, Hashable {
    public var keyPath: String
    public var value: String
    public init(keyPath: String, value: String) {
        self.keyPath = keyPath
        self.value = value
    }
    /// Parses `key.path=value`.
    public init(_ text: String) throws {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex else { throw JobConfigError.badOverride(text) }
        keyPath = String(text[..<eq]).trimmingCharacters(in: " ")
        value = String(text[text.index(after: eq)...])
    }
}

/// Walks a ``ConfigNode`` tree, collecting every problem instead of stopping at the first.
struct ConfigWalker {
    var issues: [ConfigIssue] = []
    var locations: [String: ConfigLocation] = [:]
    let file: String?

    mutating func report(_ path: String, _ location: ConfigLocation, _ message: String) {
        issues.append(ConfigIssue(keyPath: path, location: location, message: message, file: file))
    }

    mutating func report(_ path: String, _ message: String) {
        report(path, locations[path] ?? ConfigLocation(line: nil, column: nil), message)
    }

    /// The mapping's entries by key; unknown keys are reported (with a suggestion).
    mutating func mapping(_ node: ConfigNode?, _ path: String, allowed: [String]) -> [String: ConfigNode]? {
        guard let node else { return nil }
        if case .null = node { return [:] }
        guard case let .mapping(pairs, _) = node else {
            report(path, node.location, "expected a mapping, got \(node.kindName)")
            return nil
        }
        var out: [String: ConfigNode] = [:]
        for pair in pairs {
            let full = path.isEmpty ? pair.key : path + "." + pair.key
            if !allowed.contains(pair.key) {
                let hint = closest(pair.key, in: allowed).map { " (did you mean '\($0)'?)" } ?? ""
                report(full, pair.keyLocation, "unknown key '\(pair.key)'\(hint); allowed: \(allowed.joined(separator: ", "))")
                continue
            }
            locations[full] = pair.value.location.line == nil && !pair.value.location.fromCommandLine ? pair.keyLocation : pair.value.location
            out[pair.key] = pair.value
        }
        return out
    }

    mutating func scalar(_ node: ConfigNode?, _ path: String, expected: String) -> String? {
        guard let node else { return nil }
        switch node {
        case .null: return nil
        case let .scalar(s, _): return s
        default:
            report(path, node.location, "expected \(expected), got \(node.kindName)")
            return nil
        }
    }

    mutating func string(_ node: ConfigNode?, _ path: String) -> String? {
        guard let s = scalar(node, path, expected: "a string") else { return nil }
        if s.isEmpty { report(path, node!.location, "must not be empty"); return nil }
        return s
    }

    mutating func int(_ node: ConfigNode?, _ path: String) -> Int? {
        guard let s = scalar(node, path, expected: "an integer") else { return nil }
        let cleaned = s.replacingUnderscores()
        guard let v = Int(cleaned) else {
            report(path, node!.location, "expected an integer, got '\(s)'")
            return nil
        }
        return v
    }

    mutating func double(_ node: ConfigNode?, _ path: String) -> Double? {
        guard let s = scalar(node, path, expected: "a number") else { return nil }
        if let v = parseNumber(s) { return v }
        report(path, node!.location, "expected a number, got '\(s)'")
        return nil
    }

    mutating func bool(_ node: ConfigNode?, _ path: String) -> Bool? {
        guard let s = scalar(node, path, expected: "true or false") else { return nil }
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            report(path, node!.location, "expected true or false, got '\(s)'")
            return nil
        }
    }

    mutating func choice<T: RawRepresentable & CaseIterable>(_ node: ConfigNode?, _ path: String, _: T.Type) -> T?
        where T.RawValue == String {
        guard let s = scalar(node, path, expected: "one of " + T.allCases.map(\.rawValue).joined(separator: ", ")) else { return nil }
        if let v = T(rawValue: s.lowercased()) { return v }
        report(path, node!.location, "'\(s)' is not one of " + T.allCases.map(\.rawValue).joined(separator: ", "))
        return nil
    }

    /// A string or a list of strings.
    mutating func strings(_ node: ConfigNode?, _ path: String) -> [String]? {
        guard let node else { return nil }
        switch node {
        case .null: return []
        case let .scalar(s, _): return [s]
        case let .sequence(items, _):
            var out: [String] = []
            for (i, item) in items.enumerated() {
                if let s = scalar(item, "\(path)[\(i)]", expected: "a string") { out.append(s) }
            }
            return out
        case .mapping:
            report(path, node.location, "expected a string or a list of strings, got a mapping")
            return nil
        }
    }

    /// A number or a list of numbers.
    mutating func numbers(_ node: ConfigNode?, _ path: String) -> [Float]? {
        guard let node else { return nil }
        switch node {
        case .null: return nil
        case let .scalar(s, l):
            guard let v = parseNumber(s) else { report(path, l, "expected a number or a list of numbers, got '\(s)'"); return nil }
            return [Float(v)]
        case let .sequence(items, _):
            var out: [Float] = []
            var ok = true
            for (i, item) in items.enumerated() {
                if let v = double(item, "\(path)[\(i)]") { out.append(Float(v)) } else { ok = false }
            }
            return ok ? out : nil
        case .mapping:
            report(path, node.location, "expected a number or a list of numbers, got a mapping")
            return nil
        }
    }
}

/// Numbers as YAML writes them, plus simple fractions such as `1/255`.
func parseNumber(_ text: String) -> Double? {
    let s = text.replacingUnderscores()
    if let v = Double(s), v.isFinite { return v }
    let parts = s.split(separator: "/")
    if parts.count == 2, let a = Double(parts[0].trimmingWhitespace()), let b = Double(parts[1].trimmingWhitespace()), b != 0 {
        return a / b
    }
    return nil
}

extension String {
    func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}

/// The allowed key closest to `key` (edit distance ≤ 3), for "did you mean" hints.
func closest(_ key: String, in allowed: [String]) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var prev = Array(0 ... b.count)
        for i in 1 ... max(a.count, 1) where !a.isEmpty {
            var cur = [i] + [Int](repeating: 0, count: b.count)
            for j in 1 ... max(b.count, 1) where !b.isEmpty {
                cur[j] = Swift.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }
    let k = Array(key.lowercased().replacingOccurrences("-", "_"))
    let scored = allowed.map { ($0, distance(k, Array($0))) }.min { $0.1 < $1.1 }
    guard let best = scored, best.1 <= 3 else { return nil }
    return best.0
}

extension String {
    func replacingOccurrences(_ a: Character, _ b: Character) -> String { String(map { $0 == a ? b : $0 }) }
}

func fileKind(_ path: String) -> (exists: Bool, isDirectory: Bool) {
    var st = stat()
    guard stat(path, &st) == 0 else { return (false, false) }
    return (true, (st.st_mode & S_IFMT) == S_IFDIR)
}

func resolvePath(_ path: String, base: String) -> String {
    if path.hasPrefix("/") { return path }
    var p = Substring(path)
    while p.hasPrefix("./") { p = p.dropFirst(2) }
    return base == "." || base.isEmpty ? String(p) : base + "/" + p
}
