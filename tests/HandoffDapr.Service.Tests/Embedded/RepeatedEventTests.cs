using System.Net;
using System.Text.Json;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Embedded mode answers a completion event whose exact bytes it already handled, where handling them again would
/// change nothing, without reading the run (the "CompletionEventRepeated" line says it went that way). Anything else
/// (other bytes, a snapshot replaced since, another process) goes the long way, and nothing is launched twice either way.
/// </summary>
public sealed class RepeatedEventTests : IDisposable
{
    private const string Route = "/events/autofix-run-completed";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeLogCollector logs = new();

    [Fact]
    public async Task A_redelivery_of_the_same_bytes_is_answered_from_the_digest_and_launches_nothing()
    {
        using var factory = Start("handoff.db");
        using var client = factory.CreateClient();
        var run = Payloads.Run(300, ["acme/shop", "acme/api"]);

        await client.PostJsonAsync(Route, run);
        await factory.RunScheduleAsync();
        var redelivered = await client.PostJsonAsync(Route, run);
        // daprd's envelope around the same data bytes, with an id and trace of its own.
        var asCloudEvent = await client.PostJsonAsync(Route, Payloads.CloudEvent(run), "application/cloudevents+json");
        await factory.RunScheduleAsync();

        foreach (var answer in new[] { redelivered, asCloudEvent })
        {
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
            Assert.Equal("SUCCESS", (await answer.ReadJsonAsync())["status"]!.GetValue<string>());
        }

        Assert.Equal([300L, 300L], Repeated());
        Assert.Equal(2, cursor.LaunchRequests);
    }

    [Fact]
    public async Task The_same_snapshot_in_other_bytes_goes_the_long_way_and_launches_nothing()
    {
        using var factory = Start("handoff.db");
        using var client = factory.CreateClient();
        var run = Payloads.Run(301, ["acme/shop"]);
        await client.PostJsonAsync(Route, run);
        await factory.RunScheduleAsync();

        var answer = await client.PostRawAsync(Route, run.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Empty(Repeated());
        Assert.Equal(1, cursor.LaunchRequests);
    }

    /// <summary>
    /// An event naming an integration that is not configured keeps its snapshot and is warned of at every delivery: the
    /// same bytes again would not change nothing, so the save writes no digest and they go the long way. Written with
    /// one, the redelivery would be answered from it, without the warning or the reason it is not handed off.
    /// </summary>
    [Fact]
    public async Task A_redelivery_of_an_event_whose_integration_is_not_configured_goes_the_long_way_and_warns_again()
    {
        using var factory = Start("handoff.db");
        using var client = factory.CreateClient();
        var run = Payloads.Run(312, ["acme/shop"]);
        run["preferences"]!["automation_handoff"]!["integration_id"] = 77;

        await client.PostJsonAsync(Route, run);
        var redelivered = await client.PostJsonAsync(Route, run);

        Assert.Equal(HttpStatusCode.OK, redelivered.StatusCode);
        Assert.Empty(Repeated());
        Assert.Equal(2, logs.GetSnapshot().Count(record => record.Id.Name == "HandoffUnknownIntegration"));
        Assert.Equal(0, cursor.LaunchRequests);
    }

    /// <summary>
    /// A redelivery lookup the file refuses (here its runs table is gone) is no answer of its own: the event goes the
    /// long way, which meets the same trouble and answers 503 for it. Let through, the lookup's error was a 500.
    /// </summary>
    [Fact]
    public async Task A_redelivery_lookup_the_file_refuses_is_answered_503_by_the_long_way()
    {
        using var factory = Start("handoff.db");
        using var client = factory.CreateClient();
        using (var connection = new SqliteConnection($"Data Source={factory.DataPath};Pooling=False"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "ALTER TABLE runs RENAME TO runs_moved";
            command.ExecuteNonQuery();
        }

        var answer = await client.PostJsonAsync(Route, Payloads.Run(313, ["acme/shop"]));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, answer.StatusCode);
        Assert.Equal(0, cursor.LaunchRequests);
    }

    [Fact]
    public async Task An_event_whose_snapshot_was_replaced_since_is_not_taken_for_a_repeat()
    {
        using var factory = Start("handoff.db");
        using var client = factory.CreateClient();
        var rootCause = Payloads.Run(302, ["acme/shop"]);
        var solution = Payloads.Run(302, ["acme/shop"], withSolution: true);
        await client.PostJsonAsync(Route, rootCause);
        await factory.RunScheduleAsync();
        await client.PostJsonAsync(Route, solution);

        await client.PostJsonAsync(Route, rootCause); // the run now holds the solution's snapshot: the long way
        Assert.Empty(Repeated());
        await client.PostJsonAsync(Route, solution);
        await factory.RunScheduleAsync();

        Assert.Equal([302L], Repeated());
        Assert.Equal(1, cursor.LaunchRequests);
        var stored = (await factory.Store.LoadAsync(302, CancellationToken.None)).State!;
        Assert.NotNull(stored.Snapshot!.Artifacts!.Solution); // what the run knows by now is kept
    }

    /// <summary>
    /// A person's trigger carrying the run as it is now replaces the snapshot the event's digest was written for: the
    /// digest goes with it, as it does when another event replaces it, and the old event's bytes again are judged on what
    /// the run holds now. Kept, they would be answered from a digest whose snapshot the run no longer has.
    /// </summary>
    [Fact]
    public async Task An_event_whose_snapshot_a_persons_trigger_replaced_since_is_not_taken_for_a_repeat()
    {
        using var factory = Start("handoff.db");
        using var client = factory.CreateClient();
        var old = Payloads.Run(305, ["acme/shop"]);
        await client.PostJsonAsync(Route, old);
        await factory.RunScheduleAsync();
        var trigger = await client.PostJsonAsync("/runs/305/handoff", Payloads.Trigger(Payloads.Run(305, ["acme/shop", "acme/api"])));
        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);

        var redelivered = await client.PostJsonAsync(Route, old); // the run now holds the trigger's snapshot: the long way
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, redelivered.StatusCode);
        Assert.Empty(Repeated());
        Assert.Equal(2, cursor.LaunchRequests);
        var stored = (await factory.Store.LoadAsync(305, CancellationToken.None)).State!;
        Assert.Equal(2, stored.Snapshot!.Preferences!.Repositories!.Count); // the trigger's snapshot is kept
    }

    [Fact]
    public async Task A_late_root_cause_event_is_remembered_as_handled_only_by_the_snapshot_the_run_keeps()
    {
        using var factory = Start("handoff.db");
        using var client = factory.CreateClient();
        var rootCause = Payloads.Run(304, ["acme/shop"]);
        var solution = Payloads.Run(304, ["acme/shop"], withSolution: true);
        await client.PostJsonAsync(Route, solution);
        await client.PostJsonAsync(Route, rootCause); // hands off, with the solution's snapshot kept
        await factory.RunScheduleAsync();

        await client.PostJsonAsync(Route, rootCause);
        Assert.Empty(Repeated());
        await client.PostJsonAsync(Route, solution);
        await factory.RunScheduleAsync();

        Assert.Equal([304L], Repeated());
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task After_a_restart_a_redelivery_goes_the_long_way_and_launches_nothing()
    {
        var path = temp.File("restart.db");
        var run = Payloads.Run(303, ["acme/shop"]);
        using (var before = Start(path))
        {
            using var client = before.CreateClient();
            await client.PostJsonAsync(Route, run);
            await before.RunScheduleAsync();
        }

        // The digest was this process's judgement, under its settings; the next process judges for itself.
        using var after = Start(path);
        using var again = after.CreateClient();
        var answer = await again.PostJsonAsync(Route, run);
        await after.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Empty(Repeated());
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task A_late_redelivery_of_an_event_the_run_has_moved_past_keeps_the_newer_snapshot_across_a_restart()
    {
        var path = temp.File("reordered.db");
        var first = Payloads.Run(320, ["acme/shop"], automation: false);
        var newer = Payloads.Run(320, ["acme/shop", "acme/web"], automation: false);
        using (var before = Start(path))
        {
            using var client = before.CreateClient();
            await client.PostJsonAsync(Route, first);
            await client.PostJsonAsync(Route, newer);
        }

        using var after = Start(path);
        using var again = after.CreateClient();
        var redelivered = await again.PostJsonAsync(Route, first);
        // A person's trigger without a run hands off the snapshot the run kept: the newer event's two repositories.
        var trigger = await again.PostJsonAsync("/runs/320/handoff", Payloads.Trigger());
        await after.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, redelivered.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        Assert.Equal(2, cursor.LaunchRequests);
    }

    [Fact]
    public async Task A_save_by_an_earlier_release_on_the_same_file_retires_the_digest()
    {
        using var factory = Start("rolling.db");
        using var client = factory.CreateClient();
        var rootCause = Payloads.Run(310, ["acme/shop"]);
        await client.PostJsonAsync(Route, rootCause);
        await factory.RunScheduleAsync();

        // A process of the release before digests, sharing the file during a hand-over (docs/runbook.md), stores the
        // run's solution snapshot, naming a second repository, with its own UPDATE: it knows nothing of the digest.
        var loaded = await factory.Store.LoadAsync(310, CancellationToken.None);
        var solution = JsonSerializer.Deserialize(Payloads.Run(310, ["acme/shop", "acme/api"], withSolution: true).ToJsonString(), HandoffJsonContext.Default.RunSnapshot)!;
        await EarlierRelease.SaveAsync(factory.DataPath, loaded.State! with { Snapshot = solution }, loaded.Version);
        // This process sees another's write at its writer's next look at the file (within 100 ms): until then it answers
        // the redelivery from what it saved itself (Handoff:Embedded:RememberedEvents).
        await Eventually.True(() => factory.Store.RememberedEvents == 0);

        // The root cause's event again: the long way hands off with the kept (solution) snapshot and launches acme/api.
        var answer = await client.PostJsonAsync(Route, rootCause);
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Empty(Repeated());
        Assert.Equal(2, cursor.LaunchRequests);
    }

    [Fact]
    public async Task A_digest_retired_by_an_earlier_release_is_not_brought_back_by_the_next_save()
    {
        using var factory = Start("rolling-then-saved.db");
        using var client = factory.CreateClient();
        var run = Payloads.Run(311, ["acme/shop"]);
        await client.PostJsonAsync(Route, run);
        await factory.RunScheduleAsync();
        var loaded = await factory.Store.LoadAsync(311, CancellationToken.None);
        await EarlierRelease.SaveAsync(factory.DataPath, loaded.State! with { Timeline = [] }, loaded.Version);

        // A save of this release that keeps the snapshot: a person stops the agent.
        var agentId = Assert.Single(cursor.Agents.Keys);
        Assert.True((await client.PostAsync($"/runs/311/agents/{agentId}/stop", null)).IsSuccessStatusCode);
        await client.PostJsonAsync(Route, run);

        Assert.Empty(Repeated());
        Assert.Equal(1, cursor.LaunchRequests);
    }

    private EmbeddedServiceFactory Start(string file) => new(
        Path.IsPathRooted(file) ? file : temp.File(file), cursor.Url, settings: new Dictionary<string, string?> { ["Logging:LogLevel:Default"] = "Debug" })
    {
        Logs = logs,
    };

    private List<long> Repeated() => logs.GetSnapshot()
        .Where(record => record.Id.Name == "CompletionEventRepeated")
        .Select(record => long.Parse(record.GetStructuredStateValue("RunId")!))
        .ToList();

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
