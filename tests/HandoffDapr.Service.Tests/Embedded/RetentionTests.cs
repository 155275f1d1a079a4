using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Handoff:RunRetention in embedded mode: the sweep deletes settled runs unchanged for the retention, never one with
/// anything pending nor one changed since it was read; a deleted run's tombstone keeps a redelivered event from
/// launching again (in this process or another on the file), and reads and triggers are told the run was deleted.
/// </summary>
public sealed class RetentionTests : IDisposable
{
    private const string Route = "/events/autofix-run-completed";
    private static readonly TimeSpan Retention = TimeSpan.FromDays(1);
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeLogCollector logs = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task A_settled_run_unchanged_for_the_retention_is_swept_and_read_as_deleted()
    {
        using var factory = Start();
        using var client = factory.CreateClient();
        await SettleAsync(factory, client, 700);

        time.Advance(Retention - TimeSpan.FromMinutes(1));
        await Sweeper(factory).SweepAsync(CancellationToken.None);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/700/handoff")).StatusCode); // not yet: kept
        // A sweep that deletes nothing says so at debug only: every 10 minutes at information would be noise.
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "RunsSweptByRetention");
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Name == "RetentionSweepFoundNothing" && record.Level == LogLevel.Debug);

        time.Advance(TimeSpan.FromMinutes(2));
        await Sweeper(factory).SweepAsync(CancellationToken.None);

        Assert.Null((await factory.Store.LoadAsync(700, CancellationToken.None)).State);
        var read = await client.GetAsync("/runs/700/handoff?group_id=456");
        Assert.Equal(HttpStatusCode.NotFound, read.StatusCode);
        var problem = await read.ReadJsonAsync();
        Assert.Equal("https://handoff-dapr.dev/problems/run-deleted", problem["type"]!.GetValue<string>());
        Assert.Contains("deleted at 2026-11-25T10:", problem["detail"]!.GetValue<string>());
        // Another group's caller learns nothing of it, as of any run.
        var otherGroup = await (await client.GetAsync("/runs/700/handoff?group_id=999")).ReadJsonAsync();
        Assert.Equal("https://handoff-dapr.dev/problems/unknown-run", otherGroup["type"]!.GetValue<string>());
        var listed = await (await client.GetAsync("/runs")).ReadJsonArrayAsync();
        Assert.DoesNotContain(listed, run => run!["run_id"]!.GetValue<long>() == 700);
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Name == "RunsSweptByRetention" && record.Level == LogLevel.Information && record.GetStructuredStateValue("Deleted") == "1");
    }

    [Fact]
    public async Task A_redelivered_completion_event_after_the_sweep_launches_nothing_and_a_trigger_is_told_the_run_was_deleted()
    {
        using var factory = Start();
        using var client = factory.CreateClient();
        var run = await SettleAndSweepAsync(factory, client, 701);
        var launches = cursor.LaunchRequests;

        var redelivered = await client.PostJsonAsync(Route, run);
        var trigger = await client.PostJsonAsync("/runs/701/handoff", Payloads.Trigger(run));
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, redelivered.StatusCode);
        Assert.Equal("SUCCESS", (await redelivered.ReadJsonAsync())["status"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.NotFound, trigger.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/run-deleted", (await trigger.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(1, launches);
        Assert.Equal(launches, cursor.LaunchRequests);
        Assert.Null((await factory.Store.LoadAsync(701, CancellationToken.None)).State);
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Name == "CompletionEventForDeletedRun");
    }

    /// <summary>
    /// The tombstone keeps the run's group: an event for the deleted run naming another group is refused as for a stored
    /// run of that group (a 404), not answered as taken, and neither stores nor launches anything (docs/api.md).
    /// </summary>
    [Fact]
    public async Task A_completion_event_of_another_group_for_a_swept_run_is_a_404_and_launches_nothing()
    {
        using var factory = Start();
        using var client = factory.CreateClient();
        await SettleAndSweepAsync(factory, client, 711);
        var launches = cursor.LaunchRequests;

        var otherGroup = await client.PostJsonAsync(Route, Payloads.Run(711, ["acme/shop"], groupId: 999));
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.NotFound, otherGroup.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/unknown-run", (await otherGroup.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(launches, cursor.LaunchRequests);
        var stored = await factory.Store.LoadAsync(711, CancellationToken.None);
        Assert.Null(stored.State);
        Assert.NotNull(stored.Deleted);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "CompletionEventForDeletedRun");
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Name == "CompletionEventDropped");
    }

    [Fact]
    public async Task Another_process_on_the_file_launches_nothing_for_a_run_the_first_swept()
    {
        var path = temp.File("shared.db");
        using var first = Start(path);
        using var firstClient = first.CreateClient();
        var run = await SettleAsync(first, firstClient, 702);
        using var second = Start(path);
        using var secondClient = second.CreateClient();
        time.Advance(Retention + TimeSpan.FromMinutes(1));

        await Sweeper(first).SweepAsync(CancellationToken.None);
        var redelivered = await secondClient.PostJsonAsync(Route, run);
        await second.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, redelivered.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.NotNull((await second.Store.LoadAsync(702, CancellationToken.None)).Deleted);
    }

    [Fact]
    public async Task A_run_with_a_launch_to_retry_or_an_agent_still_watched_is_kept_however_old()
    {
        using var factory = Start();
        using var client = factory.CreateClient();
        cursor.Script("acme/retry", FakeCursor.Status(503));
        await client.PostJsonAsync(Route, Payloads.Run(703, ["acme/retry"]));
        await client.PostJsonAsync(Route, Payloads.Run(704, ["acme/watched"]));
        await factory.RunScheduleAsync();
        Assert.Equal("retry_scheduled", (await Read(client, 703))["launches"]![0]!["phase"]!.GetValue<string>());
        Assert.Equal("pending", ((JsonObject)(await Read(client, 704))["coding_agents"]!).Single().Value!["status"]!.GetValue<string>());

        time.Advance(Retention * 3);
        await Sweeper(factory).SweepAsync(CancellationToken.None);

        Assert.NotNull((await factory.Store.LoadAsync(703, CancellationToken.None)).State);
        Assert.NotNull((await factory.Store.LoadAsync(704, CancellationToken.None)).State);
    }

    [Fact]
    public async Task A_run_saved_after_the_sweep_read_it_is_not_deleted()
    {
        // The store's own steps, with no background sweep (retention unset) to take the run first.
        using var factory = Start(retention: null);
        using var client = factory.CreateClient();
        await SettleAsync(factory, client, 705);
        time.Advance(Retention + TimeSpan.FromMinutes(1));
        var candidate = Assert.Single(factory.Store.ListSweepCandidates(time.GetUtcNow() - Retention, (long.MinValue, long.MinValue), 10));

        // A turn (here or in another process) saves the run between the sweep's read and its delete.
        var stored = await factory.Store.LoadAsync(705, CancellationToken.None);
        await factory.Store.SaveAsync(stored.State!, stored.Version, CancellationToken.None);
        var deleted = await factory.Store.DeleteSettledAsync([candidate], time.GetUtcNow(), CancellationToken.None);

        Assert.Equal(0, deleted);
        Assert.NotNull((await factory.Store.LoadAsync(705, CancellationToken.None)).State);
        Assert.Null((await factory.Store.LoadAsync(705, CancellationToken.None)).Deleted);
    }

    [Fact]
    public async Task Without_a_retention_nothing_is_ever_swept()
    {
        using var factory = Start(retention: null);
        using var client = factory.CreateClient();
        await SettleAsync(factory, client, 706);
        time.Advance(TimeSpan.FromDays(4000));

        Assert.Equal(0, await Sweeper(factory).SweepAsync(CancellationToken.None));
        Assert.NotNull((await factory.Store.LoadAsync(706, CancellationToken.None)).State);
    }

    [Fact]
    public async Task A_tombstone_is_dropped_after_its_lifetime()
    {
        using var factory = Start();
        using var client = factory.CreateClient();
        await SettleAndSweepAsync(factory, client, 707);
        Assert.NotNull((await factory.Store.LoadAsync(707, CancellationToken.None)).Deleted);

        // Kept by every sweep until then: a redelivery within the 30 days still meets it.
        time.Advance(RunRetention.TombstoneLifetime - TimeSpan.FromMinutes(1));
        await Sweeper(factory).SweepAsync(CancellationToken.None);
        Assert.NotNull((await factory.Store.LoadAsync(707, CancellationToken.None)).Deleted);

        time.Advance(TimeSpan.FromMinutes(2));
        await Sweeper(factory).SweepAsync(CancellationToken.None);

        Assert.Null((await factory.Store.LoadAsync(707, CancellationToken.None)).Deleted);
        // Said at information, as a sweep that deleted runs is, though it deleted none.
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Name == "RunsSweptByRetention" && record.GetStructuredStateValue("TombstonesDropped") == "1");
    }

    /// <summary>
    /// A sweep reads and deletes in batches of <see cref="RetentionSweeper.BatchSize"/>, and goes on until none is left:
    /// more due runs than a batch all go in one sweep, not one batch every <see cref="RetentionSweeper.Interval"/>.
    /// </summary>
    [Fact]
    public async Task One_sweep_deletes_every_due_run_not_only_its_first_batch()
    {
        // The sweeper is built here, over the service's store and locks: the service's own (retention unset) never sweeps,
        // so the count this sweep returns is every run deleted.
        using var factory = Start(retention: null);
        _ = factory.CreateClient();
        var due = RetentionSweeper.BatchSize + 20;
        for (var runId = 1000L; runId < 1000 + due; runId++)
        {
            await factory.Store.SaveAsync(RunHandoffState.New(runId), 0, CancellationToken.None);
        }

        time.Advance(Retention + TimeSpan.FromMinutes(1));
        var sweeper = new RetentionSweeper(
            factory.Store,
            factory.Services.GetRequiredService<HandoffDapr.Service.Hosting.RunLocks>(),
            Microsoft.Extensions.Options.Options.Create(new HandoffDapr.Service.Configuration.HandoffOptions { RunRetention = Retention }),
            time,
            Microsoft.Extensions.Logging.Abstractions.NullLogger<RetentionSweeper>.Instance);

        Assert.Equal(due, await sweeper.SweepAsync(CancellationToken.None));
        Assert.NotNull((await factory.Store.LoadAsync(1000, CancellationToken.None)).Deleted);
        Assert.NotNull((await factory.Store.LoadAsync(1000 + due - 1, CancellationToken.None)).Deleted);
    }

    [Fact]
    public async Task Tombstones_left_when_retention_is_turned_off_are_still_dropped_after_their_lifetime()
    {
        var path = temp.File("turned-off.db");
        JsonObject run;
        using (var before = Start(path))
        {
            using var beforeClient = before.CreateClient();
            run = await SettleAsync(before, beforeClient, 708);
            time.Advance(Retention + TimeSpan.FromMinutes(1));
            await Sweeper(before).SweepAsync(CancellationToken.None);
            Assert.NotNull((await before.Store.LoadAsync(708, CancellationToken.None)).Deleted);
        }

        // Restarted with the setting unset: no run is deleted any more, but the tombstones already there still go after
        // their 30 days (docs/runbook.md), and the run's id is then taken as a new run's, as in Dapr mode.
        using var after = Start(path, retention: null);
        using var afterClient = after.CreateClient();
        time.Advance(RunRetention.TombstoneLifetime + TimeSpan.FromMinutes(1));
        await Sweeper(after).SweepAsync(CancellationToken.None);

        Assert.Null((await after.Store.LoadAsync(708, CancellationToken.None)).Deleted);
        Assert.Equal(HttpStatusCode.OK, (await afterClient.PostJsonAsync(Route, run)).StatusCode);
        Assert.NotNull((await after.Store.LoadAsync(708, CancellationToken.None)).State);
    }

    /// <summary>
    /// With the setting turned off, the service's own background work still drops the tombstones left on the file after
    /// their lifetime, nobody asking for a sweep: the loop runs while the file holds any, not only while retention is set.
    /// </summary>
    [Fact]
    public async Task Tombstones_left_when_retention_is_turned_off_are_dropped_without_being_asked()
    {
        var path = temp.File("turned-off-background.db");
        using (var before = Start(path))
        {
            using var beforeClient = before.CreateClient();
            await SettleAsync(before, beforeClient, 721);
            time.Advance(Retention + TimeSpan.FromMinutes(1));
            await Sweeper(before).SweepAsync(CancellationToken.None);
            Assert.NotNull((await before.Store.LoadAsync(721, CancellationToken.None)).Deleted);
        }

        using var after = Start(path, retention: null);
        _ = after.CreateClient();
        time.Advance(RunRetention.TombstoneLifetime);
        // The sweeper may not be waiting on the clock yet: moved on an interval at a time until the tombstone is gone.
        await Eventually.True(async () =>
        {
            if ((await after.Store.LoadAsync(721, CancellationToken.None)).Deleted is null)
            {
                return true;
            }

            time.Advance(RetentionSweeper.Interval);
            return false;
        });
    }

    [Fact]
    public async Task A_followup_at_the_provider_while_the_sweep_comes_keeps_its_run_and_is_recorded()
    {
        using var factory = Start();
        using var client = factory.CreateClient();
        await SettleAsync(factory, client, 709);
        var agentId = ((JsonObject)(await Read(client, 709))["coding_agents"]!).Single().Key;
        time.Advance(Retention - TimeSpan.FromMinutes(1));
        await Sweeper(factory).SweepAsync(CancellationToken.None);

        // A person's follow-up reaches the provider (the run's lock is free meanwhile); the run becomes due and a sweep
        // comes before the provider answers.
        using var held = cursor.HoldCommands();
        var followup = client.PostJsonAsync($"/runs/709/agents/{agentId}/followup", new JsonObject { ["text"] = "Add a test" });
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        time.Advance(TimeSpan.FromMinutes(2));
        await Sweeper(factory).SweepAsync(CancellationToken.None);
        held.Release();
        var answer = await followup;

        // The provider took it: the caller is told so, and the run is kept with the follow-up recorded.
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        var kept = (await factory.Store.LoadAsync(709, CancellationToken.None)).State;
        Assert.NotNull(kept);
        Assert.Contains(kept.Timeline, entry => entry.Event == TimelineEvents.FollowupSent && entry.AgentId == agentId);
    }

    /// <summary>
    /// The sweep is the service's own background work, every <see cref="RetentionSweeper.Interval"/> on its clock: with
    /// the retention set and nobody asking for a sweep, a settled run past it is still deleted.
    /// </summary>
    [Fact]
    public async Task A_settled_run_past_the_retention_is_swept_without_being_asked()
    {
        using var factory = Start();
        using var client = factory.CreateClient();
        await SettleAsync(factory, client, 720);

        time.Advance(Retention);
        // The sweeper may not be waiting on the clock yet: moved on an interval at a time until it has swept.
        await Eventually.True(async () =>
        {
            if ((await factory.Store.LoadAsync(720, CancellationToken.None)).State is null)
            {
                return true;
            }

            time.Advance(RetentionSweeper.Interval);
            return false;
        });

        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/runs/720/handoff?group_id=456")).StatusCode);
    }

    /// <summary>
    /// A run this process holds (a turn loading, deciding and saving it) is passed over by the sweep, and goes in a later
    /// one once let go: deleted under the turn, the turn's save would meet the tombstone and what it decided be lost.
    /// </summary>
    [Fact]
    public async Task A_run_held_by_a_turn_is_passed_over_by_the_sweep_and_swept_once_let_go()
    {
        using var factory = Start();
        using var client = factory.CreateClient();
        await SettleAsync(factory, client, 710);

        // Taken before the clock passes the retention, so the service's own sweep cannot come first.
        using (await factory.Services.GetRequiredService<HandoffDapr.Service.Hosting.RunLocks>().AcquireAsync(710, CancellationToken.None))
        {
            time.Advance(Retention + TimeSpan.FromMinutes(1));
            await Sweeper(factory).SweepAsync(CancellationToken.None);
            Assert.NotNull((await factory.Store.LoadAsync(710, CancellationToken.None)).State);
        }

        await Sweeper(factory).SweepAsync(CancellationToken.None);

        Assert.NotNull((await factory.Store.LoadAsync(710, CancellationToken.None)).Deleted);
    }

    /// <summary>Settles the run, then lets a sweep a minute past the retention delete it.</summary>
    private async Task<JsonObject> SettleAndSweepAsync(EmbeddedServiceFactory factory, HttpClient client, long runId)
    {
        var run = await SettleAsync(factory, client, runId);
        time.Advance(Retention + TimeSpan.FromMinutes(1));
        await Sweeper(factory).SweepAsync(CancellationToken.None);
        return run;
    }

    /// <summary>A completion event handed off, its agent launched and then seen finished by the poll: nothing pending.</summary>
    private async Task<JsonObject> SettleAsync(EmbeddedServiceFactory factory, HttpClient client, long runId)
    {
        var run = Payloads.Run(runId, ["acme/shop"]);
        await client.PostJsonAsync(Route, run);
        await factory.RunScheduleAsync();
        var agentId = ((JsonObject)(await Read(client, runId))["coding_agents"]!).Single().Key;
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/9");
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.RunScheduleAsync();
        Assert.Equal("completed", (await Read(client, runId))["coding_agents"]![agentId]!["status"]!.GetValue<string>());
        Assert.Null(await factory.Store.GetWakeupAsync(runId, CancellationToken.None));
        return run;
    }

    private static async Task<JsonObject> Read(HttpClient client, long runId) => await (await client.GetAsync($"/runs/{runId}/handoff")).ReadJsonAsync();

    /// <summary>
    /// The runbook's RetentionSweepFailed: a sweep the store refuses (a full disk, say; here a trigger refusing every
    /// delete) is a warning with the store's reason, and the run due for deletion is kept; the next sweep, 10 minutes on,
    /// deletes it once the store takes it. No test had made the background sweep fail.
    /// </summary>
    [Fact]
    public async Task A_sweep_the_store_refuses_is_a_warning_with_its_reason_and_the_due_run_is_kept_for_the_next_sweep()
    {
        using var factory = Start();
        using var client = factory.CreateClient();
        await SettleAsync(factory, client, 730);
        DataFileSql.Execute(factory.DataPath, "CREATE TRIGGER refuse_sweep BEFORE DELETE ON runs BEGIN SELECT RAISE(ABORT, 'injected: disk full 5e1d'); END;");

        // The background sweep comes every 10 minutes (fake time): advanced until it has run into the refusal.
        await Eventually.True(() =>
        {
            time.Advance(RetentionSweeper.Interval);
            return logs.GetSnapshot().Any(record => record.Id.Name == "RetentionSweepFailed");
        });

        var failed = logs.GetSnapshot().First(record => record.Id.Name == "RetentionSweepFailed");
        Assert.Equal(LogLevel.Warning, failed.Level);
        Assert.Contains("5e1d", failed.Exception!.ToString(), StringComparison.Ordinal);
        Assert.True(time.GetUtcNow() - new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero) > Retention);
        Assert.NotNull((await factory.Store.LoadAsync(730, CancellationToken.None)).State);

        DataFileSql.Execute(factory.DataPath, "DROP TRIGGER refuse_sweep;");
        await Eventually.True(async () =>
        {
            time.Advance(RetentionSweeper.Interval);
            return (await factory.Store.LoadAsync(730, CancellationToken.None)).Deleted is not null;
        });
    }


    private static RetentionSweeper Sweeper(EmbeddedServiceFactory factory) => factory.Services.GetRequiredService<RetentionSweeper>();

    /// <param name="retention">The setting as written; null leaves it unset.</param>
    /// <remarks>The sweeper logs at debug too here (appsettings.json stops at information), to see a sweep that found nothing.</remarks>
    private EmbeddedServiceFactory Start(string? path = null, string? retention = "1.00:00:00") =>
        new(path ?? temp.File("handoff.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:RunRetention"] = retention,
            [$"Logging:LogLevel:{typeof(RetentionSweeper).FullName}"] = "Debug",
        })
        { Logs = logs };

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
