using System.Runtime.CompilerServices;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Service.Api;
using HandoffDapr.Service.Hosting;
using Microsoft.Extensions.Time.Testing;

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

    [Fact]
    public async Task The_table_keeps_every_run_up_to_its_slack_and_then_exactly_the_most_recent_capacity()
    {
        // GET /runs pages up to 200 and the status page lists from here: the eviction must leave a whole Capacity of the
        // newest runs, and must not start before the slack is used up (or every save sorts the table once it is full).
        var recent = new LocalRecentRuns();
        const int full = LocalRecentRuns.Capacity + LocalRecentRuns.EvictionSlack;
        for (var i = 1; i <= full; i++)
        {
            recent.Remember(RunHandoffState.New(i));
        }

        Assert.Equal(full, (await recent.ListAsync(int.MaxValue, CancellationToken.None)).Count);

        recent.Remember(RunHandoffState.New(full + 1));

        var kept = await recent.ListAsync(int.MaxValue, CancellationToken.None);
        Assert.Equal(Enumerable.Range(full + 2 - LocalRecentRuns.Capacity, LocalRecentRuns.Capacity).Reverse().Select(i => (long)i),
            kept.Select(run => run.RunId));
    }

    [Fact]
    public async Task A_run_is_listed_until_the_instant_retention_deletes_it_and_not_from_then_on()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var recent = new LocalRecentRuns(time);
        var deletedAt = time.GetUtcNow().AddHours(1);
        recent.Remember(RunHandoffState.New(1), deletedAt);
        recent.Remember(RunHandoffState.New(2));

        time.SetUtcNow(deletedAt.AddTicks(-1));
        Assert.Equal([2L, 1L], (await recent.ListAsync(10, CancellationToken.None)).Select(run => run.RunId));

        // From its deletion time the actor takes the run as deleted (its tombstone is due, as <= now): the list must not show it.
        time.SetUtcNow(deletedAt);
        Assert.Equal([2L], (await recent.ListAsync(10, CancellationToken.None)).Select(run => run.RunId));
    }

    [Fact]
    public async Task A_remembered_run_keeps_its_group_for_the_view_but_not_its_snapshot_alive()
    {
        // Up to Capacity + EvictionSlack runs are kept for as long as the replica runs; a snapshot may be up to
        // Handoff:MaxRequestBodyBytes of JSON (1 MiB, twice that as .NET strings): 625 of them would hold over a GiB,
        // against the pod's 512 MiB. The view the table is read for needs the run's group, not its snapshot.
        var recent = new LocalRecentRuns();
        var snapshots = RememberRunsWithLargeSnapshots(recent, count: 8);

        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();

        Assert.All(snapshots, snapshot => Assert.False(snapshot.IsAlive, "the table keeps the run's whole snapshot"));
        var views = (await recent.ListAsync(10, CancellationToken.None)).Select(RunHandoffView.From).ToList();
        Assert.Equal(8, views.Count);
        Assert.All(views, view => Assert.Equal(view.RunId * 10, view.GroupId));
    }

    [Fact]
    public async Task A_remembered_run_is_listed_with_the_repositories_its_view_refuses()
    {
        // GET /runs (the status page) shows a run's refused as GET /runs/{id}/handoff does: derived from the snapshot's
        // repositories, which the table must keep when it lets go of the rest of the snapshot.
        var recent = new LocalRecentRuns();
        var runs = new[]
        {
            new RunSnapshot(1, Group: new RunGroup(10), Preferences: new HandoffPreferences([new RepositoryPreference("github", "acme", "shop")])),
            new RunSnapshot(2, Group: new RunGroup(20), Preferences: new HandoffPreferences(
                [new RepositoryPreference("github", "acme", "shop"), new RepositoryPreference("gitlab", "acme", "web"), new RepositoryPreference("github", "acme", "bad name")])),
            new RunSnapshot(3, Group: new RunGroup(30), Preferences: new HandoffPreferences([])),
        }.Select(snapshot => RunHandoffState.New(snapshot.RunId) with { Snapshot = snapshot }).ToList();
        foreach (var run in runs)
        {
            recent.Remember(run);
        }

        var listed = (await recent.ListAsync(10, CancellationToken.None)).Select(RunHandoffView.From).OrderBy(view => view.RunId).ToList();

        Assert.Equal(runs.Select(run => RunHandoffView.From(run).Refused), listed.Select(view => view.Refused));
        Assert.Equal([0, 2, 1], listed.Select(view => view.Refused.Count));
    }

    [Fact]
    public async Task A_remembered_run_keeps_its_launches_for_the_view_but_not_their_instructions_alive()
    {
        // A launch still to be sent keeps the person's instruction (up to 4096 characters) for its retries; the view leaves
        // it out. Kept in the table, 625 runs of 50 such launches (a provider down) held 250 MB of them, read back from the
        // store as a string per launch, for as long as the replica runs: half the pod's 512 MiB.
        var recent = new LocalRecentRuns();
        var instructions = RememberRunsWithInstructions(recent, count: 8);

        var views = await ViewsOnceInstructionsAreLetGoAsync(recent, instructions);
        Assert.All(views, view => Assert.Equal(["acme/shop", "acme/web"], view.Launches.Select(launch => launch.Repository)));
    }

    [Fact]
    public async Task A_launch_instruction_is_let_go_even_beside_a_launch_that_has_none()
    {
        // A run whose first repository was launched (its instruction already dropped) while the second waits for a retry:
        // the waiting launch's instruction must not be kept for the view because another launch has none.
        var recent = new LocalRecentRuns();
        var instructions = RememberRunsWithInstructions(recent, count: 8, launchedFirst: true);

        var views = await ViewsOnceInstructionsAreLetGoAsync(recent, instructions);
        Assert.All(views, view => Assert.Equal([LaunchPhase.Launched, LaunchPhase.RetryScheduled], view.Launches.Select(launch => launch.Phase)));
    }

    /// <summary>After a full collection, no instruction is alive and the eight runs still have their views.</summary>
    private static async Task<List<RunHandoffView>> ViewsOnceInstructionsAreLetGoAsync(LocalRecentRuns recent, List<WeakReference> instructions)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();

        Assert.All(instructions, instruction => Assert.False(instruction.IsAlive, "the table keeps a launch's instruction"));
        var views = (await recent.ListAsync(10, CancellationToken.None)).Select(RunHandoffView.From).ToList();
        Assert.Equal(8, views.Count);
        return views;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static List<WeakReference> RememberRunsWithInstructions(LocalRecentRuns recent, int count, bool launchedFirst = false)
    {
        var instructions = new List<WeakReference>();
        var at = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        for (var i = 1; i <= count; i++)
        {
            var launches = new[] { "acme/shop", "acme/web" }.Select((repository, index) =>
            {
                if (launchedFirst && index == 0)
                {
                    return new RepositoryLaunch(repository, "github", 42, "cursor_background_agent", 1, $"autofix/{i}-{repository}", null, true, null,
                        LaunchPhase.Launched, 1, null, null, $"bc-{i}", null, at);
                }

                var instruction = new string('x', 4096);
                instructions.Add(new WeakReference(instruction));
                return new RepositoryLaunch(repository, "github", 42, "cursor_background_agent", 1, $"autofix/{i}-{repository}", null, true, instruction,
                    LaunchPhase.RetryScheduled, 0, null, at, null, null, at);
            }).ToList();
            recent.Remember(RunHandoffState.New(i) with { Snapshot = new RunSnapshot(i, Group: new RunGroup(i * 10L)), Launches = launches });
        }

        return instructions;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static List<WeakReference> RememberRunsWithLargeSnapshots(LocalRecentRuns recent, int count)
    {
        var snapshots = new List<WeakReference>();
        for (var i = 1; i <= count; i++)
        {
            // Every other run names its group in its metadata only, which the view falls back to.
            var group = i % 2 == 0 ? null : new RunGroup(i * 10L);
            var metadata = i % 2 == 0 ? new RunMetadata(GroupId: i * 10L) : null;
            var snapshot = new RunSnapshot(i, Group: group, Metadata: metadata, Artifacts: new RunArtifacts(
                RootCause: new RootCauseArtifact(OneLineDescription: new string('x', 512 * 1024))));
            snapshots.Add(new WeakReference(snapshot.Artifacts));
            recent.Remember(RunHandoffState.New(i) with { Snapshot = snapshot });
        }

        return snapshots;
    }
}
