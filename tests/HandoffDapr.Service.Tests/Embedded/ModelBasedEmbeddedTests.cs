using Xunit.Abstractions;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Seeded randomized test of one embedded process (<see cref="RandomizedEmbeddedHarness.OneProcess"/>): per seed, 2–4
/// runs and 5–30 random operations, restarts on the same SQLite file (also while a round is under way), provider faults
/// with calls that time out, then settle and check the design's invariants.
/// Seeds: MODEL_SEED_FROM / MODEL_SEED_COUNT environment variables (default 1..12, about a second each).
/// The same with Handoff:RunRetention set and sweeps among the operations (<see cref="RandomizedEmbeddedHarness.OneProcessWithRetention"/>):
/// MODEL_RETENTION_SEED_FROM / MODEL_RETENTION_SEED_COUNT (default 1..8).
/// </summary>
public sealed class ModelBasedEmbeddedTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Seeds() => RandomizedEmbeddedHarness.Seeds("MODEL_SEED_FROM", "MODEL_SEED_COUNT");

    [Theory]
    [MemberData(nameof(Seeds))]
    public Task Random_sequence_keeps_the_invariants(int seed) => RandomizedEmbeddedHarness.CheckAsync(seed, RandomizedEmbeddedHarness.OneProcess, output);

    public static IEnumerable<object[]> RetentionSeeds() => RandomizedEmbeddedHarness.Seeds("MODEL_RETENTION_SEED_FROM", "MODEL_RETENTION_SEED_COUNT", defaultCount: 8);

    [Theory]
    [MemberData(nameof(RetentionSeeds))]
    public Task Random_sequence_with_retention_sweeps_keeps_the_invariants(int seed) =>
        RandomizedEmbeddedHarness.CheckAsync(seed, RandomizedEmbeddedHarness.OneProcessWithRetention, output);
}
