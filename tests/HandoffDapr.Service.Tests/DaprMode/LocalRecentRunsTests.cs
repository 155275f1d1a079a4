using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Service.Hosting;

namespace HandoffDapr.Service.Tests.DaprMode;

public sealed class LocalRecentRunsTests
{
    [Fact]
    public async Task Most_recently_saved_run_is_listed_first_and_kept_even_without_a_timeline()
    {
        var recent = new LocalRecentRuns();
        var early = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        for (var i = 1; i <= LocalRecentRuns.Capacity; i++)
        {
            recent.Remember(RunHandoffState.New(i) with { Timeline = [new TimelineEntry(early.AddMinutes(i), "x")] });
        }

        // Stored by a completion event that did not hand off: a snapshot, no timeline yet.
        recent.Remember(RunHandoffState.New(9999) with { Snapshot = new RunSnapshot(9999) });
        // Saved again with an old timeline (a quiet poll): it is now among the most recent.
        recent.Remember(RunHandoffState.New(2) with { Timeline = [new TimelineEntry(early.AddMinutes(2), "x")] });

        var listed = await recent.ListAsync(3, CancellationToken.None);

        Assert.Equal([2L, 9999L, LocalRecentRuns.Capacity], listed.Select(run => run.RunId));
        Assert.DoesNotContain(1L, (await recent.ListAsync(LocalRecentRuns.Capacity, CancellationToken.None)).Select(run => run.RunId));
    }

    [Fact]
    public async Task Many_saves_keep_the_table_bounded_and_the_most_recent_runs_listed()
    {
        var recent = new LocalRecentRuns();
        const int saved = 10 * LocalRecentRuns.Capacity;
        for (var i = 1; i <= saved; i++)
        {
            recent.Remember(RunHandoffState.New(i));
        }

        var all = await recent.ListAsync(int.MaxValue, CancellationToken.None);

        Assert.InRange(all.Count, LocalRecentRuns.Capacity, LocalRecentRuns.Capacity + LocalRecentRuns.EvictionSlack);
        Assert.Equal(Enumerable.Range(saved - LocalRecentRuns.Capacity + 1, LocalRecentRuns.Capacity).Reverse().Select(i => (long)i),
            all.Take(LocalRecentRuns.Capacity).Select(run => run.RunId));
    }
}
