/// One shard of the calibration set: a fixed id and its sample index range.
public struct ShardSpec: Sendable, Equatable, Hashable {
    public var id: Int
    public var indices: Range<Int>
    public init(id: Int, indices: Range<Int>) {
        self.id = id
        self.indices = indices
    }

    /// Fixed-size shards of `sampleCount` samples: shard k = k*size ..< min((k+1)*size, count).
    public static func plan(sampleCount: Int, shardSize: Int) -> [ShardSpec] {
        precondition(shardSize > 0)
        return stride(from: 0, to: sampleCount, by: shardSize).enumerated().map { k, start in
            ShardSpec(id: k, indices: start ..< min(start + shardSize, sampleCount))
        }
    }
}

/// The coordinator's bookkeeping, free of sockets and clocks (time is passed in, in seconds), so it
/// can be tested on its own. Workers are keyed by their ZeroMQ routing id.
///
/// Invariants: every shard is in exactly one of pending / leased / done; a shard enters `done` once.
/// A leased shard may also have one backup lease (see `assign`): a second worker computing it; the
/// first result merges and the other is acknowledged and dropped.
public struct Scheduler {
    public typealias WorkerKey = [UInt8]

    public struct WorkerInfo {
        public var name: String
        /// Credit window: the most leases this worker holds at once.
        public var window: Int = 0
        public var leased: Set<Int> = []
        public var lastSeen: Double
        public var done: Int = 0
        public var samplesDone: Int = 0
        public var computeSeconds: Double = 0
        public var admittedAt: Double
        /// Samples per compute second of this worker's last result (nil before its first). The
        /// host a worker runs on changes speed over time, so the last shard predicts the next one
        /// better than the average does.
        public var recentRate: Double?
        /// When its last RESULT or FAIL arrived: a shard leased ahead starts computing then.
        public var lastReportAt: Double?
    }

    public enum Completion: Equatable {
        /// First result for this shard: merge it.
        case merge
        /// Already merged: acknowledge and drop.
        case duplicate
        /// Already merged from the other copy of a shard that had a backup lease: expected, dropped.
        case backupLost
        /// Not a shard of this run.
        case unknownShard
    }

    public enum FailureVerdict: Equatable {
        case retry(attempts: Int)
        /// Failed `attempts` times: the run must stop.
        case giveUp(attempts: Int)
        case ignored
    }

    public let shards: [Int: ShardSpec]
    public let maxFailures: Int
    public let leaseTimeout: Double?
    public let livenessTimeout: Double
    /// Whether idle workers at the end of the queue get backup leases of shards that a slower
    /// worker is expected to finish later than they would.
    public let backupLeases: Bool
    /// A backup lease is issued only if it is expected to finish at least this much sooner
    /// (relative): the original holder's estimated remaining time > (1 + margin) x the backup's.
    public static let backupMargin = 0.25
    /// ...and at least this many seconds sooner (a backup costs a worker's time and CPU).
    public static let backupMinimumGain = 0.2

    /// Next shard to hand out is the LAST element (shards returned to the queue are appended, so they go first).
    private(set) var pendingStack: [Int]
    public private(set) var leases: [Int: (worker: WorkerKey, since: Double)] = [:]
    /// Backup leases: shard -> the second worker computing it (the primary is in `leases`).
    public private(set) var backups: [Int: (worker: WorkerKey, since: Double)] = [:]
    /// Shards merged while a backup ran: the worker still computing the other copy.
    private var raceLosers: [Int: WorkerKey] = [:]
    public private(set) var done: Set<Int>
    public private(set) var workers: [WorkerKey: WorkerInfo] = [:]
    /// Every worker ever admitted (results from them are accepted even after their leases expired).
    public private(set) var everAdmitted: Set<WorkerKey> = []
    public private(set) var failures: [Int: Int] = [:]
    /// Workers a shard failed on: retries go elsewhere while another worker is available.
    private var failedOn: [Int: Set<WorkerKey>] = [:]

    public init(shards: [ShardSpec], alreadyDone: Set<Int> = [], maxFailures: Int = 3,
                leaseTimeout: Double? = nil, livenessTimeout: Double = 5, backupLeases: Bool = false) {
        var byID: [Int: ShardSpec] = [:]
        for s in shards { byID[s.id] = s }
        self.shards = byID
        self.done = alreadyDone.intersection(byID.keys)
        self.pendingStack = byID.keys.filter { !alreadyDone.contains($0) }.sorted(by: >)
        self.maxFailures = max(1, maxFailures)
        self.leaseTimeout = leaseTimeout
        self.livenessTimeout = livenessTimeout
        self.backupLeases = backupLeases
    }

    public var pendingCount: Int { pendingStack.count }
    public var pending: [Int] { pendingStack.reversed() }
    public var leasedCount: Int { leases.count }
    public var isFinished: Bool { done.count == shards.count }

    // MARK: workers

    /// Admits (or re-admits) a worker. A re-admitted worker lost its previous leases: they go back to the queue.
    public mutating func admit(_ key: WorkerKey, name: String, now: Double) {
        if workers[key] != nil { _ = remove(key) }
        workers[key] = WorkerInfo(name: name, lastSeen: now, admittedAt: now)
        everAdmitted.insert(key)
    }

    /// Sets the worker's credit window.
    public mutating func setWindow(_ key: WorkerKey, credits: Int, now: Double) {
        workers[key]?.window = credits
        touch(key, now: now)
    }

    public mutating func touch(_ key: WorkerKey, now: Double) {
        workers[key]?.lastSeen = now
    }

    /// Forgets a worker; its leased shards go back to the queue. Returns them.
    @discardableResult
    public mutating func remove(_ key: WorkerKey) -> [Int] {
        guard let info = workers.removeValue(forKey: key) else { return [] }
        var returned: [Int] = []
        for shard in info.leased.sorted(by: >) {
            if backups[shard]?.worker == key {
                backups[shard] = nil
            } else if leases[shard]?.worker == key {
                leases[shard] = nil
                if !promoteBackup(shard) {
                    pendingStack.append(shard)
                    returned.append(shard)
                }
            }
        }
        return returned.reversed()
    }

    /// The primary lease of `shard` is gone: its backup (if any) becomes the lease. Returns whether there was one.
    private mutating func promoteBackup(_ shard: Int) -> Bool {
        guard let backup = backups.removeValue(forKey: shard) else { return false }
        leases[shard] = backup
        return true
    }

    /// Removes workers silent for longer than the liveness timeout, and leases older than the lease timeout.
    /// Returns the removed workers (with the shards they held) and the shards whose lease alone expired.
    public mutating func expire(now: Double) -> (workers: [(key: WorkerKey, name: String, shards: [Int])], leases: [Int]) {
        var gone: [(WorkerKey, String, [Int])] = []
        for (key, info) in workers where now - info.lastSeen > livenessTimeout {
            gone.append((key, info.name, remove(key)))
        }
        var expiredLeases: [Int] = []
        if let timeout = leaseTimeout {
            for (shard, backup) in backups where now - backup.since > timeout {
                workers[backup.worker]?.leased.remove(shard)
                backups[shard] = nil
            }
            for (shard, lease) in leases where now - lease.since > timeout {
                expiredLeases.append(shard)
            }
            for shard in expiredLeases.sorted(by: >) {
                if let key = leases[shard]?.worker { workers[key]?.leased.remove(shard) }
                leases[shard] = nil
                if !promoteBackup(shard) { pendingStack.append(shard) }
            }
            expiredLeases.removeAll { leases[$0] != nil }
        }
        return (gone.map { (key: $0.0, name: $0.1, shards: $0.2) }, expiredLeases.sorted())
    }

    // MARK: leases

    /// Hands out shards to every worker with free credit. Deterministic for a given history.
    ///
    /// Near the end of the queue (fewer shards pending than the workers' credits together, with more
    /// than one worker) a worker gets a shard only when it holds none: a shard leased ahead to a
    /// busy worker would wait there while another worker runs dry, and the run would end later.
    ///
    /// With `backupLeases`, once the queue is empty, a worker holding nothing gets a backup lease
    /// of a shard another worker holds, when its recent speed says it would finish that shard
    /// clearly sooner than the holder (a straggler: a slower machine, or a core the host has slowed
    /// down). Whichever copy finishes first is merged; the results are identical, so the outcome is too.
    public mutating func assign(now: Double) -> [(worker: WorkerKey, shard: ShardSpec)] {
        var out: [(WorkerKey, ShardSpec)] = []
        if pendingStack.isEmpty { return backupLeases ? assignBackups(now: now) : [] }
        let totalCredits = workers.count > 1 ? workers.values.reduce(0) { $0 + $1.window } : 0
        // Least-loaded first, ties by name, so fast workers (whose credits come back sooner) take more.
        let order = workers.keys.sorted { a, b in
            let la = workers[a]!.leased.count, lb = workers[b]!.leased.count
            return la != lb ? la < lb : workers[a]!.name < workers[b]!.name
        }
        var progress = true
        while progress && !pendingStack.isEmpty {
            progress = false
            for key in order where workers[key]!.leased.count < workers[key]!.window {
                if pendingStack.count < totalCredits && !workers[key]!.leased.isEmpty { continue }
                guard let shard = takeShard(for: key) else { continue }
                workers[key]!.leased.insert(shard)
                leases[shard] = (key, now)
                out.append((key, shards[shard]!))
                progress = true
                if pendingStack.isEmpty { break }
            }
        }
        return out.map { (worker: $0.0, shard: $0.1) }
    }

    /// Seconds until `holder` is expected to finish each shard it holds as primary. It computes
    /// them in lease order, the first since its lease was sent or the holder's last report,
    /// whichever is later (a shard leased ahead waits for the one before it). With a recent rate,
    /// each takes samples / rate; once the first has run longer than that, it is assumed to be late
    /// by as much again (so a stalled or stopped worker's estimate keeps growing). A holder that has
    /// not finished a shard yet is assumed to need at least as long again as its first shard has
    /// run so far, and as long for each shard after it.
    func expectedFinish(of holder: WorkerKey, now: Double) -> [Int: Double] {
        guard let info = workers[holder] else { return [:] }
        let held = info.leased.filter { leases[$0]?.worker == holder }
            .sorted { (leases[$0]!.since, $0) < (leases[$1]!.since, $1) }
        guard let first = held.first else { return [:] }
        let running = now - max(leases[first]!.since, info.lastReportAt ?? -Double.infinity)
        let rate: Double
        if let r = info.recentRate, r > 0 {
            rate = r
        } else {
            guard running > 0 else { return [:] }
            rate = Double(shards[first]!.indices.count) / running
        }
        var out: [Int: Double] = [:]
        var t = 0.0
        for (i, shard) in held.enumerated() {
            let duration = Double(shards[shard]!.indices.count) / rate
            if i > 0 {
                t += duration
            } else if info.recentRate == nil {
                t = running
            } else {
                t = abs(duration - running)   // time left, or once overdue the delay so far
            }
            out[shard] = t
        }
        return out
    }

    private mutating func assignBackups(now: Double) -> [(worker: WorkerKey, shard: ShardSpec)] {
        guard workers.count > 1, !leases.isEmpty else { return [] }
        var out: [(worker: WorkerKey, shard: ShardSpec)] = []
        let idle = workers.keys.filter { workers[$0]!.leased.isEmpty && workers[$0]!.window > 0 && workers[$0]!.recentRate != nil }
            .sorted { workers[$0]!.name < workers[$1]!.name }
        for key in idle {
            let rate = workers[key]!.recentRate!
            guard rate > 0 else { continue }
            // The shard whose backup would gain the most, if any would gain enough.
            var best: (shard: Int, gain: Double)?
            for holder in Set(leases.values.map(\.worker)) where holder != key {
                for (shard, remaining) in expectedFinish(of: holder, now: now)
                    where backups[shard] == nil && failedOn[shard]?.contains(key) != true {
                    let mine = Double(shards[shard]!.indices.count) / rate
                    guard remaining > (1 + Self.backupMargin) * mine, remaining - mine >= Self.backupMinimumGain else { continue }
                    let gain = remaining - mine
                    if best == nil || gain > best!.gain || (gain == best!.gain && shard < best!.shard) { best = (shard, gain) }
                }
            }
            guard let (shard, _) = best else { continue }
            backups[shard] = (key, now)
            workers[key]!.leased.insert(shard)
            out.append((key, shards[shard]!))
        }
        return out
    }

    private mutating func takeShard(for key: WorkerKey) -> Int? {
        // Prefer a shard that has not failed on this worker; look at the next few only.
        var i = pendingStack.count - 1
        let lowest = max(0, pendingStack.count - 64)
        while i >= lowest {
            let shard = pendingStack[i]
            if failedOn[shard]?.contains(key) != true {
                pendingStack.remove(at: i)
                return shard
            }
            i -= 1
        }
        // Every candidate failed here before: retry here only if no other admitted worker could take it.
        let shard = pendingStack[pendingStack.count - 1]
        let others = workers.keys.filter { $0 != key && failedOn[shard]?.contains($0) != true }
        if others.isEmpty {
            pendingStack.removeLast()
            return shard
        }
        return nil
    }

    // MARK: results

    /// Records a result for `shard` from `key`. Only `.merge` changes `done`.
    public mutating func complete(shard: Int, from key: WorkerKey, samples: Int, computeSeconds: Double, now: Double) -> Completion {
        guard shards[shard] != nil else { return .unknownShard }
        touch(key, now: now)
        workers[key]?.lastReportAt = now
        if done.contains(shard) {
            workers[key]?.leased.remove(shard)
            if raceLosers[shard] == key {
                raceLosers[shard] = nil
                if computeSeconds > 0 && samples > 0 { workers[key]?.recentRate = Double(samples) / computeSeconds }
                return .backupLost
            }
            return .duplicate
        }
        done.insert(shard)
        if computeSeconds > 0 && samples > 0 { workers[key]?.recentRate = Double(samples) / computeSeconds }
        if let backup = backups.removeValue(forKey: shard) {
            // The other copy is still being computed: its worker is free for new leases (it
            // computes them after that copy), and its result will be dropped.
            workers[backup.worker]?.leased.remove(shard)
            if let holder = leases[shard]?.worker { workers[holder]?.leased.remove(shard) }
            let loser = backup.worker == key ? leases[shard]?.worker : backup.worker
            if let loser { raceLosers[shard] = loser }
        }
        if let holder = leases.removeValue(forKey: shard) {
            workers[holder.worker]?.leased.remove(shard)
        } else if let idx = pendingStack.lastIndex(of: shard) {
            // Lease had expired and the shard was queued again: the late result still counts once.
            pendingStack.remove(at: idx)
        }
        workers[key]?.leased.remove(shard)
        workers[key]?.done += 1
        workers[key]?.samplesDone += samples
        workers[key]?.computeSeconds += computeSeconds
        return .merge
    }

    /// Undoes `complete` for a result that was accepted but then refused by the merge (its counts
    /// failed a check made while adding them): the shard is no longer done, and the caller records
    /// the failure with `fail(shard:from:now:)`, which queues it again.
    public mutating func revoke(shard: Int, from key: WorkerKey, samples: Int, computeSeconds: Double) {
        guard done.remove(shard) != nil else { return }
        raceLosers[shard] = nil // a copy still being computed may now merge
        if workers[key] != nil {
            workers[key]!.done -= 1
            workers[key]!.samplesDone -= samples
            workers[key]!.computeSeconds -= computeSeconds
        }
    }

    /// Records a failure. Below `maxFailures` the shard goes back to the queue (preferring other workers).
    public mutating func fail(shard: Int, from key: WorkerKey, now: Double) -> FailureVerdict {
        guard shards[shard] != nil, !done.contains(shard) else { return .ignored }
        touch(key, now: now)
        workers[key]?.lastReportAt = now
        workers[key]?.leased.remove(shard)
        var otherCopyRuns = false
        if backups[shard]?.worker == key {
            backups[shard] = nil
            otherCopyRuns = true
        } else if leases[shard]?.worker == key {
            leases[shard] = nil
            otherCopyRuns = promoteBackup(shard)
        } else if leases[shard] != nil {
            return .ignored // someone else holds it now
        } else if pendingStack.contains(shard) {
            return .ignored
        }
        let attempts = (failures[shard] ?? 0) + 1
        failures[shard] = attempts
        failedOn[shard, default: []].insert(key)
        if attempts >= maxFailures { return .giveUp(attempts: attempts) }
        // A backup's failure (or the primary's, with a backup running) leaves the other copy running.
        if !otherCopyRuns { pendingStack.append(shard) }
        return .retry(attempts: attempts)
    }

    /// Puts a leased shard back in the queue without counting a failure (e.g. a rejected result).
    public mutating func requeue(shard: Int) {
        guard let lease = leases.removeValue(forKey: shard) else { return }
        workers[lease.worker]?.leased.remove(shard)
        if !promoteBackup(shard) { pendingStack.append(shard) }
    }
}
