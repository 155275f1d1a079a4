using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Engine and embedded-mode lines at warning the runbook tells an operator to act on, that no other test made happen:
/// their level, the fields the runbook names, and what the caller and the provider saw.
/// </summary>
public sealed class EmbeddedLogLineTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 12, 5, 10, 0, 0, TimeSpan.Zero));
    private readonly FakeLogCollector logs = new();
    private readonly EmbeddedServiceFactory factory;
    private readonly HttpClient client;

    public EmbeddedLogLineTests()
    {
        // The schedule runs only when a test says so: a pass of its own could take the wake-up a test waits for.
        factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url, time) { Logs = logs, ScheduleRunsOnItsOwn = false };
        client = factory.CreateClient();
    }

    /// <summary>The runbook's HandoffGroupMismatch: "many: someone probes other groups' runs", so the line must name the group asked with.</summary>
    [Fact]
    public async Task A_trigger_naming_another_group_is_a_warning_with_the_run_and_the_group_asked_with_and_answered_as_an_unknown_run()
    {
        await Launch(700);

        var probe = await client.PostJsonAsync("/runs/700/handoff", Payloads.Trigger(Payloads.Run(700, ["acme/shop"], automation: false, groupId: 999), groupId: 999));

        Assert.Equal(HttpStatusCode.NotFound, probe.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
        var mismatch = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "HandoffGroupMismatch");
        Assert.Equal(LogLevel.Warning, mismatch.Level);
        Assert.Equal(("700", "999"), (mismatch.GetStructuredStateValue("RunId"), mismatch.GetStructuredStateValue("GroupId")));
    }

    /// <summary>The runbook: an event naming another group is logged CompletionEventDropped (with why), not HandoffGroupMismatch.</summary>
    [Fact]
    public async Task A_completion_event_naming_another_group_is_dropped_with_a_warning_and_launches_nothing()
    {
        await Launch(701);

        var completionEvent = await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(701, ["acme/shop"], groupId: 999));

        Assert.Equal(HttpStatusCode.NotFound, completionEvent.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
        var dropped = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "CompletionEventDropped");
        Assert.Equal(LogLevel.Warning, dropped.Level);
        Assert.Equal(("701", "the run belongs to another group"), (dropped.GetStructuredStateValue("RunId"), dropped.GetStructuredStateValue("Reason")));
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "HandoffGroupMismatch");
    }

    /// <summary>
    /// The runbook's "A stop or follow-up answered 504": the operator reads AgentCommandOutcomeUnknown to learn the
    /// provider may have acted. The provider's body is not on the line.
    /// </summary>
    [Fact]
    public async Task A_stop_the_provider_answers_with_a_gateway_timeout_is_a_warning_naming_run_agent_and_command_and_answered_504()
    {
        var agentId = await Launch(702);
        cursor.NextCommandAnswer = FakeCursor.Status(504, $"{{\"error\":\"{FakeCursor.ProviderSecretText}\"}}");

        var stop = await client.PostAsync($"/runs/702/agents/{agentId}/stop", null);

        Assert.Equal(HttpStatusCode.GatewayTimeout, stop.StatusCode);
        var unknown = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentCommandOutcomeUnknown");
        Assert.Equal(LogLevel.Warning, unknown.Level);
        Assert.Equal(
            ("702", agentId, "stop"),
            (unknown.GetStructuredStateValue("RunId"), unknown.GetStructuredStateValue("AgentId"), unknown.GetStructuredStateValue("Command")));
        Assert.Equal("provider_unavailable", unknown.GetStructuredStateValue("FailureType"));
        Assert.DoesNotContain(FakeCursor.ProviderSecretText, unknown.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name is "AgentCommandTaken" or "AgentCommandRefused");
    }

    /// <summary>The runbook's AgentTimedOut: "raise AgentMaxAge if such agents are normal", so the line says the age it went by.</summary>
    [Fact]
    public async Task An_agent_unfinished_after_the_maximum_age_is_a_warning_naming_run_agent_and_the_age()
    {
        var agentId = await Launch(703);
        time.Advance(TimeSpan.FromHours(7));

        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var timedOut = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentTimedOut");
        Assert.Equal(LogLevel.Warning, timedOut.Level);
        Assert.Equal(("703", agentId), (timedOut.GetStructuredStateValue("RunId"), timedOut.GetStructuredStateValue("AgentId")));
        Assert.Equal(TimeSpan.FromHours(6), TimeSpan.Parse(timedOut.GetStructuredStateValue("MaxAge")!, System.Globalization.CultureInfo.InvariantCulture));
        Assert.Single(cursor.CommandRequests, request => request.Path == $"/v0/agents/{agentId}/stop");
    }

    /// <summary>
    /// The runbook's AgentStopNotTaken ("the next read that shows it at work sends it again") and GivenUpAgentStillWorking:
    /// a timed-out agent whose stop the provider refused is stopped again at the next poll, each line naming the agent.
    /// </summary>
    [Fact]
    public async Task A_refused_stop_of_a_timed_out_agent_is_a_warning_and_the_next_poll_that_reads_it_at_work_warns_and_stops_it_again()
    {
        var agentId = await Launch(704);
        cursor.NextCommandAnswer = FakeCursor.Status(429, retryAfter: "1");
        time.Advance(TimeSpan.FromHours(7));

        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var notTaken = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentStopNotTaken");
        Assert.Equal(LogLevel.Warning, notTaken.Level);
        Assert.Equal(
            ("704", agentId, "rate_limited"),
            (notTaken.GetStructuredStateValue("RunId"), notTaken.GetStructuredStateValue("AgentId"), notTaken.GetStructuredStateValue("FailureType")));
        Assert.NotEqual("STOPPED", cursor.Agents[agentId]["status"]!.GetValue<string>());

        cursor.NextCommandAnswer = null;
        time.Advance(TimeSpan.FromMinutes(15));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var stillWorking = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "GivenUpAgentStillWorking");
        Assert.Equal(LogLevel.Warning, stillWorking.Level);
        Assert.Equal(
            ("704", agentId, "acme/shop"),
            (stillWorking.GetStructuredStateValue("RunId"), stillWorking.GetStructuredStateValue("AgentId"), stillWorking.GetStructuredStateValue("Repository")));
        Assert.Equal(2, cursor.CommandRequests.Count(request => request.Path == $"/v0/agents/{agentId}/stop"));
        Assert.Equal("STOPPED", cursor.Agents[agentId]["status"]!.GetValue<string>());
    }

    /// <summary>
    /// The runbook's HandoffLaunchFailed after a key the provider rejects: the operator reads the failure type and the
    /// attempt from it (and the provider's message from ProviderErrorAnswer); neither line carries the key.
    /// </summary>
    [Fact]
    public async Task A_launch_the_provider_refuses_for_its_key_is_a_warning_with_the_failure_type_and_attempt_and_no_key()
    {
        cursor.Script("acme/shop", FakeCursor.Status(401));

        var trigger = await client.PostJsonAsync("/runs/705/handoff", Payloads.Trigger(Payloads.Run(705, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        var failed = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "HandoffLaunchFailed");
        Assert.Equal(LogLevel.Warning, failed.Level);
        Assert.Equal(
            ("705", "acme/shop", "invalid_credentials", "1"),
            (failed.GetStructuredStateValue("RunId"), failed.GetStructuredStateValue("Repository"), failed.GetStructuredStateValue("FailureType"), failed.GetStructuredStateValue("Attempt")));
        var answer = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "ProviderErrorAnswer");
        Assert.Equal(("401", "invalid_credentials"), (answer.GetStructuredStateValue("StatusCode"), answer.GetStructuredStateValue("FailureType")));
        Assert.DoesNotContain(logs.GetSnapshot(), record => LogLines.Carry(record, EmbeddedServiceFactory.ApiKey));
    }

    /// <summary>
    /// The runbook's PromptOverCap: a launch accepted under a larger cap, due after the settings were lowered, is failed
    /// invalid_request without a call. The line gives the lengths the operator compares, never the instruction.
    /// </summary>
    [Fact]
    public async Task A_launch_due_after_its_cap_was_lowered_is_a_warning_with_its_length_and_the_cap_and_no_call_nor_instruction()
    {
        var path = temp.File("lowered-cap.db");
        var instruction = "Keep the public API. " + new string('x', 12_000);
        var overCapLogs = new FakeLogCollector();
        using (var before = new EmbeddedServiceFactory(path, cursor.Url, time, new Dictionary<string, string?> { ["Handoff:MaxInstructionLength"] = "20000" }))
        {
            cursor.Script("acme/shop", FakeCursor.Status(503));
            var trigger = await before.CreateClient().PostJsonAsync("/runs/706/handoff", Payloads.Trigger(Payloads.Run(706, ["acme/shop"], automation: false), instruction: instruction));
            Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        }

        using var after = new EmbeddedServiceFactory(path, cursor.Url, time, new Dictionary<string, string?> { ["Handoff:Integrations:42:PromptMaxLength"] = "8192" })
        {
            Logs = overCapLogs,
            ScheduleRunsOnItsOwn = false,
        };
        time.Advance(TimeSpan.FromHours(1));
        await after.RunScheduleAsync();

        Assert.Equal(1, cursor.LaunchRequests);
        var overCap = Assert.Single(overCapLogs.GetSnapshot(), record => record.Id.Name == "PromptOverCap");
        Assert.Equal(LogLevel.Warning, overCap.Level);
        Assert.Equal(("706", "acme/shop", "8192"), (overCap.GetStructuredStateValue("RunId"), overCap.GetStructuredStateValue("Repository"), overCap.GetStructuredStateValue("Cap")));
        Assert.True(int.Parse(overCap.GetStructuredStateValue("Length")!, System.Globalization.CultureInfo.InvariantCulture) > instruction.Length);
        var failed = Assert.Single(overCapLogs.GetSnapshot(), record => record.Id.Name == "HandoffLaunchFailed");
        Assert.Equal("invalid_request", failed.GetStructuredStateValue("FailureType"));
        Assert.DoesNotContain(overCapLogs.GetSnapshot(), record => record.Message.Contains("Keep the public API", StringComparison.Ordinal));
    }

    /// <summary>
    /// The runbook's AgentCommandNotRecorded: the provider took the stop, the run could not be saved (its row damaged
    /// while the call was out), and the caller got 200 ("do not send it again"), the line naming the exception's type.
    /// </summary>
    [Fact]
    public async Task A_stop_the_provider_took_but_that_cannot_be_recorded_is_a_warning_and_answered_200()
    {
        var agentId = await Launch(707);
        var held = cursor.HoldCommands();

        var stopping = client.PostAsync($"/runs/707/agents/{agentId}/stop", null);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        DamageRun(707);
        held.Release();
        var stop = await stopping;

        Assert.Equal(HttpStatusCode.OK, stop.StatusCode);
        Assert.Single(cursor.CommandRequests, request => request.Path == $"/v0/agents/{agentId}/stop");
        var notRecorded = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentCommandNotRecorded");
        Assert.Equal(LogLevel.Warning, notRecorded.Level);
        Assert.Equal(
            ("707", agentId, "stop"),
            (notRecorded.GetStructuredStateValue("RunId"), notRecorded.GetStructuredStateValue("AgentId"), notRecorded.GetStructuredStateValue("Command")));
        Assert.False(string.IsNullOrEmpty(notRecorded.GetStructuredStateValue("ExceptionType")));
        Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentCommandTaken");
    }

    /// <summary>
    /// The runbook's AgentCommandOutcomeNotRecorded: a follow-up answered with a gateway's 504 (it may have reached the
    /// agent) whose unknown outcome cannot be saved is still answered 504, and the line says the agent may not be watched.
    /// </summary>
    [Fact]
    public async Task A_followup_of_unknown_outcome_that_cannot_be_recorded_is_a_warning_and_still_answered_504()
    {
        var agentId = await Launch(708);
        using var arrived = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        cursor.NextCommandAnswer = () =>
        {
            arrived.Set();
            release.Wait(TimeSpan.FromSeconds(10));
            return FakeCursor.Status(504)();
        };

        var following = client.PostJsonAsync($"/runs/708/agents/{agentId}/followup", new System.Text.Json.Nodes.JsonObject { ["text"] = "Also fix the flaky test" });
        Assert.True(arrived.Wait(TimeSpan.FromSeconds(10)));
        DamageRun(708);
        release.Set();
        var followup = await following;

        Assert.Equal(HttpStatusCode.GatewayTimeout, followup.StatusCode);
        Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentCommandOutcomeUnknown");
        var notRecorded = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentCommandOutcomeNotRecorded");
        Assert.Equal(LogLevel.Warning, notRecorded.Level);
        Assert.Equal(
            ("708", agentId, "follow-up"),
            (notRecorded.GetStructuredStateValue("RunId"), notRecorded.GetStructuredStateValue("AgentId"), notRecorded.GetStructuredStateValue("Command")));
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Message.Contains("flaky test", StringComparison.Ordinal));
    }

    /// <summary>
    /// The runbook's AgentOfAnotherLaunch: the provider answers a launch with an agent the run already follows for
    /// another repository. The line names both repositories and the agent; the answer is not taken (the launch's outcome
    /// is unknown, to be looked for), and the other launch keeps its agent.
    /// </summary>
    [Fact]
    public async Task A_launch_answered_with_the_agent_of_another_launch_is_a_warning_naming_both_repositories_and_is_not_adopted()
    {
        var first = await Launch(709);
        var answer = new System.Text.Json.Nodes.JsonObject
        {
            ["id"] = first,
            ["status"] = "CREATING",
            ["source"] = new System.Text.Json.Nodes.JsonObject { ["repository"] = "https://github.com/acme/api" },
            ["target"] = new System.Text.Json.Nodes.JsonObject { ["url"] = $"https://cursor.com/agents?id={first}" },
            ["createdAt"] = "2026-12-05T10:00:00Z",
        };
        cursor.Script("acme/api", FakeCursor.Status(201, answer.ToJsonString()));

        var trigger = await client.PostJsonAsync("/runs/709/handoff", Payloads.Trigger(Payloads.Run(709, ["acme/shop", "acme/api"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        var other = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentOfAnotherLaunch");
        Assert.Equal(LogLevel.Warning, other.Level);
        Assert.Equal(
            ("709", "acme/api", first, "acme/shop"),
            (other.GetStructuredStateValue("RunId"), other.GetStructuredStateValue("Repository"), other.GetStructuredStateValue("AgentId"), other.GetStructuredStateValue("OtherRepository")));
        var view = await (await client.GetAsync("/runs/709/handoff?group_id=" + Payloads.GroupId)).ReadJsonAsync();
        var launches = view["launches"]!.AsArray();
        var api = launches.Single(launch => launch!["repository"]!.GetValue<string>() == "acme/api")!;
        Assert.Equal("outcome_unknown", api["phase"]!.GetValue<string>());
        Assert.Null(api["agent_id"]);
        Assert.Equal(first, launches.Single(launch => launch!["repository"]!.GetValue<string>() == "acme/shop")!["agent_id"]!.GetValue<string>());
    }

    public void Dispose()
    {
        client.Dispose();
        factory.Dispose();
        cursor.Dispose();
        temp.Dispose();
    }

    /// <summary>What the runbook's "Damaged run state" describes: the row's state no longer a run's JSON.</summary>
    private void DamageRun(long runId)
    {
        using var connection = new SqliteConnection($"Data Source={factory.DataPath};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "UPDATE runs SET state = 'not json', view = NULL WHERE run_id = $run";
        command.Parameters.AddWithValue("$run", runId);
        Assert.Equal(1, command.ExecuteNonQuery());
    }

    private async Task<string> Launch(long runId)
    {
        var response = await client.PostJsonAsync($"/runs/{runId}/handoff", Payloads.Trigger(Payloads.Run(runId, ["acme/shop"], automation: false)));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        return await response.ReadFirstLaunchedAgentIdAsync();
    }
}
