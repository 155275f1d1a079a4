using Xunit.Abstractions;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Seeded randomized test of two embedded processes on ONE SQLite file (<see cref="RandomizedEmbeddedHarness.TwoProcesses"/>),
/// beside the single-process <see cref="ModelBasedEmbeddedTests"/>: the same mix on either process, "duels" on one run
/// from both, and stops while a launch round is held at the provider. It found that a request reaching a stopping host
/// late ran on disposed services (a 500); the request drain now waits for such requests or refuses them.
/// Seeds: TWO_PROC_SEED_FROM / TWO_PROC_SEED_COUNT (default 1..12, about 30 s in all).
/// The same with Handoff:RunRetention set and sweeps in either process (<see cref="RandomizedEmbeddedHarness.TwoProcessesWithRetention"/>):
/// TWO_PROC_RETENTION_SEED_FROM / TWO_PROC_RETENTION_SEED_COUNT (default 1..4).
/// </summary>
public sealed class TwoProcessRandomizedTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Seeds() => RandomizedEmbeddedHarness.Seeds("TWO_PROC_SEED_FROM", "TWO_PROC_SEED_COUNT");

    [Theory]
    [MemberData(nameof(Seeds))]
    public Task Two_processes_on_one_file_keep_the_invariants(int seed) => RandomizedEmbeddedHarness.CheckAsync(seed, RandomizedEmbeddedHarness.TwoProcesses, output);

    public static IEnumerable<object[]> RetentionSeeds() => RandomizedEmbeddedHarness.Seeds("TWO_PROC_RETENTION_SEED_FROM", "TWO_PROC_RETENTION_SEED_COUNT", defaultCount: 4);

    [Theory]
    [MemberData(nameof(RetentionSeeds))]
    public Task Two_processes_with_retention_sweeps_keep_the_invariants(int seed) =>
        RandomizedEmbeddedHarness.CheckAsync(seed, RandomizedEmbeddedHarness.TwoProcessesWithRetention, output);
}
