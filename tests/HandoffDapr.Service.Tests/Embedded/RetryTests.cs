using Microsoft.Extensions.DependencyInjection;
using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>Durable retries in embedded mode, on a controlled clock: the schedule runs when the tests say.</summary>
public sealed class RetryTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
    private readonly Microsoft.Extensions.Logging.Testing.FakeLogCollector logs = new();
    private EmbeddedServiceFactory factory;
    private HttpClient client;

    public RetryTests()
    {
        factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url, time) { Logs = logs };
        client = factory.CreateClient();
    }

    [Fact]
    public async Task Service_unavailable_then_created_ends_with_one_agent()
    {
        cursor.Script("acme/shop", FakeCursor.Status(503));
        await Trigger(300, "acme/shop");

        time.Advance(TimeSpan.FromSeconds(40));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        var view = await View(300);
        Assert.Single(view["coding_agents"]!.AsObject());
        var launch = Assert.Single(view["launches"]!.AsArray())!;
        Assert.Equal("launched", launch["phase"]!.GetValue<string>());
        Assert.Equal(2, launch["attempts"]!.GetValue<int>());
        // No retry is left; the next wake-up is the first status poll.
        Assert.Equal(time.GetUtcNow().AddMinutes(1), await factory.Store.GetWakeupAsync(300, CancellationToken.None));
    }

    [Fact]
    public async Task Rate_limited_launch_is_not_retried_before_retry_after()
    {
        cursor.Script("acme/shop", FakeCursor.Status(429, retryAfter: "120"));
        var retry = (await Trigger(301, "acme/shop"))["retries"]![0]!;
        Assert.Equal(time.GetUtcNow().AddSeconds(120), retry["retry_at"]!.GetValue<DateTimeOffset>());

        time.Advance(TimeSpan.FromSeconds(119));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);
        Assert.Equal(1, cursor.LaunchRequests);

        time.Advance(TimeSpan.FromSeconds(2));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);
        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
    }

    /// <summary>
    /// A launch keeps a Retry-After its last attempt was refused with (a person's relaunch is not sent before it is
    /// over), but the launch view shows <c>next_attempt_at</c> only while the service itself will act on the launch: a
    /// failed one is tried again by no one, and a time there would read as a retry that never comes.
    /// </summary>
    [Fact]
    public async Task Launch_view_shows_next_attempt_at_while_a_retry_is_due_and_none_once_the_launch_failed()
    {
        cursor.Script("acme/shop", FakeCursor.Status(429, retryAfter: "120"));
        await Trigger(330, "acme/shop");

        var scheduled = (await View(330))["launches"]![0]!;
        Assert.Equal("retry_scheduled", scheduled["phase"]!.GetValue<string>());
        Assert.Equal(time.GetUtcNow().AddSeconds(120), scheduled["next_attempt_at"]!.GetValue<DateTimeOffset>());

        var settings = new Dictionary<string, string?> { ["Handoff:Launch:MaxAttempts"] = "1" };
        using var oneAttempt = new EmbeddedServiceFactory(temp.File("one-attempt.db"), cursor.Url, time, settings);
        using var oneAttemptClient = oneAttempt.CreateClient();
        cursor.Script("acme/shop", FakeCursor.Status(429, retryAfter: "120"));
        var response = await oneAttemptClient.PostJsonAsync("/runs/330/handoff", Payloads.Trigger(Payloads.Run(330, ["acme/shop"], automation: false)));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);

        var failed = (await (await oneAttemptClient.GetAsync("/runs/330/handoff")).ReadJsonAsync())["launches"]![0]!;
        Assert.Equal("failed", failed["phase"]!.GetValue<string>());
        Assert.Equal("retries_exhausted", failed["failure_type"]!.GetValue<string>());
        Assert.Null(failed["next_attempt_at"]);
    }

    [Fact]
    public async Task Five_server_errors_end_in_retries_exhausted()
    {
        cursor.Script("acme/shop", Enumerable.Repeat(FakeCursor.Status(500), 5).ToArray());
        await Trigger(302, "acme/shop");

        for (var i = 0; i < 6; i++)
        {
            time.Advance(TimeSpan.FromMinutes(40));
            await factory.Scheduler.RunDueAsync(CancellationToken.None);
        }

        Assert.Equal(5, cursor.LaunchRequests);
        var launch = (await View(302))["launches"]![0]!;
        Assert.Equal("failed", launch["phase"]!.GetValue<string>());
        Assert.Equal("retries_exhausted", launch["failure_type"]!.GetValue<string>());
        Assert.Null(await factory.Store.GetWakeupAsync(302, CancellationToken.None));
    }

    [Fact]
    public async Task Refused_launch_is_tried_again_on_its_own_branch_by_the_next_trigger_without_a_lookup()
    {
        // A 422 is a refusal: no agent can exist, so the relaunch is sent at once (a lookup in a busy repository may never finish).
        cursor.Script("acme/shop", FakeCursor.Status(422));
        await Trigger(303, "acme/shop");

        var again = await (await client.PostJsonAsync("/runs/303/handoff", Payloads.Trigger())).ReadJsonAsync();

        Assert.Single(again["successes"]!.AsArray());
        var branches = cursor.LaunchBodies.Select(body => body["target"]!["branchName"]!.GetValue<string>()).ToList();
        Assert.Equal(2, branches.Count);
        Assert.Equal(branches[0], branches[1]);
        Assert.DoesNotContain(cursor.Server.LogEntries, entry => entry.RequestMessage.Method == "GET" && entry.RequestMessage.Path == "/v0/agents");
    }

    [Fact]
    public async Task Launch_whose_answers_were_lost_is_looked_for_once_more_before_it_ends_and_a_persons_trigger_then_launches_it()
    {
        // A 500 may come after the agent was made: each retry looks first, and so does one more lookup after the last
        // attempt. It finds none, so the outcome is known and a person's trigger launches without looking again.
        cursor.Script("acme/shop", Enumerable.Repeat(FakeCursor.Status(500), 5).ToArray());
        await Trigger(305, "acme/shop");
        for (var i = 0; i < 6; i++)
        {
            time.Advance(TimeSpan.FromMinutes(40));
            await factory.Scheduler.RunDueAsync(CancellationToken.None);
        }

        var failed = (await View(305))["launches"]![0]!;
        Assert.Equal("retries_exhausted", failed["failure_type"]!.GetValue<string>());
        Assert.Equal(5, cursor.LaunchRequests);
        var lookups = cursor.Server.LogEntries.Count(entry => entry.RequestMessage.Method == "GET" && entry.RequestMessage.Path == "/v0/agents");
        Assert.Equal(5, lookups);

        var again = await (await client.PostJsonAsync("/runs/305/handoff", Payloads.Trigger())).ReadJsonAsync();

        Assert.Single(again["successes"]!.AsArray());
        Assert.Equal(lookups, cursor.Server.LogEntries.Count(entry => entry.RequestMessage.Method == "GET" && entry.RequestMessage.Path == "/v0/agents"));
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
    }

    [Fact]
    public async Task Repository_whose_agent_failed_is_launched_again_on_a_new_branch_by_the_next_trigger()
    {
        var first = await Trigger(304, "acme/shop");
        var agentId = first.FirstLaunchedAgentId();
        await factory.Services.GetRequiredService<HandoffDapr.Service.Hosting.IRunOwner>()
            .ApplyAgentReportAsync(304, new HandoffDapr.Core.Handoff.AgentReport(EmbeddedServiceFactory.IntegrationId, new HandoffDapr.Core.Providers.ProviderAgent(agentId, HandoffDapr.Core.Providers.ProviderAgentStatus.Error)), CancellationToken.None);

        var again = await (await client.PostJsonAsync("/runs/304/handoff", Payloads.Trigger())).ReadJsonAsync();

        Assert.Single(again["successes"]!.AsArray());
        var branches = cursor.LaunchBodies.Select(body => body["target"]!["branchName"]!.GetValue<string>()).ToList();
        Assert.Equal(2, branches.Count);
        Assert.NotEqual(branches[0], branches[1]);
        // Both launches stay on record; the status view tells them apart by generation, the newer one last.
        var launches = (await View(304))["launches"]!.AsArray();
        Assert.Equal([1, 2], launches.Select(launch => launch!["generation"]!.GetValue<int>()));
        Assert.Equal(branches, launches.Select(launch => launch!["branch_name"]!.GetValue<string>()));
    }

    [Fact]
    public async Task Completion_event_redelivered_after_retries_ran_out_launches_nothing_more()
    {
        cursor.Script("acme/shop", Enumerable.Repeat(FakeCursor.Status(500), 5).ToArray());
        var run = Payloads.Run(305, ["acme/shop"]);
        await client.PostJsonAsync("/events/autofix-run-completed", run);
        for (var i = 0; i < 6; i++)
        {
            await factory.Scheduler.RunDueAsync(CancellationToken.None);
            time.Advance(TimeSpan.FromMinutes(40));
        }

        Assert.Equal("retries_exhausted", (await View(305))["launches"]![0]!["failure_type"]!.GetValue<string>());

        var redelivered = await client.PostJsonAsync("/events/autofix-run-completed", run);
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal(HttpStatusCode.OK, redelivered.StatusCode);
        Assert.Equal(5, cursor.LaunchRequests);
        Assert.Single((await View(305))["launches"]!.AsArray());
    }

    [Fact]
    public async Task Retry_still_happens_after_a_restart_between_attempts()
    {
        cursor.Script("acme/shop", FakeCursor.Status(502));
        await Trigger(304, "acme/shop");
        client.Dispose();
        await factory.DisposeAsync();

        time.Advance(TimeSpan.FromMinutes(5));
        factory = new EmbeddedServiceFactory(factory.DataPath, cursor.Url, time);
        client = factory.CreateClient();

        // The restarted scheduler runs overdue work at start, without being asked.
        await Eventually.True(() => cursor.AgentsFor("acme/shop") == 1);
        await Eventually.True(async () => (await View(304))["launches"]![0]!["phase"]!.GetValue<string>() == "launched");
        Assert.Equal(2, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Launch_with_an_unreadable_answer_is_reconciled_instead_of_launched_twice()
    {
        cursor.Script("acme/shop", cursor.CreatesButAnswersGarbage());
        var first = await Trigger(305, "acme/shop");
        Assert.Equal("invalid_response", first["retries"]![0]!["failure_type"]!.GetValue<string>());
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal(1, cursor.LaunchRequests);
        var view = await View(305);
        var agent = Assert.Single(view["coding_agents"]!.AsObject());
        Assert.True(cursor.Agents.ContainsKey(agent.Key));
        Assert.Contains(view["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == "reconciled");
    }

    /// <summary>
    /// An agent found by the lookup is logged as adopted (<c>HandoffReconciled</c>), once, when the round is recorded,
    /// and not as launched. Trying the runbook's <c>outcome_unknown</c> row against the sample fake (an answer lost to
    /// the request timeout) logged "found agent X …; adopted it instead of launching again" and then "agent X launched
    /// for acme/shop (attempt 2)" for the same agent, though the second attempt sent no launch.
    /// </summary>
    [Fact]
    public async Task An_adopted_agent_is_logged_as_reconciled_once_and_not_as_launched()
    {
        cursor.Script("acme/shop", cursor.CreatesButAnswersGarbage());
        await Trigger(310, "acme/shop");

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var agentId = Assert.Single((await View(310))["coding_agents"]!.AsObject()).Key;
        var reconciled = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "HandoffReconciled");
        Assert.Equal($"Run 310: found agent {agentId} for acme/shop by a lookup at the provider; adopted it instead of launching again", reconciled.Message);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "HandoffLaunched");
    }

    /// <summary>
    /// The launch's answer is an agent of another repository (a provider answering garbage). Taken as the launch's agent,
    /// every later report of it was refused as another repository's, while the agent the launch did create on its own
    /// repository was never followed: its pull request was lost. It is an unreadable answer: the launch is looked up first.
    /// </summary>
    [Fact]
    public async Task Launch_answered_with_an_agent_of_another_repository_is_reconciled_not_taken_as_its_agent()
    {
        cursor.Script("acme/shop", cursor.CreatesButAnswers(201, """
            {"id":"bc-elsewhere","status":"FINISHED","name":"Other work",
             "source":{"repository":"https://github.com/acme/other"},
             "target":{"branchName":"other-branch","prUrl":"https://github.com/acme/other/pull/9"}}
            """));
        var first = await Trigger(307, "acme/shop");
        Assert.Equal("invalid_response", first["retries"]![0]!["failure_type"]!.GetValue<string>());

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal(1, cursor.LaunchRequests);
        var view = await View(307);
        var agent = Assert.Single(view["coding_agents"]!.AsObject());
        Assert.NotEqual("bc-elsewhere", agent.Key);
        Assert.True(cursor.Agents.ContainsKey(agent.Key));
        Assert.Equal("launched", view["launches"]![0]!["phase"]!.GetValue<string>());
        Assert.Contains(view["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == "reconciled");
    }

    /// <summary>
    /// Cursor's agent list is paged (<c>limit</c> at most 100, <c>nextCursor</c> to the next page:
    /// docs.cursor.com/background-agent/api/list-agents). Here a page holds one agent and another repository's agent comes
    /// first: the lost launch's agent is on the second page, found by following the cursor, not launched again.
    /// </summary>
    [Fact]
    public async Task Launch_whose_answer_was_lost_is_found_on_a_later_page_of_the_agent_list()
    {
        await Trigger(308, "acme/other");
        cursor.MaxListPage = 1;
        cursor.Script("acme/shop", cursor.CreatesButAnswers(502));
        await Trigger(309, "acme/shop");

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        var view = await View(309);
        var agent = Assert.Single(view["coding_agents"]!.AsObject());
        Assert.Equal(cursor.Agents.Single(pair => pair.Value["source"]!["repository"]!.GetValue<string>() == "https://github.com/acme/shop").Key, agent.Key);
        Assert.Contains(cursor.Server.LogEntries, entry => entry.RequestMessage.Method == "GET" && entry.RequestMessage.Path == "/v0/agents"
            && entry.RequestMessage.Query is { } query && query.ContainsKey("cursor"));
    }

    [Theory]
    [InlineData(500)]
    [InlineData(502)]
    [InlineData(504)]
    [InlineData(520)] // Cloudflare: the origin answered something unexpected
    [InlineData(524)] // Cloudflare: the origin took the request and did not answer in time
    public async Task Launch_answered_by_a_server_or_gateway_error_after_the_agent_was_created_is_adopted_not_launched_again(int status)
    {
        cursor.Script("acme/shop", cursor.CreatesButAnswers(status));
        var first = await Trigger(306, "acme/shop");
        Assert.Equal("provider_unavailable", first["retries"]![0]!["failure_type"]!.GetValue<string>());

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        var view = await View(306);
        var agent = Assert.Single(view["coding_agents"]!.AsObject());
        Assert.True(cursor.Agents.ContainsKey(agent.Key));
    }

    /// <summary>
    /// The other side of rounding a wake-up up: a completion event's launches are due the moment they are saved. Rounded up
    /// past that moment, the wake-up the event's signal then looked for in the same millisecond was not due yet, and the
    /// schedule slept to its next poll (a second by default; in tests, for ever): a launch late for no reason.
    /// </summary>
    [Fact]
    public async Task A_launch_due_when_it_is_saved_is_claimed_at_once_in_the_same_millisecond()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero).AddTicks(1));
        using var own = new EmbeddedServiceFactory(temp.File("due-now.db"), cursor.Url, clock);
        using var ownClient = own.CreateClient();
        await ownClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(321, ["acme/shop"]));

        var claimed = await own.Scheduler.RunDueAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(1, claimed);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    /// <summary>
    /// A wake-up's time is stored in whole milliseconds. Cut down to its millisecond, a poll due a tick into one was
    /// claimed at its start, found nothing due, saved the run as it was and gave the claim back, to be claimed again at
    /// once: the schedule saved the run over and over until the clock passed the poll (with a clock that stands still,
    /// for ever).
    /// </summary>
    [Fact]
    public async Task A_wake_up_due_later_in_the_same_millisecond_is_not_claimed_early()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero).AddTicks(1));
        using var own = new EmbeddedServiceFactory(temp.File("sub-millisecond.db"), cursor.Url, clock);
        using var ownClient = own.CreateClient();
        await ownClient.PostJsonAsync("/runs/320/handoff", Payloads.Trigger(Payloads.Run(320, ["acme/shop"], automation: false)));
        var pollAt = (await own.Store.LoadAsync(320, CancellationToken.None)).State!.Poll!.NextPollAt;

        clock.SetUtcNow(pollAt - TimeSpan.FromTicks(1)); // the same millisecond, a tick early
        var early = await own.Scheduler.RunDueAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        var versionBefore = (await own.Store.LoadAsync(320, CancellationToken.None)).Version;
        clock.Advance(TimeSpan.FromMilliseconds(1)); // claimed in the millisecond after it at the latest
        var due = await own.Scheduler.RunDueAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(0, early);
        Assert.Equal(1, due);
        Assert.Equal(versionBefore + 2, (await own.Store.LoadAsync(320, CancellationToken.None)).Version); // the poll's start and its reports
    }

    /// <summary>
    /// A status code outside HTTP's classes (a garbled answer from whatever is in front of the provider) says nothing about
    /// whether the launch was carried out. Taken for a refusal, the launch failed for good with no lookup: an agent it had
    /// created was never followed, and a person's relaunch sent it again beside that agent.
    /// </summary>
    [Theory]
    [InlineData(600)]
    [InlineData(999)]
    public async Task Launch_answered_with_a_status_code_outside_the_http_classes_after_the_agent_was_created_is_adopted_not_launched_again(int status)
    {
        cursor.Script("acme/shop", cursor.CreatesButAnswers(status));
        var first = await Trigger(308, "acme/shop");
        Assert.Equal("invalid_response", first["retries"]![0]!["failure_type"]!.GetValue<string>());

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        var agent = Assert.Single((await View(308))["coding_agents"]!.AsObject());
        Assert.True(cursor.Agents.ContainsKey(agent.Key));
    }

    /// <summary>
    /// A 303 to a POST says the request was carried out and where its result is (RFC 9110 §15.4.4); embedded mode does not
    /// follow redirects, so the launch's answer is unread, not refused. Taken for a refusal, the launch failed for good with
    /// no lookup, the agent it created was never followed, and a person's relaunch sent it again beside it.
    /// </summary>
    [Fact]
    public async Task Launch_answered_see_other_after_the_agent_was_created_is_adopted_not_launched_again()
    {
        var createsAndRedirects = cursor.CreatesButAnswers(303);
        cursor.Script("acme/shop", () =>
        {
            var answer = createsAndRedirects();
            answer.Headers!["Location"] = new WireMock.Types.WireMockList<string>(cursor.Url + "/v0/agents/bc-000001");
            return answer;
        });
        var first = await Trigger(309, "acme/shop");
        Assert.Equal("invalid_response", first["retries"]![0]!["failure_type"]!.GetValue<string>());

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        var agent = Assert.Single((await View(309))["coding_agents"]!.AsObject());
        Assert.True(cursor.Agents.ContainsKey(agent.Key));
    }

    /// <summary>
    /// Launches turned away by the provider open its circuit (half of at least ten calls within 30 s): a stop then is not
    /// sent, and is told as the provider unavailable (a 502 a caller may send again), not as an outcome unknown; the
    /// agent is left as it was.
    /// </summary>
    [Fact]
    public async Task Stop_while_the_providers_circuit_is_open_is_refused_unsent_as_the_provider_unavailable()
    {
        var agentId = (await Trigger(340, "acme/shop")).FirstLaunchedAgentId();
        for (var run = 341; run <= 351; run++)
        {
            cursor.Script($"acme/down{run}", FakeCursor.Status(503));
            await Trigger(run, $"acme/down{run}");
        }

        var stop = await client.PostAsync($"/runs/340/agents/{agentId}/stop", null);

        Assert.Equal(HttpStatusCode.BadGateway, stop.StatusCode);
        var problem = await stop.ReadJsonAsync();
        Assert.EndsWith("/problems/provider-failed", problem["type"]!.GetValue<string>());
        Assert.Equal("provider_unavailable", problem["failure_type"]!.GetValue<string>());
        Assert.Empty(cursor.CommandRequests);
        var view = await View(340);
        Assert.Equal("pending", view["coding_agents"]![agentId]!["status"]!.GetValue<string>());
        Assert.DoesNotContain(view["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == "stopped");
    }

    /// <summary>
    /// A second trigger that comes while the first's launch round is at the provider holds the run from the schedule as
    /// the first does (<see cref="HandoffDapr.Service.Embedded.EmbeddedRunOwner.RunsWithRequestRounds"/>); once both
    /// have ended the run is the schedule's again, and the launch the provider refused is retried when due. Left held,
    /// none of its retries or polls would ever be claimed.
    /// </summary>
    [Fact]
    public async Task Launch_refused_while_a_second_trigger_came_during_its_round_is_retried_when_due()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var arrived = new ManualResetEventSlim();
        cursor.Script("acme/shop", async () =>
        {
            arrived.Set();
            await release.Task.WaitAsync(TimeSpan.FromSeconds(30));
            return FakeCursor.Status(503)();
        });
        var first = client.PostJsonAsync("/runs/311/handoff", Payloads.Trigger(Payloads.Run(311, ["acme/shop"], automation: false)));
        Assert.True(arrived.Wait(TimeSpan.FromSeconds(10)));
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/311/handoff", Payloads.Trigger())).StatusCode);
        release.SetResult();
        Assert.Equal(HttpStatusCode.Accepted, (await first).StatusCode);

        time.Advance(TimeSpan.FromSeconds(40));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
    }

    /// <summary>
    /// A wake-up's claim is let go once its run is woken: the retry it scheduled is made when due, not when the claim's
    /// lease would have lapsed (an hour here). Kept, every retry or poll due within a lease of the last wake-up waited for it.
    /// </summary>
    [Fact]
    public async Task Retry_scheduled_by_a_wake_up_is_made_when_due_not_when_the_wake_ups_lease_lapses()
    {
        using var leased = new EmbeddedServiceFactory(temp.File("long-lease.db"), cursor.Url, time, new Dictionary<string, string?> { ["Handoff:Embedded:ScheduleLease"] = "01:00:00" });
        using var leasedClient = leased.CreateClient();
        cursor.Script("acme/shop", FakeCursor.Status(503));
        await leasedClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(312, ["acme/shop"]));
        await leased.RunScheduleAsync();
        Assert.Equal(1, cursor.LaunchRequests);

        time.Advance(TimeSpan.FromSeconds(40));
        await leased.RunScheduleAsync();

        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
    }

    /// <summary>
    /// A wake-up still at the provider past its claim's lease (30 s) keeps its claim: the lease is renewed while the run is
    /// worked on, so another process on the file does not wake the run too and, once the round's deadline passed, launch
    /// it a second time. Only a process that dies lets its claims lapse.
    /// </summary>
    [Fact]
    public async Task Wake_up_at_the_provider_past_its_lease_keeps_its_claim_from_another_process()
    {
        using var held = cursor.Hold("acme/shop");
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(313, ["acme/shop"]));
        var claimedAt = time.GetUtcNow();
        var wake = factory.RunScheduleAsync();
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        Assert.Equal(claimedAt + TimeSpan.FromSeconds(30), LeaseUntil(313));

        var claimedByOther = await ClaimsOfAnotherProcessPastTheLeaseAsync(313, claimedAt);
        held.Release();
        await wake;

        Assert.Equal(0, claimedByOther);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
    }

    /// <summary>
    /// A wake-up that launched and saved, whose claim the store then refuses to give back (a trigger refusing the release
    /// alone), is logged as not released, with the store's error, and not as a failed wake-up: the launch is recorded, and
    /// the poll it saved is taken once its claim has lapsed. It was logged as <c>WakeFailed</c>, an error saying the wake-up failed.
    /// </summary>
    [Fact]
    public async Task Wake_up_whose_claim_cannot_be_released_is_logged_as_not_released_and_its_launch_is_kept()
    {
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(315, ["acme/shop"]));
        DataFileSql.Execute(factory.DataPath, "CREATE TRIGGER refuse_release BEFORE UPDATE OF lease_owner ON wakeups WHEN NEW.lease_owner IS NULL BEGIN SELECT RAISE(ABORT, 'injected: disk full 9d3b'); END;");

        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var entries = logs.GetSnapshot();
        var notReleased = Assert.Single(entries, entry => entry.Id.Name == "WakeupNotReleased");
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Warning, notReleased.Level);
        Assert.Contains("Run 315 was woken", notReleased.Message, StringComparison.Ordinal);
        Assert.Contains("9d3b", notReleased.Exception!.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(entries, entry => entry.Id.Name == "WakeFailed");
        var view = await (await client.GetAsync("/runs/315/handoff")).ReadJsonAsync();
        Assert.Equal("launched", Assert.Single(view["launches"]!.AsArray())!["phase"]!.GetValue<string>());
        Assert.Equal(1, cursor.LaunchRequests);

        time.Advance(TimeSpan.FromMinutes(1));
        var agentId = cursor.Agents.Keys.Single();
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/9");
        await factory.Scheduler.RunDueAsync(CancellationToken.None);
        var polled = await (await client.GetAsync("/runs/315/handoff")).ReadJsonAsync();
        Assert.Equal("completed", polled["coding_agents"]![agentId]!["status"]!.GetValue<string>());
    }

    /// <summary>
    /// A renewal of the leases that the store refuses (a locked or full disk; here a trigger refusing every change to a
    /// wake-up) is logged, and the renewals go on: the wake-up still at the provider keeps its claim past its lease, so
    /// another process on the file does not launch the run a second time. Ending the renewals at their first failure
    /// (hand mutation: the catch's pause made a break) survived every retry, store, schedule, retention and shutdown test.
    /// </summary>
    [Fact]
    public async Task Lease_renewal_the_store_refuses_once_is_logged_and_the_renewals_after_it_keep_the_claim()
    {
        using var held = cursor.Hold("acme/shop");
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(314, ["acme/shop"]));
        var wake = factory.RunScheduleAsync();
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        DataFileSql.Execute(factory.DataPath, "CREATE TRIGGER refuse_renewal BEFORE UPDATE ON wakeups BEGIN SELECT RAISE(ABORT, 'injected: disk full 7c2a'); END;");
        await Eventually.True(() =>
        {
            if (logs.GetSnapshot().Any(record => record.Id.Name == "SchedulerFailed"))
            {
                return true;
            }

            time.Advance(TimeSpan.FromSeconds(1));
            return false;
        });
        Assert.Contains("7c2a", logs.GetSnapshot().First(record => record.Id.Name == "SchedulerFailed").Exception!.ToString(), StringComparison.Ordinal);
        DataFileSql.Execute(factory.DataPath, "DROP TRIGGER refuse_renewal;");
        var refusedAt = time.GetUtcNow();

        // To 5 s past the lease on file when the renewal was refused.
        var claimedByOther = await ClaimsOfAnotherProcessPastTheLeaseAsync(314, refusedAt);
        held.Release();
        await wake;

        Assert.Equal(0, claimedByOther);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
    }

    /// <summary>
    /// Moves the clock a second at a time to 5 s past a lease of 30 s taken at <paramref name="leasedAt"/>, never to within
    /// 5 s of the lease on the file (it waits there for each renewal, every third of a lease, to land); then another
    /// process on the file runs its schedule once. What that process claimed.
    /// </summary>
    private async Task<int> ClaimsOfAnotherProcessPastTheLeaseAsync(long runId, DateTimeOffset leasedAt)
    {
        await Eventually.True(() =>
        {
            if (time.GetUtcNow() >= leasedAt + TimeSpan.FromSeconds(35))
            {
                return true;
            }

            if (LeaseUntil(runId) - time.GetUtcNow() > TimeSpan.FromSeconds(5))
            {
                time.Advance(TimeSpan.FromSeconds(1));
            }

            return false;
        });
        using var other = new EmbeddedServiceFactory(factory.DataPath, cursor.Url, time) { ScheduleRunsOnItsOwn = false };
        other.CreateClient().Dispose();
        return await other.RunScheduleAsync();
    }

    private DateTimeOffset? LeaseUntil(long runId)
    {
        using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={factory.DataPath};Mode=ReadOnly");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT lease_until FROM wakeups WHERE run_id = {runId}";
        return command.ExecuteScalar() is long until ? DateTimeOffset.FromUnixTimeMilliseconds(until) : null;
    }

    private async Task<JsonObject> Trigger(long runId, params string[] repositories)
    {
        var response = await client.PostJsonAsync($"/runs/{runId}/handoff", Payloads.Trigger(Payloads.Run(runId, repositories, automation: false)));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        return await response.ReadJsonAsync();
    }

    private async Task<JsonObject> View(long runId) => await (await client.GetAsync($"/runs/{runId}/handoff")).ReadJsonAsync();

    public void Dispose()
    {
        client.Dispose();
        factory.Dispose();
        cursor.Dispose();
        temp.Dispose();
    }
}
