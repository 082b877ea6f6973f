import Testing
@testable import Data

@Suite struct ShardPlanTests {
    @Test func evenSplit() throws {
        let plan = try ShardPlan(sampleCount: 1000, shardSize: 50)
        #expect(plan.shardCount == 20)
        #expect(plan.range(ofShard: 0) == 0 ..< 50)
        #expect(plan.range(ofShard: 19) == 950 ..< 1000)
        #expect(plan.shard(containing: 949) == 18)
    }

    @Test func shortLastShard() throws {
        let plan = try ShardPlan(sampleCount: 10, shardSize: 3)
        #expect(plan.shardCount == 4)
        #expect(plan.ranges == [0 ..< 3, 3 ..< 6, 6 ..< 9, 9 ..< 10])
        // The ranges tile the dataset exactly once.
        #expect(plan.ranges.flatMap { Array($0) } == Array(0 ..< 10))
    }

    @Test func edgeCases() throws {
        #expect(try ShardPlan(sampleCount: 0, shardSize: 8).shardCount == 0)
        #expect(try ShardPlan(sampleCount: 7, shardSize: 100).ranges == [0 ..< 7])
        #expect(throws: DataError.self) { try ShardPlan(sampleCount: 10, shardSize: 0) }
        #expect(throws: DataError.self) { try ShardPlan(sampleCount: -1, shardSize: 4) }
    }

    @Test func sameOnEveryConstruction() throws {
        // Two independently built plans (two "machines") agree shard by shard.
        let a = try ShardPlan(sampleCount: 12345, shardSize: 64)
        let b = try ShardPlan(sampleCount: 12345, shardSize: 64)
        #expect(a == b)
        #expect(a.shardCount == 193) // ceil(12345 / 64)
        #expect(a.range(ofShard: 192) == 12288 ..< 12345)
    }

    @Test func extendingKeepsEveryExistingShardAndCoversOnlyNewSamples() throws {
        // 120 samples in shards of 50: the last is short (100..<120). Growing to 230 keeps shard 2
        // as it was and plans 120..<230 as new shards 3, 4, 5 (hand-computed).
        let old = try ShardPlan(sampleCount: 120, shardSize: 50)
        let grown = try old.extended(to: 230)
        #expect(grown.segments == [120, 110])
        #expect(grown.ranges == [0 ..< 50, 50 ..< 100, 100 ..< 120, 120 ..< 170, 170 ..< 220, 220 ..< 230])
        #expect(grown.shard(containing: 119) == 2 && grown.shard(containing: 120) == 3 && grown.shard(containing: 229) == 5)
        #expect(Array(grown.ranges.prefix(old.shardCount)) == old.ranges)
        #expect(grown.ranges.flatMap { Array($0) } == Array(0 ..< 230), "still every sample exactly once")
        #expect(try grown.extended(to: 230) == grown)
        #expect(throws: DataError.self) { try grown.extended(to: 200) }
        // Round trip through the text a state file keeps.
        let text = try grown.extended(to: 231).segmentsText
        #expect(text == "120,110,1")
        #expect(try ShardPlan(segmentsText: text, shardSize: 50).ranges.last == 230 ..< 231)
        #expect(throws: DataError.self) { try ShardPlan(segmentsText: "12,x", shardSize: 50) }
        #expect(throws: DataError.self) { try ShardPlan(segments: [10, 0], shardSize: 5) }
    }
}
