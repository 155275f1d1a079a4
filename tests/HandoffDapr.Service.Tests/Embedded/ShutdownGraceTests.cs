using System.Net;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Embedded mode at shutdown: provider calls under way keep a grace (Handoff:Embedded:ProviderCallGrace) to answer, and
/// what they answer is recorded; a call still unanswered when it ends is stopped and recorded as unknown, to reconcile.
/// </summary>
public sealed class ShutdownGraceTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 12, 2, 10, 0, 0, TimeSpan.Zero));

    /// <summary>
    /// A stop is not a failure: the lease renewals' wait, cancelled by shutdown, ends their loop quietly. Taken for a
    /// failure (hand mutation: their catch of shutdown's cancellation dropped passed every schedule and shutdown test),
    /// every stop logged SchedulerFailed, an error, and waited a second more.
    /// </summary>
    [Fact]
    public async Task Stopping_the_service_logs_no_failure_of_the_schedule()
    {
        var logs = new FakeLogCollector();
        var own = new EmbeddedServiceFactory(temp.File("quiet-stop.db"), cursor.Url, time) { Logs = logs };
        own.CreateClient().Dispose();

        await own.DisposeAsync();

        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "SchedulerFailed");
    }

    [Fact]
    public async Task Trigger_whose_launch_answers_soon_after_shutdown_begins_gets_its_agent()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("grace.db"), cursor.Url, time);
        using var client = factory.CreateClient();
        using var held = cursor.Hold("acme/slow");
        var trigger = client.PostJsonAsync("/runs/600/handoff", Payloads.Trigger(Payloads.Run(600, ["acme/slow"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(new EmbeddedOptions().ProviderCallGrace - TimeSpan.FromSeconds(1));
        held.Release();

        var response = await trigger;
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("acme/slow", (await response.ReadJsonAsync())["successes"]![0]!["repo_name"]!.GetValue<string>());
        var launch = Assert.Single((await Stored(factory, 600)).Launches);
        Assert.Equal(Core.Handoff.LaunchPhase.Launched, launch.Phase);
    }

    /// <summary>
    /// Its log line read "launch for acme/slow failed (provider_unavailable) after 1 attempt(s); retry at …", while the
    /// launch is stored outcome_unknown and looked for first: the line now says that, with the same time.
    /// </summary>
    [Fact]
    public async Task Scheduled_launch_still_unanswered_when_the_grace_ends_is_recorded_unknown_to_reconcile()
    {
        var logs = new FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(temp.File("cut.db"), cursor.Url, time) { Logs = logs };
        using var client = factory.CreateClient();
        using var held = cursor.Hold("acme/slow");
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(601, ["acme/slow"]));
        var schedule = factory.RunScheduleAsync();
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.NotSame(schedule, await Task.WhenAny(schedule, Task.Delay(TimeSpan.FromMilliseconds(300)))); // still within the grace
        time.Advance(new EmbeddedOptions().ProviderCallGrace);
        await schedule.WaitAsync(TimeSpan.FromSeconds(10));

        var launch = Assert.Single((await Stored(factory, 601)).Launches);
        Assert.Equal(Core.Handoff.LaunchPhase.OutcomeUnknown, launch.Phase);
        var line = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "HandoffOutcomeUnknown" && record.Message.Contains("Run 601", StringComparison.Ordinal));
        Assert.Equal(
            $"Run 601: launch for acme/slow has an unknown outcome ({launch.FailureType}) after {launch.Attempts} attempt(s): an agent it may have made is looked for at the provider before any new attempt, at {launch.NextAttemptAt:O}",
            line.Message);
    }

    /// <summary>
    /// The launch's last allowed attempt is at the provider when the grace ends. Before, the cut attempt ended the launch
    /// failed (retries_exhausted) with no lookup: the agent the provider then made was never followed, while a kill -9 at
    /// the same moment leaves the attempt to a lookup after restart (a launch taken over at MaxAttempts is only looked for).
    /// </summary>
    [Fact]
    public async Task Last_attempt_still_unanswered_when_the_grace_ends_is_looked_for_after_restart_not_failed()
    {
        var settings = new Dictionary<string, string?> { ["Handoff:Launch:MaxAttempts"] = "1" };
        var factory = new EmbeddedServiceFactory(temp.File("last.db"), cursor.Url, time, settings);
        var client = factory.CreateClient();
        var held = cursor.Hold("acme/slow");
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(604, ["acme/slow"]));
        var schedule = factory.RunScheduleAsync();
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(new EmbeddedOptions().ProviderCallGrace + TimeSpan.FromSeconds(1));
        await schedule.WaitAsync(TimeSpan.FromSeconds(10));
        var cut = Assert.Single((await Stored(factory, 604)).Launches);
        client.Dispose();
        await factory.DisposeAsync();
        // The provider makes the agent the cut request asked for.
        held.Dispose();
        await Eventually.True(() => cursor.AgentsFor("acme/slow") == 1);

        Assert.Equal(Core.Handoff.LaunchPhase.OutcomeUnknown, cut.Phase);
        time.Advance(TimeSpan.FromHours(1));
        using var restarted = new EmbeddedServiceFactory(factory.DataPath, cursor.Url, time, settings);
        using var again = restarted.CreateClient();
        // The restarted host's own scheduler claims the overdue lookup in its pass at start and makes it in the background.
        await Eventually.True(async () => !Assert.Single((await Stored(restarted, 604)).Launches).IsAwaitingWork);
        var launch = Assert.Single((await Stored(restarted, 604)).Launches);
        Assert.Equal(Core.Handoff.LaunchPhase.Launched, launch.Phase);
        Assert.True(cursor.Agents.ContainsKey(launch.AgentId!));
        Assert.Equal(1, cursor.LaunchRequests);
    }

    /// <summary>
    /// A trigger whose launch the grace cut answers 503 with its answers recorded. Its log line read "Run 605: its owner
    /// could not be reached", with the cancellation's stack, as if the store were out of reach, at every such shutdown.
    /// </summary>
    [Fact]
    public async Task Trigger_cut_by_the_grace_is_logged_as_shutdown_not_as_an_owner_out_of_reach()
    {
        var logged = await CutByTheGraceAsync("cut-trigger.db", 605, client =>
            client.PostJsonAsync("/runs/605/handoff", Payloads.Trigger(Payloads.Run(605, ["acme/slow"], automation: false))));

        var line = Assert.Single(logged, record => record.Id.Name == "RunOwnerUnavailable");
        Assert.Equal("Run 605: the service is shutting down", line.Message);
        Assert.Null(line.Exception);
    }

    /// <summary>
    /// The same for a completion event whose launches its request makes (embedded inline; always in Dapr mode): its line
    /// read "could not be processed now; answered 503" with the cancellation's stack, a warning with a stack trace at
    /// every deploy that cut one.
    /// </summary>
    [Fact]
    public async Task Inline_event_cut_by_the_grace_is_logged_as_shutdown_without_a_stack_trace()
    {
        var logged = await CutByTheGraceAsync(
            "cut-event.db",
            606,
            client => client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(606, ["acme/slow"])),
            new Dictionary<string, string?> { ["Handoff:Embedded:LaunchEventsInBackground"] = "false" });

        var line = Assert.Single(logged, record => record.Id.Name == "CompletionEventRetry");
        Assert.Equal("Completion event for run 606 could not be processed now: the service is shutting down; answered 503", line.Message);
        Assert.Equal("answered 503", line.GetStructuredStateValue("Answer"));
        Assert.Null(line.Exception);
    }

    [Fact]
    public async Task A_scheduled_launch_cut_by_the_grace_while_a_request_drains_is_not_logged_as_a_failed_wake_up()
    {
        var logs = new FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(temp.File("cut-log.db"), cursor.Url, time) { WakeOnSignal = true, Logs = logs };
        using var client = factory.CreateClient();
        using var held = cursor.Hold("acme/slow");
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(602, ["acme/slow"]));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        // A request still in progress at shutdown (waiting for its run here), so the drain keeps the schedule running.
        var drain = factory.Services.GetRequiredService<RequestDrain>();
        var runLock = await factory.Services.GetRequiredService<RunLocks>().AcquireAsync(603, CancellationToken.None);
        var request = client.PostJsonAsync("/runs/603/handoff", Payloads.Trigger(Payloads.Run(603, ["acme/shop"], automation: false)));
        await Eventually.True(() => drain.InFlight == 1);

        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        await Eventually.True(() => drain.IsDraining);
        time.Advance(new EmbeddedOptions().ProviderCallGrace + TimeSpan.FromSeconds(1)); // the grace is over, the drain's limit (grace + 5 s) not yet
        await Eventually.True(() => logs.GetSnapshot().Any(record => record.Id.Name == "HandoffOutcomeUnknown" && record.Message.Contains("Run 602")));
        // The wake-up ends right after recording: give it time to say how it ended.
        var settled = DateTime.UtcNow.AddSeconds(3);
        while (DateTime.UtcNow < settled && !logs.GetSnapshot().Any(record => record.Level >= LogLevel.Error))
        {
            await Task.Delay(20);
        }

        var errors = logs.GetSnapshot().Where(record => record.Level >= LogLevel.Error)
            .Select(record => $"{record.Id.Name}: {record.Message} ({record.Exception?.GetType().Name})").ToList();
        runLock.Dispose();
        await request;

        Assert.Empty(errors);
    }

    /// <summary>
    /// The host cancels what is left of its stop at its ShutdownTimeout: one at the provider calls' grace or under the
    /// drain's wait (the grace and the time to record what was answered) would stop the service before a call cut by the
    /// grace is recorded unknown, to reconcile.
    /// </summary>
    [Fact]
    public void Host_shutdown_timeout_outlasts_the_grace_and_its_recording_as_configured()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("grace-timeout.db"), cursor.Url, time, settings: new Dictionary<string, string?> { ["Handoff:Embedded:ProviderCallGrace"] = "00:00:41" });

        var drain = factory.Services.GetRequiredService<RequestDrain>();
        var host = factory.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<HostOptions>>().Value;

        Assert.True(drain.Limit > TimeSpan.FromSeconds(41), $"the drain waits {drain.Limit}, not past the grace");
        Assert.True(host.ShutdownTimeout > drain.Limit, $"the host stops at {host.ShutdownTimeout}, the drain may take {drain.Limit}");
    }

    /// <summary>
    /// docs/runbook.md tells whoever stops embedded mode to give it the grace plus 10 s (<c>docker stop --time 30</c> at
    /// the default 20 s): a host that took longer would be killed first, and the calls its grace cut left to reconcile.
    /// </summary>
    [Theory]
    [InlineData(null)]
    [InlineData("00:00:41")]
    public void Host_stops_within_the_grace_plus_the_ten_seconds_the_runbook_tells_the_stopper_to_give(string? grace)
    {
        var settings = grace is null ? null : new Dictionary<string, string?> { ["Handoff:Embedded:ProviderCallGrace"] = grace };
        using var factory = new EmbeddedServiceFactory(temp.File($"grace-stop-{grace?.Replace(':', '-')}.db"), cursor.Url, time, settings);

        var host = factory.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<HostOptions>>().Value;
        var given = (grace is null ? new EmbeddedOptions().ProviderCallGrace : TimeSpan.Parse(grace, System.Globalization.CultureInfo.InvariantCulture))
            + TimeSpan.FromSeconds(10);

        Assert.True(host.ShutdownTimeout <= given, $"the host may take {host.ShutdownTimeout} to stop, the runbook gives it {given}");
    }

    /// <summary>
    /// Sends a request whose launch (to acme/slow) is held at the provider, stops the service and lets the grace end: the
    /// request is answered 503 and its launch recorded unknown. Returns what was logged.
    /// </summary>
    private async Task<IReadOnlyList<FakeLogRecord>> CutByTheGraceAsync(
        string file, long runId, Func<HttpClient, Task<HttpResponseMessage>> send, IDictionary<string, string?>? settings = null)
    {
        var logs = new FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(temp.File(file), cursor.Url, time, settings) { Logs = logs };
        using var client = factory.CreateClient();
        using var held = cursor.Hold("acme/slow");
        var request = send(client);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(new EmbeddedOptions().ProviderCallGrace + TimeSpan.FromSeconds(1));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await request).StatusCode);
        Assert.Equal(Core.Handoff.LaunchPhase.OutcomeUnknown, Assert.Single((await Stored(factory, runId)).Launches).Phase);
        return logs.GetSnapshot();
    }

    /// <summary>Read from the file by a store of its own: the stopped service's are gone.</summary>
    private async Task<Core.Handoff.RunHandoffState> Stored(EmbeddedServiceFactory factory, long runId)
    {
        using var store = new HandoffDapr.Service.Embedded.SqliteRunStore(factory.DataPath, time);
        return (await store.LoadAsync(runId, CancellationToken.None)).State!;
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
