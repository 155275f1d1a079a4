using System.Net;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Rows the service did not write as they are (a file edited by hand, or damaged): a wake-up whose run has no row, a run
/// whose state cannot be read. Each costs its own run at most, never the schedule or the other runs.
/// </summary>
public sealed class DamagedRowTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task Wake_up_whose_run_has_no_row_is_deleted_when_claimed()
    {
        var path = CreateFile("orphan.db", "INSERT INTO wakeups (run_id, due_at) VALUES (999, 0);");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url);
        factory.CreateClient(); // the schedule's first pass, at start, claims what is overdue

        // Before: released due, the wake-up was claimed again at once, forever (RunDueAsync never returned).
        await factory.RunScheduleAsync().WaitAsync(TimeSpan.FromSeconds(10));
        await Eventually.True(async () => await factory.Store.GetWakeupAsync(999, CancellationToken.None) is null);
    }

    [Fact]
    public async Task Wake_ups_whose_runs_have_no_row_do_not_hold_up_a_real_runs_launch()
    {
        // Due before anything the service saves: the schedule claims these first.
        var path = CreateFile("starved.db", """
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
            INSERT INTO wakeups (run_id, due_at) SELECT 100000 + i, i FROM n;
            """);
        using var factory = new EmbeddedServiceFactory(path, cursor.Url) { WakeOnSignal = true };
        var client = factory.CreateClient();

        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(77, ["acme/shop"]))).StatusCode);

        await Eventually.True(() => cursor.LaunchRequests == 1);
        Assert.Equal(0L, Scalar(path, "SELECT count(*) FROM wakeups WHERE run_id > 100000"));
    }

    [Theory]
    [InlineData("""{"run_id": 2, garbage""")]
    [InlineData("null")]
    [InlineData("{}")]
    [InlineData("""{"run_id": 2}""")]
    [InlineData("""{"run_id": 2, "coding_agents": {}, "launches": [{"repository": "acme/b"}], "timeline": []}""")]
    public async Task Run_whose_state_cannot_be_read_is_left_out_of_the_list_and_answered_503_without_starting_it_over(string state)
    {
        var logs = new FakeLogCollector();
        var path = temp.File("unreadable.db");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url) { Logs = logs };
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger(Payloads.Run(1, ["acme/a"], automation: false)))).StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/2/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/b"], automation: false)))).StatusCode);
        DataFileSql.Execute(path, "UPDATE runs SET state = $state, view = NULL WHERE run_id = 2", state);

        var list = await client.GetAsync("/runs");
        Assert.Equal(HttpStatusCode.OK, list.StatusCode);
        var listed = (await list.ReadJsonArrayAsync()).Select(run => run!["run_id"]!.GetValue<long>());
        Assert.Equal([1L], listed);
        Assert.Contains(logs.GetSnapshot(), entry => entry.Id.Name == "UnreadableRunListed" && entry.Message.Contains("Run 2"));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/runs/2/handoff")).StatusCode);
        var again = await client.PostJsonAsync("/runs/2/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/b"], automation: false)));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, again.StatusCode);
        Assert.DoesNotContain("garbage", await again.Content.ReadAsStringAsync());
        Assert.Equal(1, cursor.AgentsFor("acme/b"));
        Assert.Equal(state, StoredState(path, 2));

        // Seen corrupting a row by hand as the runbook's "Damaged run state" describes: the 503 said "could not be
        // reached. Try again shortly." (retrying changes nothing) and the log had "its owner could not be reached"
        // with a stack trace. The detail now says what the runbook says; the log says why, on one line.
        var detail = (await again.ReadJsonAsync())["detail"]!.GetValue<string>();
        Assert.DoesNotContain("Try again", detail, StringComparison.Ordinal);
        Assert.Contains("restores or deletes", detail, StringComparison.Ordinal);
        // A completion event gets the same answer; embedded mode has no redelivery to request, so its log says the 503.
        var completionEvent = await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(2, ["acme/b"], automation: false));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, completionEvent.StatusCode);
        Assert.Equal(detail, (await completionEvent.ReadJsonAsync())["detail"]!.GetValue<string>());
        var retry = Assert.Single(logs.GetSnapshot(), entry => entry.Id.Name == "CompletionEventRetry");
        Assert.StartsWith("Completion event for run 2 could not be processed now: its stored state cannot be used (", retry.Message, StringComparison.Ordinal);
        Assert.EndsWith("; answered 503", retry.Message, StringComparison.Ordinal);
        Assert.Null(retry.Exception);
        var refusals = logs.GetSnapshot().Where(entry => entry.Id.Name == "RunOwnerUnavailable").ToList();
        Assert.Equal(2, refusals.Count);
        Assert.All(refusals, entry =>
        {
            Assert.Null(entry.Exception);
            Assert.Contains("Run 2: its stored state cannot be used (", entry.Message, StringComparison.Ordinal);
        });
    }

    /// <summary>
    /// The runbook: a damaged run's triggers, events and webhooks answer 503 "and the log says why". A webhook's 503 (which
    /// Cursor keeps delivering) and a stop's or follow-up's used to be written to no log at all.
    /// </summary>
    [Fact]
    public async Task Webhook_stop_and_followup_of_a_run_whose_state_cannot_be_read_answer_503_and_log_why()
    {
        const string secret = "a-webhook-secret-of-at-least-32-characters";
        var logs = new FakeLogCollector();
        var path = temp.File("unreadable-commands.db");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
            ["Handoff:Integrations:42:WebhookSecret"] = secret,
        }) { Logs = logs };
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/2/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/b"], automation: false)))).StatusCode);
        DataFileSql.Execute(path, "UPDATE runs SET state = $state, view = NULL WHERE run_id = 2", "{}");

        var body = """{"event": "statusChange", "id": "bc-1", "status": "FINISHED", "source": {"repository": "https://github.com/acme/b"}}""";
        using var webhook = Payloads.SignedWebhook("/webhooks/cursor/42?run_id=2", body, secret);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.SendAsync(webhook)).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.PostAsync("/runs/2/agents/bc-1/stop", null)).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.PostJsonAsync("/runs/2/agents/bc-1/followup", new System.Text.Json.Nodes.JsonObject { ["text"] = "and a test" })).StatusCode);

        Assert.Equal(3, logs.GetSnapshot().Count(entry => entry.Id.Name == "RunOwnerUnavailable" && entry.Message.Contains("Run 2")));
    }

    /// <summary>
    /// An agent id of a shape no provider gives is answered from the request alone: 404, as for an agent the run lacks,
    /// without the run being read (a 503 here would send the caller to retry a request that can never succeed).
    /// </summary>
    [Fact]
    public async Task Stop_and_followup_of_an_agent_id_of_no_providers_shape_are_404_without_reading_the_run()
    {
        var path = temp.File("unreadable-agent-id.db");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url);
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/2/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/b"], automation: false)))).StatusCode);
        DataFileSql.Execute(path, "UPDATE runs SET state = $state, view = NULL WHERE run_id = 2", "{}");

        var stop = await client.PostAsync($"/runs/2/agents/{new string('a', 129)}/stop", null);
        var followup = await client.PostJsonAsync("/runs/2/agents/bc%201/followup", new System.Text.Json.Nodes.JsonObject { ["text"] = "and a test" });

        Assert.All(new[] { stop, followup }, response => Assert.Equal(HttpStatusCode.NotFound, response.StatusCode));
        Assert.EndsWith("/unknown-agent", (await stop.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.EndsWith("/unknown-agent", (await followup.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    [Fact]
    public async Task Row_holding_another_runs_state_is_refused_not_written_through_to_that_run()
    {
        var path = temp.File("swapped.db");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url);
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger(Payloads.Run(1, ["acme/a"], automation: false)))).StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/2/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/b"], automation: false)))).StatusCode);
        DataFileSql.Execute(path, "UPDATE runs SET state = (SELECT state FROM runs WHERE run_id = 1), view = NULL WHERE run_id = 2");
        var runOne = StoredState(path, 1);

        var again = await client.PostJsonAsync("/runs/2/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/b", "acme/c"], automation: false)));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, again.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/runs/2/handoff")).StatusCode);
        Assert.Equal([1L], (await (await client.GetAsync("/runs")).ReadJsonArrayAsync()).Select(run => run!["run_id"]!.GetValue<long>()));
        Assert.Equal(runOne, StoredState(path, 1));
        Assert.Equal(2, cursor.LaunchRequests);
    }

    [Theory]
    [InlineData("""{"run_id": 5, oops""")]
    [InlineData("null")]
    [InlineData("{}")]
    public async Task Due_wake_up_of_a_run_whose_state_cannot_be_read_is_claimed_once_per_lease_and_kept(string state)
    {
        var path = CreateFile("unreadable-due.db", "INSERT INTO runs (run_id, version, state, updated_at) VALUES (5, 1, $state, 0); INSERT INTO wakeups (run_id, due_at) VALUES (5, 0);", state);
        var logs = new FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(path, cursor.Url) { Logs = logs };
        factory.CreateClient(); // the schedule's first pass, at start, claims what is overdue
        await Eventually.True(() => WakeFailures(logs) == 1);

        // Before, for JSON null: taken for "no run", released due, and claimed again at once, forever.
        Assert.Equal(0, await factory.RunScheduleAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(1, WakeFailures(logs));
        Assert.NotNull(await factory.Store.GetWakeupAsync(5, CancellationToken.None));
        Assert.Equal(state, StoredState(path, 5));
    }

    /// <summary>
    /// The recent-runs list out of reach answered 503 "The run's state could not be reached", of one run, to a request
    /// that named none (seen with the runs table renamed away): the detail now speaks of the list.
    /// </summary>
    [Fact]
    public async Task Recent_runs_list_that_cannot_be_read_is_a_503_about_the_list()
    {
        var logs = new FakeLogCollector();
        var path = temp.File("unlisted.db");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url) { Logs = logs };
        var client = factory.CreateClient();
        DataFileSql.Execute(path, "ALTER TABLE runs RENAME TO runs_elsewhere");

        var response = await client.GetAsync("/runs");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("The list of recent runs could not be read. Try again shortly.", (await response.ReadJsonAsync())["detail"]!.GetValue<string>());
        Assert.Contains(logs.GetSnapshot(), entry => entry.Id.Name == "RecentRunsUnavailable");
    }

    /// <summary>
    /// A store that cannot be read (seen with the runs table renamed away) is the service's trouble, for a while: a read of
    /// a run and a trigger are answered 503 "try again", never a 500, and the trigger reaches no provider.
    /// </summary>
    [Fact]
    public async Task Run_read_and_trigger_on_a_store_that_cannot_be_read_are_503s_not_500s()
    {
        var path = temp.File("unreadable-store.db");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url);
        var client = factory.CreateClient();
        DataFileSql.Execute(path, "ALTER TABLE runs RENAME TO runs_elsewhere");

        var read = await client.GetAsync("/runs/280/handoff");
        var trigger = await client.PostJsonAsync("/runs/280/handoff", Payloads.Trigger(Payloads.Run(280, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, read.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, trigger.StatusCode);
        Assert.Equal(0, cursor.LaunchRequests);
    }

    /// <summary>
    /// A run's read that fails in SQLite after the service has read runs before (its read sessions open, their queries
    /// prepared; here the runs table renamed away) is the store's trouble, never "no such run": a stop and a follow-up of
    /// the run's agent answer 503, not 404, and a trigger of it reaches no provider.
    /// </summary>
    [Fact]
    public async Task Stop_followup_and_trigger_of_a_run_whose_read_fails_in_sqlite_answer_503_not_no_such_run()
    {
        var path = temp.File("unreadable-later.db");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url);
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/2/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/b"], automation: false)))).StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
        DataFileSql.Execute(path, "ALTER TABLE runs RENAME TO runs_elsewhere");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.PostAsync("/runs/2/agents/bc-1/stop", null)).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.PostJsonAsync("/runs/2/agents/bc-1/followup", new System.Text.Json.Nodes.JsonObject { ["text"] = "and a test" })).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.PostJsonAsync("/runs/2/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/b", "acme/c"], automation: false)))).StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    /// <summary>
    /// The retention sweep deletes only runs it can read and finds settled: a row whose state cannot be read is left for
    /// an operator, however old, as a turn leaves it; deleted, what the run was doing could not be looked at any more.
    /// </summary>
    [Fact]
    public async Task Run_whose_state_cannot_be_read_is_never_deleted_by_the_retention_sweep()
    {
        const string state = """{"run_id": 6, oops""";
        var path = CreateFile("unreadable-old.db", "INSERT INTO runs (run_id, version, state, updated_at) VALUES (6, 1, $state, 0);", state);
        using var factory = new EmbeddedServiceFactory(path, cursor.Url, settings: Retained);
        factory.CreateClient();

        await factory.Services.GetRequiredService<RetentionSweeper>().SweepAsync(CancellationToken.None);

        Assert.Equal(state, StoredState(path, 6));
    }

    /// <summary>
    /// A run with a launch still to retry is never deleted by the retention sweep, however old, even with its wake-up row
    /// gone (the store reads as candidates the runs without one): the sweep asks the run itself whether it is settled.
    /// </summary>
    [Fact]
    public async Task Run_with_a_launch_to_retry_whose_wake_up_row_is_gone_is_never_deleted_by_the_retention_sweep()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
        var path = temp.File("retry-without-wake-up.db");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url, time, Retained);
        var client = factory.CreateClient();
        cursor.Script("acme/retry", FakeCursor.Status(503));
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(7, ["acme/retry"]));
        await factory.RunScheduleAsync();
        Assert.Equal(LaunchPhase.RetryScheduled, (await factory.Store.LoadAsync(7, CancellationToken.None)).State!.Launches.Single().Phase);
        DataFileSql.Execute(path, "DELETE FROM wakeups WHERE run_id = 7");

        time.Advance(TimeSpan.FromDays(3));
        await factory.Services.GetRequiredService<RetentionSweeper>().SweepAsync(CancellationToken.None);

        Assert.NotNull((await factory.Store.LoadAsync(7, CancellationToken.None)).State);
    }

    /// <summary>
    /// A full batch of old rows the sweep passes over (their state cannot be read) does not keep it from the runs after
    /// them: it reads on past them, and the due run behind them goes in the same sweep. Read again from the same place,
    /// the sweep found the same batch, forever.
    /// </summary>
    [Fact]
    public async Task Batch_of_old_rows_whose_state_cannot_be_read_does_not_keep_the_retention_sweep_from_the_runs_after_it()
    {
        var path = CreateFile("unreadable-batch.db", $"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {RetentionSweeper.BatchSize})
            INSERT INTO runs (run_id, version, state, updated_at) SELECT 200000 + i, 1, 'oops', i FROM n;
            """);
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
        using var factory = new EmbeddedServiceFactory(path, cursor.Url, time, Retained);
        factory.CreateClient();
        await factory.Store.SaveAsync(RunHandoffState.New(8), 0, CancellationToken.None);

        time.Advance(TimeSpan.FromDays(3));
        await factory.Services.GetRequiredService<RetentionSweeper>().SweepAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.NotNull((await factory.Store.LoadAsync(8, CancellationToken.None)).Deleted);
        Assert.Equal((long)RetentionSweeper.BatchSize, Scalar(path, "SELECT count(*) FROM runs WHERE run_id > 200000"));
    }

    private static readonly Dictionary<string, string?> Retained = new() { ["Handoff:RunRetention"] = "1.00:00:00" };

    private static int WakeFailures(FakeLogCollector logs) => logs.GetSnapshot().Count(entry => entry.Id.Name == "WakeFailed");

    private string CreateFile(string name, string sql, string? state = null)
    {
        var path = temp.File(name);
        new SqliteRunStore(path, TimeProvider.System).Dispose();
        DataFileSql.Execute(path, sql, state);
        return path;
    }


    private static object? Scalar(string path, string sql)
    {
        using var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return command.ExecuteScalar();
    }

    private static string StoredState(string path, long runId) => (string)Scalar(path, $"SELECT CAST(state AS TEXT) FROM runs WHERE run_id = {runId}")!;

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
