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
}
