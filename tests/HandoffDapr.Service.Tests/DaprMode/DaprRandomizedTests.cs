using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// Randomized (fixed seeds) interleavings of Dapr-mode inputs through the fake sidecar, with app restarts against the
/// same sidecar state, then invariant checks after the reminders settle.
/// </summary>
public sealed class DaprRandomizedTests(ITestOutputHelper output)
{
    private const string Actor = HandoffRunActor.ActorTypeName;
    private const string Secret = "randomized-webhook-secret-0123456789abcdef";
    private const string UnknownAgent = "bc-ffffff"; // an id of Cursor's shape that no run has
    private static readonly string[] Pool = ["acme/a", "acme/b", "acme/c", "acme/d"];
    private static readonly string[] Leaks = ["Exception", "injected fault", "   at ", FakeCursor.ProviderSecretText, "deadline exceeded", "error invoking output binding", "StackTrace"];

    /// <summary>An app instance against an existing sidecar (a restart keeps the sidecar and its state).</summary>
    private sealed class App(FakeDaprSidecar sidecar, FakeTimeProvider time, IDictionary<string, string?> settings) : WebApplicationFactory<Program>
    {
        protected override void ConfigureWebHost(IWebHostBuilder builder)
        {
            builder.UseEnvironment("Production");
            builder.UseSetting("Handoff:Mode", "Dapr");
            builder.UseSetting("DAPR_HTTP_ENDPOINT", sidecar.HttpEndpoint.ToString());
            builder.UseSetting("DAPR_GRPC_ENDPOINT", sidecar.GrpcEndpoint.ToString());
            builder.UseSetting("APP_API_TOKEN", string.Empty);
            builder.UseSetting("Handoff:Integrations:42:Provider", "cursor_background_agent");
            builder.UseSetting("Handoff:Integrations:42:Binding", DaprServiceFactory.BindingName);
            foreach (var (key, value) in settings)
            {
                builder.UseSetting(key, value);
            }

            builder.ConfigureServices(services => services.Replace(ServiceDescriptor.Singleton<TimeProvider>(time)));
        }
    }

    private sealed class World : IAsyncDisposable
    {
        public required FakeDaprSidecar Sidecar;
        public required FakeCursor Cursor;
        public required FakeTimeProvider Time;
        public required Dictionary<string, string?> Settings;
        public required Random WebhookOmissions;

        /// <summary>Which commands go through another run than their agent's (drawn apart, so a seed's other draws stay).</summary>
        public required Random Misroutes;
        public App AppInstance = null!;

        /// <summary>
        /// Agents a command outlived its answer for: it may reach the fake later (a follow-up resuming one that ended).
        /// </summary>
        public readonly HashSet<string> AnsweredLate = [];
        public readonly List<App> Old = [];
        public readonly List<string> Violations = [];
        public readonly List<string> Log = [];
        public readonly List<Task> Pending = [];
        public readonly Dictionary<long, JsonObject> LastEvent = [];
        public readonly List<JsonObject> ToRedeliver = [];
        public bool FaultInjected;

        /// <summary>
        /// Agents the run showed completed when a follow-up or stop took them from FINISHED at the provider: a status
        /// never moves backwards (docs/api.md), so such an agent stays completed whatever it ends as next.
        /// </summary>
        public readonly HashSet<string> CompletedWhenResumed = [];

        /// <summary>
        /// Agents a follow-up resumed while the run showed them failed: a person's doing, so one may work beside the
        /// relaunch that failure allowed (a trigger launches again only a failed repository).
        /// </summary>
        public readonly HashSet<string> ResumedWhileFailed = [];

        /// <summary>
        /// Agents that had ended and that a follow-up the provider took resumed, the follow-up not recorded (a state
        /// save refused): such a follow-up does not put the agent back under the poll (docs/api.md), its end is learnt
        /// only from a webhook.
        /// </summary>
        public readonly HashSet<string> ResumedUnrecorded = [];
        public long[] Runs = [];
        public DateTime SlowUntil;

        public HttpClient Client() => AppInstance.CreateClient();

        /// <summary>
        /// Returns once the app has found its sidecar: its start-up wait runs on the test's clock, which the next step
        /// may move past the wait's end (seed 2289's first step moves it nine minutes), stopping an app still waiting.
        /// </summary>
        public async Task StartAsync()
        {
            AppInstance = new App(Sidecar, Time, Settings);
            Sidecar.AppChannel = AppInstance.Server.CreateHandler();
            await DaprServiceFactory.StartUpEndedAsync(AppInstance.Services);
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var app in Old.Append(AppInstance))
            {
                try
                {
                    await app.DisposeAsync();
                }
                catch (Exception)
                {
                }
            }

            await Sidecar.DisposeAsync();
            Cursor.Unserved?.Dispose();
            Cursor.Dispose();
        }
    }

    // Four seeds keep CI short (about six seconds each); DAPR_RANDOM_SEEDS=24 runs the set this test was first run with,
    // and DAPR_SEED_FROM starts a longer sweep past the seeds CI runs.
    public static IEnumerable<object[]> Seeds => Enumerable.Range(
            int.TryParse(Environment.GetEnvironmentVariable("DAPR_SEED_FROM"), out var from) ? from : 1,
            int.TryParse(Environment.GetEnvironmentVariable("DAPR_RANDOM_SEEDS"), out var count) ? count : 4)
        .Select(seed => new object[] { seed });

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Random_interleaving_keeps_the_design_promises(int seed)
    {
        var rng = new Random(seed);
        var cursor = new FakeCursor { FollowupResumes = true, RefusesStopOfEnded = true };
        cursor.WatchUnservedLaunches();
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
        var sidecar = await FakeDaprSidecar.StartAsync(new FakeSidecarOptions { DeadLetterRetriableFailures = false, TimeProvider = time });
        sidecar.AddHttpBinding(DaprServiceFactory.BindingName, new Uri(cursor.Url), new Dictionary<string, string>
        {
            ["securityToken"] = "Bearer " + DaprServiceFactory.BindingApiKey,
            ["securityTokenHeader"] = "Authorization",
            ["responseTimeout"] = "2s",
        });
        await using var w = new World
        {
            Sidecar = sidecar, Cursor = cursor, Time = time, WebhookOmissions = new Random(unchecked(seed * 7919 + 3)),
            Misroutes = new Random(unchecked(seed * 104729 + 11)),
            Settings = new Dictionary<string, string?>
            {
                ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
                ["Handoff:Integrations:42:WebhookSecret"] = Secret,
                ["Handoff:Launch:RetryBaseDelay"] = "00:00:30",
                ["Handoff:Launch:RetryMaxDelay"] = "00:05:00",
                ["Handoff:Launch:MaxAttempts"] = "4",
                ["Handoff:Launch:PollInterval"] = "00:01:00",
                ["Handoff:Launch:PollMaxInterval"] = "00:05:00",
                ["Handoff:Dapr:ProviderCallGrace"] = "00:00:00",
                ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "100000",
                ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "100000",
            },
        };
        await w.StartAsync();
        long[] runs = [seed * 100 + 1, seed * 100 + 2, seed * 100 + 3];
        w.Runs = runs;

        try
        {
            var steps = 30 + rng.Next(15);
            for (var step = 0; step < steps; step++)
            {
                await StepAsync(w, rng, runs, step);
            }

            await SettleAsync(w, runs, finalTrigger: true);
            EndEveryAgentAtWork(w, new Random(unchecked(seed * 31 + 7)));
            await SettleAsync(w, runs, finalTrigger: false);
            await CheckAsync(w, runs);
            w.Log.Add($"summary: {cursor.LaunchRequests} launch requests, {cursor.Agents.Count} agents, {w.Old.Count} restarts, "
                + $"{sidecar.Published.Count(p => p.Topic == "handoff.coding-agents.updated")} updates published, "
                + string.Join(" ", runs.Select(r => $"{r}:{sidecar.GetActorState(Actor, r.ToString(), "launches")?.GetArrayLength() ?? 0} launches")));
        }
        finally
        {
            foreach (var line in w.Log)
            {
                output.WriteLine(line);
            }
        }

        Assert.True(w.Violations.Count == 0, $"seed {seed}:\n" + string.Join("\n", w.Violations.Distinct()));
    }

    private static string[] PickRepos(Random rng)
    {
        var picked = Pool.Where(_ => rng.NextDouble() < 0.5).ToList();
        if (picked.Count == 0)
        {
            picked.Add(Pool[rng.Next(Pool.Length)]);
        }

        return [.. picked];
    }

    private async Task StepAsync(World w, Random rng, long[] runs, int step)
    {
        await SlowProviderAsync(w);
        var run = runs[rng.Next(runs.Length)];
        var pick = rng.Next(100);
        if (pick < 14)
        {
            var evt = Payloads.Run(run, PickRepos(rng));
            w.LastEvent[run] = evt;
            w.Log.Add($"{step}: root-cause event {run} {evt["preferences"]!["repositories"]!.ToJsonString()}");
            await DeliverAsync(w, evt, $"step-{step}");
        }
        else if (pick < 24)
        {
            var evt = Payloads.Run(run, PickRepos(rng), withSolution: true);
            w.LastEvent[run] = evt;
            w.Log.Add($"{step}: solution event {run} {evt["preferences"]!["repositories"]!.ToJsonString()}");
            await DeliverAsync(w, evt, $"step-{step}");
        }
        else if (pick < 30)
        {
            if (w.LastEvent.TryGetValue(run, out var last))
            {
                w.Log.Add($"{step}: redeliver last event {run}");
                await DeliverAsync(w, last, $"dup-{step}");
            }
        }
        else if (pick < 40)
        {
            var withSnapshot = rng.NextDouble() < 0.4;
            var body = Payloads.Trigger(withSnapshot ? Payloads.Run(run, PickRepos(rng), automation: false) : null);
            w.Log.Add($"{step}: manual trigger {run} (snapshot: {withSnapshot})");
            var response = await w.Client().PostJsonAsync($"/runs/{run}/handoff", body);
            await CheckAnswerAsync(w, response, "trigger", HttpStatusCode.Accepted, HttpStatusCode.NotFound, HttpStatusCode.ServiceUnavailable);
        }
        else if (pick < 45)
        {
            w.Log.Add($"{step}: read {run}");
            await ReadByInvocationAsync(w, run);
        }
        else if (pick < 55)
        {
            await WebhookAsync(w, rng, step);
        }
        else if (pick < 67)
        {
            var advance = TimeSpan.FromSeconds(rng.Next(0, 600));
            await AdvanceAsync(w, advance);
            w.Log.Add($"{step}: advance {advance} and fire due reminders");
            await FireDueAsync(w);
        }
        else if (pick < 71)
        {
            var reminders = w.Sidecar.Reminders.ToList();
            if (reminders.Count > 0)
            {
                var r = reminders[rng.Next(reminders.Count)];
                w.Log.Add($"{step}: fire reminder {r.ActorId} early/twice");
                using var fired = await w.Sidecar.FireReminderAsync(Actor, r.ActorId, r.Name, advanceSchedule: false);
                await CheckAnswerAsync(w, fired, "reminder", w.FaultInjected ? [HttpStatusCode.OK, HttpStatusCode.InternalServerError] : [HttpStatusCode.OK]);
            }
        }
        else if (pick < 75)
        {
            w.Log.Add($"{step}: next actor state save fails");
            w.FaultInjected = true;
            w.Sidecar.FailNextActorStateSaves(1);
        }
        else if (pick < 78)
        {
            w.Log.Add($"{step}: next reminder registration fails");
            w.FaultInjected = true;
            var once = 0;
            w.Sidecar.FailReminderRegistration = (_, _, _) => Interlocked.Exchange(ref once, 1) == 0;
        }
        else if (pick < 86)
        {
            await StopOrFollowupAsync(w, rng, run, step);
        }
        else if (pick < 96)
        {
            var repo = Pool[rng.Next(Pool.Length)];
            var kind = rng.Next(8);
            w.Log.Add($"{step}: provider fault {kind} scripted for {repo}");
            if (kind == 6)
            {
                // Binding timeout (2 s); the provider creates the agent right after (IdleAsync waits for that, as the
                // 30 s retry delay would in real time). Awaited, not slept: the binding's timeout needs a pool thread.
                w.Cursor.Script(repo, async () =>
                {
                    lock (w.Violations)
                    {
                        w.SlowUntil = DateTime.UtcNow.AddSeconds(3);
                    }

                    await Task.Delay(2500);
                    return w.Cursor.CreatesButAnswers(201, "{}")();
                });
            }
            else
            {
                w.Cursor.Script(repo, kind switch
                {
                    0 => FakeCursor.Status(429, retryAfter: "90"),
                    1 => FakeCursor.Status(500),
                    2 => FakeCursor.Status(503),
                    3 => w.Cursor.CreatesButAnswersGarbage(),
                    4 => w.Cursor.CreatesButAnswers(502),
                    5 => FakeCursor.Status(200, "<html>garbage</html>"),
                    _ => FakeCursor.Status(401),
                });
            }
        }
        else
        {
            await RestartAsync(w, rng, run, step);
        }
    }

    /// <summary>
    /// A stop or follow-up for an agent of one of the runs (or an id a run does not have), by the API the autofix UI
    /// calls. A follow-up the provider takes resumes an agent that ended (<see cref="FakeCursor.FollowupResumes"/>),
    /// a stop of one is refused (<see cref="FakeCursor.RefusesStopOfEnded"/>: a 502); one time in six the provider
    /// answers the command with a 500, whose outcome is unknown (a 504).
    /// </summary>
    private async Task StopOrFollowupAsync(World w, Random rng, long run, int step)
    {
        var stop = rng.Next(2) == 0;
        var known = w.Runs
            .SelectMany(r => w.Sidecar.GetActorState(Actor, r.ToString(), "coding_agents") is { } a ? a.EnumerateObject().Select(p => (Run: r, Id: p.Name)) : [])
            .OrderBy(x => x.Run).ThenBy(x => BranchOf(w, x.Id), StringComparer.Ordinal).ToList();
        var agentId = UnknownAgent;
        var misrouted = false;
        if (known.Count > 0 && rng.Next(8) != 0)
        {
            (run, agentId) = known[rng.Next(known.Count)];
            // An agent answers only to its own run: through another, a 404 that reaches no provider.
            if (w.Misroutes.Next(10) == 0)
            {
                var own = run;
                run = w.Runs.First(r => r != own);
                misrouted = true;
            }
        }

        var faulted = rng.Next(6) == 0;
        if (faulted)
        {
            w.Cursor.NextCommandAnswer = () =>
            {
                w.Cursor.NextCommandAnswer = null;
                return FakeCursor.Status(500, "{\"error\": \"" + FakeCursor.ProviderSecretText + "\"")();
            };
        }

        var before = w.Cursor.Agents.TryGetValue(agentId, out var atProvider) ? atProvider["status"]!.GetValue<string>() : null;
        var ours = w.Sidecar.GetActorState(Actor, run.ToString(), "coding_agents") is { } state
            && state.TryGetProperty(agentId, out var agent) ? agent.GetProperty("status").GetString() : null;
        var what = stop ? "stop" : "followup";
        w.Log.Add($"{step}: {what} {run}{(misrouted ? " (not its run)" : "")} agent {agentId} ({before ?? "unknown"} at the provider, "
            + $"{ours ?? "-"} in the run{(faulted ? ", answered 500" : "")})");
        var followedUpBefore = LatestFollowup(w, run, agentId);
        var entriesBefore = CommandEntries(w, run, agentId);
        var commandsBefore = w.Cursor.CommandRequests.Count();
        var refusedBefore = w.Cursor.StopsRefused(agentId);
        var started = Stopwatch.GetTimestamp();
        var response = stop
            ? await w.Client().PostAsync($"/runs/{run}/agents/{agentId}/stop", null)
            : await w.Client().PostJsonAsync($"/runs/{run}/agents/{agentId}/followup", new JsonObject { ["text"] = "Please also add a test" });
        var text = await response.Content.ReadAsStringAsync();
        await CheckAnswerAsync(w, response, what, HttpStatusCode.OK, HttpStatusCode.NotFound, HttpStatusCode.BadGateway,
            HttpStatusCode.GatewayTimeout, HttpStatusCode.ServiceUnavailable);
        w.Cursor.NextCommandAnswer = null;
        // Only a stop is refused: one counted during a follow-up is a stop the app made meanwhile (a poll's, in the
        // background).
        var refused = stop && w.Cursor.StopsRefused(agentId) != refusedBefore;
        // A 504 with no fault injected is the binding's responseTimeout (2 s), outlasted by the fake on a busy machine.
        var late = !faulted && Stopwatch.GetElapsedTime(started) >= TimeSpan.FromSeconds(2);
        var answeredLateBefore = w.AnsweredLate.Contains(agentId);
        if (late)
        {
            w.AnsweredLate.Add(agentId);
        }

        // The fake carries out every command it does not answer 500 or refuse (one the binding gave up on too): a
        // follow-up resumes an agent that ended, a stop stops one at work.
        var taken = !refused && (response.StatusCode == HttpStatusCode.OK
            || (response.StatusCode == HttpStatusCode.GatewayTimeout && !faulted));
        if (taken && before == "FINISHED" && ours == "completed")
        {
            w.CompletedWhenResumed.Add(agentId);
        }

        var resumed = taken && !stop && FakeCursor.HasEnded(before);
        if (resumed && ours == "failed")
        {
            w.ResumedWhileFailed.Add(agentId);
        }

        if (resumed && LatestFollowup(w, run, agentId) == followedUpBefore)
        {
            w.Log.Add($"   (follow-up of {agentId} not recorded)");
            w.ResumedUnrecorded.Add(agentId);
        }

        if (faulted && response.StatusCode == HttpStatusCode.OK)
        {
            w.Violations.Add($"{what} {run} {agentId}: 200 though the provider answered 500: {text}");
        }

        if (agentId == UnknownAgent && response.StatusCode != HttpStatusCode.NotFound)
        {
            w.Violations.Add($"{what} {run} {agentId}: {(int)response.StatusCode} for an agent no run has: {text}");
        }

        var commandsSent = w.Cursor.CommandRequests.Count() - commandsBefore;
        if (misrouted && (response.StatusCode is not (HttpStatusCode.NotFound or HttpStatusCode.ServiceUnavailable) || commandsSent != 0))
        {
            w.Violations.Add($"{what} {run} {agentId}: through another run than the agent's, {(int)response.StatusCode}"
                + $" and {commandsSent} command(s) sent to the provider: {text}");
        }

        if (response.StatusCode == HttpStatusCode.GatewayTimeout
            && ((!faulted && !late) || !text.Contains("/problems/outcome-unknown\"", StringComparison.Ordinal)))
        {
            w.Violations.Add($"{what} {run} {agentId}: a 504 {(faulted ? "that is not the documented 'outcome unknown' problem" : "with no fault injected")}: {text}");
        }

        // Nothing but the fake's refusal makes a command's 502 here: the fake sidecar has no breaker on its binding.
        if (response.StatusCode == HttpStatusCode.BadGateway
            && (!refused || !text.Contains("\"failure_type\":\"invalid_request\"", StringComparison.Ordinal)))
        {
            w.Violations.Add($"{what} {run} {agentId}: a 502 {(refused ? "that is not the provider's refusal" : "the provider did not refuse")}: {text}");
        }

        // A command the provider refused changed nothing there: the run's timeline does not show it sent (more entries;
        // not fewer, which trimming a long timeline could make).
        if (response.StatusCode == HttpStatusCode.BadGateway && CommandEntries(w, run, agentId) > entriesBefore)
        {
            w.Violations.Add($"{what} {run} {agentId}: a 502, yet the run's timeline shows the command sent");
        }

        // Nothing moves an agent that ended while the command is under way (steps take turns; the app resumes none),
        // but an earlier command of it the binding gave up on, which may reach the fake only now.
        if (stop && FakeCursor.HasEnded(before) && !faulted && !late && !answeredLateBefore && !misrouted
            && response.StatusCode is not (HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable))
        {
            w.Violations.Add($"{what} {run} {agentId}: {(int)response.StatusCode} for a stop of an agent that had ended ({before}),"
                + $" which the provider refuses: {text}");
        }

        if (response.StatusCode == HttpStatusCode.NotFound && agentId != UnknownAgent && !misrouted)
        {
            w.Violations.Add($"{what} {run} {agentId}: 404 for an agent the run has: {text}");
        }
    }

    private async Task DeliverAsync(World w, JsonObject evt, string id)
    {
        var delivery = await w.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", evt, cloudEventId: id);
        var text = delivery.Response is null ? "" : await delivery.Response.Content.ReadAsStringAsync();
        CheckLeak(w, "event answer", text);
        if (delivery.Response is null || delivery.Response.StatusCode != HttpStatusCode.OK)
        {
            w.Violations.Add($"event answered {(int?)delivery.Response?.StatusCode}: {text}");
        }
        else
        {
            var status = JsonNode.Parse(text)?["status"]?.GetValue<string>();
            if (status is not ("SUCCESS" or "RETRY" or "DROP"))
            {
                w.Violations.Add($"event answered status {status}");
            }
        }

        if (delivery.Outcome == DeliveryOutcome.Drop)
        {
            w.Violations.Add($"valid event dropped: {text}");
        }

        if (delivery.Outcome == DeliveryOutcome.Retry)
        {
            w.Log.Add("   -> RETRY (redelivered later)");
            w.ToRedeliver.Add(evt);
        }
    }

    private async Task ReadByInvocationAsync(World w, long run)
    {
        using var http = new HttpClient { BaseAddress = w.Sidecar.HttpEndpoint };
        var response = await http.GetAsync($"/v1.0/invoke/handoff/method/runs/{run}/handoff?group_id={Payloads.GroupId}");
        await CheckAnswerAsync(w, response, "read", HttpStatusCode.OK, HttpStatusCode.NotFound, HttpStatusCode.ServiceUnavailable);
    }

    private async Task WebhookAsync(World w, Random rng, int step)
    {
        // Cursor's statuses only move forward: an agent that ended stays ended (until a follow-up resumes it).
        var agents = w.Cursor.Agents.Values.Where(a => a["status"]!.GetValue<string>() is "CREATING" or "RUNNING")
            .OrderBy(a => a["target"]!["branchName"]!.GetValue<string>(), StringComparer.Ordinal).ToList();
        if (agents.Count == 0)
        {
            return;
        }

        var agent = agents[rng.Next(agents.Count)];
        var id = agent["id"]!.GetValue<string>();
        var status = new[] { "RUNNING", "FINISHED", "FINISHED", "ERROR" }[rng.Next(4)];
        var pr = status == "FINISHED" ? w.Cursor.PullRequestOf(id) : null;
        w.Cursor.SetStatus(id, status, pr);
        if (rng.NextDouble() < 0.3 || status == "RUNNING")
        {
            w.Log.Add($"{step}: provider moves {id} to {status}, webhook lost");
            return; // webhook lost (and Cursor sends none for RUNNING)
        }

        // Which run: the agent's branch names it; the webhook URL carries the run id the launch was sent with.
        var runId = FindRunOfBranch(w, agent["target"]!["branchName"]!.GetValue<string>());
        // Cursor's webhooks can leave target.prUrl out: one finish in three of an agent asked to open a pull request is
        // reported without it, which the run must learn by a read (drawn apart, so a seed's other draws are those it had
        // before). An agent not asked for one (the events' launches) is taken as finished without it: not drawn for.
        var reportedPr = pr is not null && agent["target"]!["autoCreatePr"]?.GetValue<bool>() == true && w.WebhookOmissions.Next(3) == 0 ? null : pr;
        var body = new JsonObject
        {
            ["event"] = "statusChange", ["id"] = id, ["status"] = status,
            ["source"] = new JsonObject { ["repository"] = agent["source"]!["repository"]!.GetValue<string>() },
            ["target"] = new JsonObject { ["branchName"] = agent["target"]!["branchName"]!.GetValue<string>(), ["prUrl"] = reportedPr },
        }.ToJsonString();
        w.Log.Add($"{step}: provider moves {id} to {status}, signed webhook for run {runId}{(reportedPr == pr ? "" : " (its pull request left out)")}");
        var times = rng.NextDouble() < 0.3 ? 2 : 1;
        for (var i = 0; i < times; i++)
        {
            using var request = Payloads.SignedWebhook($"/webhooks/cursor/42?run_id={runId}", body, Secret);
            var response = await w.Client().SendAsync(request);
            await CheckAnswerAsync(w, response, "webhook", HttpStatusCode.NoContent, HttpStatusCode.ServiceUnavailable);
        }
    }

    /// <summary>
    /// The provider ends every agent still at work, its webhook lost: the polls alone must bring each run in line, also
    /// for an agent a follow-up resumed after the run had learnt its end (drawn apart, so a seed's other draws stay).
    /// </summary>
    private static void EndEveryAgentAtWork(World w, Random ends)
    {
        foreach (var (id, agent) in w.Cursor.Agents.OrderBy(a => BranchOf(w, a.Key), StringComparer.Ordinal))
        {
            if (agent["status"]!.GetValue<string>() is "CREATING" or "RUNNING")
            {
                var finished = ends.Next(3) != 0;
                w.Cursor.SetStatus(id, finished ? "FINISHED" : "ERROR", finished ? w.Cursor.PullRequestOf(id) : null);
                w.Log.Add($"end: provider moves {id} to {(finished ? "FINISHED" : "ERROR")}, webhook lost");
            }
        }
    }

    /// <summary>
    /// The key that orders the provider's agents the same in every run of a seed: their ids go in the order concurrent
    /// launches reach the fake, and its dictionary's order can change with the machine's core count (its lock count);
    /// a launch's branch is named by run, repository and generation.
    /// </summary>
    private static string BranchOf(World w, string agentId) =>
        w.Cursor.Agents.TryGetValue(agentId, out var agent) ? agent["target"]!["branchName"]!.GetValue<string>()
            : agentId;

    /// <summary>When the run's timeline last recorded a follow-up for the agent (each one later than the one before).</summary>
    private static DateTimeOffset? LatestFollowup(World w, long run, string agentId) =>
        TimelineOf(w, run, agentId).Where(e => e.GetProperty("event").GetString() == "followup_sent")
            .Select(e => (DateTimeOffset?)e.GetProperty("at").GetDateTimeOffset()).Max();

    /// <summary>How many stops and follow-ups of the agent the run's timeline shows sent.</summary>
    private static int CommandEntries(World w, long run, string agentId) =>
        TimelineOf(w, run, agentId).Count(e => e.GetProperty("event").GetString() is "stopped" or "followup_sent");

    /// <summary>The agent's entries in the run's timeline, as the sidecar's store holds it.</summary>
    private static IEnumerable<System.Text.Json.JsonElement> TimelineOf(World w, long run, string agentId) =>
        w.Sidecar.GetActorState(Actor, run.ToString(), HandoffRunActor.TimelineKey)
            is { ValueKind: System.Text.Json.JsonValueKind.Array } timeline
            ? timeline.EnumerateArray().Where(e => e.TryGetProperty("agent_id", out var id) && id.GetString() == agentId)
            : [];

    private static long FindRunOfBranch(World w, string branch)
    {
        foreach (var reminderOrRun in w.Runs)
        {
            if (w.Sidecar.GetActorState(Actor, reminderOrRun.ToString(), "launches") is { } launches
                && launches.EnumerateArray().Any(l => l.GetProperty("branch_name").GetString() == branch))
            {
                return reminderOrRun;
            }
        }

        return 0;
    }

    private async Task RestartAsync(World w, Random rng, long run, int step)
    {
        var withRound = rng.NextDouble() < 0.6;
        w.Log.Add($"{step}: app restart (launch round in flight: {withRound})");
        Task<HttpResponseMessage>? trigger = null;
        FakeCursor.HeldLaunches? held = null;
        if (withRound)
        {
            var repo = "acme/held" + step;
            held = w.Cursor.Hold(repo);
            trigger = w.Client().PostJsonAsync($"/runs/{run}/handoff", Payloads.Trigger(Payloads.Run(run, [repo, Pool[rng.Next(Pool.Length)]], automation: false)));
            if (!held.Arrived.Wait(TimeSpan.FromSeconds(10)))
            {
                w.Log.Add("   (held launch never arrived)");
            }
        }

        var old = w.AppInstance;
        w.Old.Add(old);
        var graceful = rng.NextDouble() < 0.5;
        await w.StartAsync(); // the new instance takes the sidecar's app channel: actors are now hosted by it
        if (graceful)
        {
            // A rolling update: the old instance stops (no grace: calls unanswered are recorded outcome_unknown).
            old.Services.GetRequiredService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>().StopApplication();
        }

        held?.Release();
        if (trigger is not null)
        {
            try
            {
                var response = await trigger.WaitAsync(TimeSpan.FromSeconds(30));
                await CheckAnswerAsync(w, response, "trigger during restart", HttpStatusCode.Accepted, HttpStatusCode.ServiceUnavailable);
            }
            catch (Exception exception)
            {
                w.Log.Add($"   trigger during restart: {exception.GetType().Name}");
            }
        }

        if (held is not null)
        {
            // The held launch was released to an instance that may have stopped, or answered, without it: wait until the
            // fake has created its agent, or the next step's lookup could miss it and a second agent be launched.
            await held.AnsweredAsync();
            held.Dispose();
        }
    }

    private async Task FireDueAsync(World w)
    {
        var fired = await w.Sidecar.FireDueRemindersAsync(w.Time.GetUtcNow());
        foreach (var firing in fired)
        {
            CheckLeak(w, "reminder answer", firing.Body);
            if (firing.StatusCode != HttpStatusCode.OK)
            {
                w.Log.Add($"   reminder {firing.Reminder.ActorId} answered {(int)firing.StatusCode}");
                if (!w.FaultInjected)
                {
                    w.Violations.Add($"reminder of {firing.Reminder.ActorId} answered {(int)firing.StatusCode} with no fault injected");
                }
            }
        }

        await IdleAsync(w);
    }

    private static async Task IdleAsync(World w)
    {
        await SlowProviderAsync(w);
        foreach (var app in w.Old.Append(w.AppInstance))
        {
            try
            {
                await app.Services.GetRequiredService<BackgroundRounds>().WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(30));
            }
            catch (ObjectDisposedException)
            {
            }
        }

        await SlowProviderAsync(w);
    }

    /// <summary>
    /// Moves the clock once the fake has carried out every launch sent to it: past a retry's delay the next attempt
    /// looks for the agent a lost answer's launch made, which a real provider made long before then (see
    /// UnservedRequests).
    /// </summary>
    private static async Task AdvanceAsync(World w, TimeSpan by)
    {
        var lost = await w.Cursor.Unserved!.WaitUntilServedAsync(TimeSpan.FromSeconds(5));
        if (lost > 0)
        {
            w.Log.Add($"   {lost} launch(es) sent but not served in 5 s: lost");
        }

        w.Time.Advance(by);
    }

    /// <summary>Waits until a slow launch (answered after the binding's timeout) has created its agent at the provider.</summary>
    private static async Task SlowProviderAsync(World w)
    {
        // A slow launch's agent is created once its answer is written (after the binding gave up on it).
        DateTime until;
        lock (w.Violations)
        {
            until = w.SlowUntil;
        }

        if (until > DateTime.UtcNow)
        {
            await Task.Delay(until - DateTime.UtcNow);
        }
    }

    private async Task SettleAsync(World w, long[] runs, bool finalTrigger)
    {
        w.Sidecar.FailReminderRegistration = null;
        w.Sidecar.FailNextActorStateSaves(0);
        w.FaultInjected = false;
        foreach (var evt in w.ToRedeliver.ToList())
        {
            w.Log.Add($"settle: redeliver event {evt["run_id"]} answered RETRY");
            w.ToRedeliver.Remove(evt);
            await DeliverAsync(w, evt, "redelivery-" + Guid.NewGuid());
        }

        for (var i = 0; i < 12; i++)
        {
            await IdleAsync(w);
            await AdvanceAsync(w, TimeSpan.FromMinutes(6));
            await FireDueAsync(w);
        }

        if (finalTrigger)
        {
            foreach (var run in runs)
            {
                if (w.Sidecar.GetActorState(Actor, run.ToString(), "snapshot") is not null)
                {
                    w.Log.Add($"settle: final manual trigger {run}");
                    var response = await w.Client().PostJsonAsync($"/runs/{run}/handoff", Payloads.Trigger());
                    await CheckAnswerAsync(w, response, "final trigger", HttpStatusCode.Accepted);
                }
            }

            await SettleAsync(w, runs, finalTrigger: false);
        }
    }

    private async Task CheckAnswerAsync(World w, HttpResponseMessage response, string what, params HttpStatusCode[] allowed)
    {
        var text = await response.Content.ReadAsStringAsync();
        w.Log.Add($"   {what} -> {(int)response.StatusCode}");
        CheckLeak(w, what, text);
        if (!allowed.Contains(response.StatusCode))
        {
            w.Violations.Add($"{what} answered {(int)response.StatusCode}: {text}");
        }

        if (response.StatusCode == HttpStatusCode.ServiceUnavailable && !w.FaultInjected && what is not "trigger during restart")
        {
            w.Log.Add($"   (503 for {what} with no fault injected)");
        }
    }

    private static void CheckLeak(World w, string what, string text)
    {
        foreach (var leak in Leaks)
        {
            if (text.Contains(leak, StringComparison.Ordinal))
            {
                w.Violations.Add($"{what} carries '{leak}': {text[..Math.Min(400, text.Length)]}");
            }
        }
    }

    private async Task CheckAsync(World w, long[] runs)
    {
        var tracked = new Dictionary<string, (long Run, string Branch)>();
        foreach (var run in runs)
        {
            var id = run.ToString();
            foreach (var (key, value) in w.Sidecar.GetActorStateKeys(Actor, id))
            {
                CheckLeak(w, $"state {id}/{key}", value);
            }

            var snapshot = w.Sidecar.GetActorState(Actor, id, "snapshot");
            var launchesElement = w.Sidecar.GetActorState(Actor, id, "launches");
            if (snapshot is null && launchesElement is null)
            {
                continue;
            }

            var launches = launchesElement is { } l ? JsonNode.Parse(l.GetRawText())!.AsArray() : [];
            var agents = w.Sidecar.GetActorState(Actor, id, "coding_agents") is { } a ? JsonNode.Parse(a.GetRawText())!.AsObject() : [];

            // Every repository of the stored snapshot has a launch that ends with an agent or a failure with a type.
            if (snapshot is { } s)
            {
                foreach (var repo in s.GetProperty("preferences").GetProperty("repositories").EnumerateArray())
                {
                    var name = $"{repo.GetProperty("owner").GetString()}/{repo.GetProperty("name").GetString()}";
                    if (!launches.Any(x => string.Equals(x!["repository"]!.GetValue<string>(), name, StringComparison.OrdinalIgnoreCase)))
                    {
                        w.Violations.Add($"run {run}: {name} of the stored snapshot has no launch");
                    }
                }
            }

            foreach (var launch in launches)
            {
                var phase = launch!["phase"]!.GetValue<string>();
                var repo = launch["repository"]!.GetValue<string>();
                var agentId = launch["agent_id"]?.GetValue<string>();
                if (phase == "launched")
                {
                    if (agentId is null || !agents.ContainsKey(agentId))
                    {
                        w.Violations.Add($"run {run}: {repo} launched without an agent in coding_agents");
                    }
                }
                else if (phase == "failed")
                {
                    if (launch["failure_type"] is null)
                    {
                        w.Violations.Add($"run {run}: {repo} failed without a failure_type");
                    }
                }
                else
                {
                    w.Violations.Add($"run {run}: {repo} gen {launch["generation"]} still {phase} after settling ({launch.ToJsonString()})");
                }
            }

            // Per repository, at most one agent not failed (but for those a person's follow-up set to work again).
            foreach (var group in launches.GroupBy(x => x!["repository"]!.GetValue<string>().ToLowerInvariant()))
            {
                var live = group.Select(x => x!["agent_id"]?.GetValue<string>()).OfType<string>()
                    .Where(agentId => agents[agentId]?["status"]?.GetValue<string>() != "failed")
                    .Where(agentId => !w.ResumedWhileFailed.Contains(agentId)).ToList();
                if (live.Count > 1)
                {
                    w.Violations.Add($"run {run}: {group.Key} has {live.Count} live agents: {string.Join(", ", live)}");
                }
            }

            foreach (var launch in launches)
            {
                tracked[launch!["branch_name"]!.GetValue<string>()] = (run, launch["branch_name"]!.GetValue<string>());
            }

            // Pending work must have a reminder.
            var needsWake = launches.Any(x => x!["phase"]!.GetValue<string>() is "in_flight" or "retry_scheduled" or "outcome_unknown")
                || agents.Any(x => x.Value!["status"]!.GetValue<string>() is "pending" or "running");
            if (needsWake && !w.Sidecar.Reminders.Any(r => r.ActorId == id))
            {
                w.Violations.Add($"run {run}: work pending and no reminder registered");
            }

            // And a settled run keeps none: the wake reminder repeats until a turn removes it, so one left behind fires for good.
            var settled = launches.All(x => x!["phase"]!.GetValue<string>() is "launched" or "failed")
                && w.Sidecar.GetActorState(Actor, id, HandoffRunActor.PollKey) is null;
            if (settled && w.Sidecar.Reminders.Any(r => r.ActorId == id))
            {
                w.Violations.Add($"run {run}: settled, and a reminder is still registered");
            }

            // The view read by service invocation agrees with the provider.
            using var http = new HttpClient { BaseAddress = w.Sidecar.HttpEndpoint };
            var response = await http.GetAsync($"/v1.0/invoke/handoff/method/runs/{run}/handoff?group_id={Payloads.GroupId}");
            var text = await response.Content.ReadAsStringAsync();
            CheckLeak(w, "final read", text);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                w.Violations.Add($"run {run}: final read answered {(int)response.StatusCode}");
                continue;
            }

            var read = JsonNode.Parse(text)!.AsObject();
            var view = read["coding_agents"]!.AsObject();
            // Its subscribers were last told of the agents it has (docs/api.md, "Agent updates"): each change is published
            // once saved, so the last notice of a settled run is of its last change.
            var lastNotice = w.Sidecar.Published.LastOrDefault(p => p.Topic == "handoff.coding-agents.updated" && JsonNode.Parse(p.Data.ToArray())!["run_id"]!.GetValue<long>() == run);
            if (view.Count > 0 && !JsonNode.DeepEquals(lastNotice is null ? null : JsonNode.Parse(lastNotice.Data.ToArray())!["coding_agents"], view))
            {
                w.Violations.Add($"run {run}: the last agents update published {(lastNotice is null ? "nothing" : Encoding.UTF8.GetString(lastNotice.Data.ToArray()))}, the run has {view.ToJsonString()}");
            }

            foreach (var launch in read["launches"]!.AsArray().Select(node => node!.AsObject()))
            {
                if (HandoffInvariants.LaunchFieldsDisagree(launch, view) is { } disagreement)
                {
                    w.Violations.Add($"run {run}: {disagreement}: {launch.ToJsonString()}");
                }
            }

            foreach (var (agentId, agent) in view)
            {
                if (!w.Cursor.Agents.TryGetValue(agentId, out var atProvider))
                {
                    w.Violations.Add($"run {run}: agent {agentId} unknown to the provider");
                    continue;
                }

                var providerStatus = atProvider["status"]!.GetValue<string>();
                var ours = agent!["status"]!.GetValue<string>();
                var expected = providerStatus switch
                {
                    "FINISHED" => "completed",
                    "ERROR" or "EXPIRED" or "STOPPED" => "failed",
                    _ => null,
                };
                if (w.ResumedUnrecorded.Contains(agentId))
                {
                    continue;
                }

                if (expected is not null && ours != expected
                    && !(ours == "completed" && w.CompletedWhenResumed.Contains(agentId)))
                {
                    w.Violations.Add($"run {run}: agent {agentId} is {ours} in the view, {providerStatus} at the provider");
                }

                if (providerStatus == "FINISHED" && ours == "completed")
                {
                    var pr = atProvider["target"]?["prUrl"]?.GetValue<string>();
                    var ourPr = agent["results"]?.AsArray().FirstOrDefault()?["pr_url"]?.GetValue<string>();
                    if (pr != ourPr)
                    {
                        w.Violations.Add($"run {run}: agent {agentId} pr_url {ourPr}, provider {pr}");
                    }
                }
            }
        }

        // No two agents for one launch (branch), and every agent the provider made is followed by its run.
        foreach (var group in w.Cursor.Agents.Values.GroupBy(agent => agent["target"]!["branchName"]!.GetValue<string>()))
        {
            if (group.Count() > 1)
            {
                w.Violations.Add($"{group.Count()} agents created on branch {group.Key}: {string.Join(", ", group.Select(x => x["id"]))}");
            }
        }

        foreach (var agent in w.Cursor.Agents.Values)
        {
            var id = agent["id"]!.GetValue<string>();
            var followed = runs.Any(run => w.Sidecar.GetActorState(Actor, run.ToString(), "coding_agents") is { } a && a.TryGetProperty(id, out _));
            if (!followed)
            {
                w.Violations.Add($"agent {id} on {agent["target"]!["branchName"]} exists at the provider and no run follows it");
            }
        }

        foreach (var published in w.Sidecar.Published)
        {
            CheckLeak(w, $"published {published.Topic}", Encoding.UTF8.GetString(published.Data.ToArray()));
        }

        // The status page's list (the runs this replica's actors saved) shows each run as its own read does.
        using var invoke = new HttpClient { BaseAddress = w.Sidecar.HttpEndpoint };
        await HandoffInvariants.CheckListedAsViewedAsync(invoke, "/v1.0/invoke/handoff/method", " (by service invocation)", (what, text) => CheckLeak(w, what, text), w.Violations.Add);
    }
}
