using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Model-based randomized test of embedded mode: per seed, 2–4 runs and 5–30 random operations (completion events with
/// evolving snapshots, raw or CloudEvent, duplicated / concurrent / out of order; manual triggers; stop and follow-up;
/// signed webhooks in random order; time advances + RunDueAsync; provider faults; restarts on the same SQLite file,
/// also while a round is under way), then settle and check the design's invariants.
/// Seeds: MODEL_SEED_FROM / MODEL_SEED_COUNT environment variables (default 1..12). A failure prints the seed, what broke
/// and the operations in order.
/// </summary>
public sealed class ModelBasedEmbeddedTests(ITestOutputHelper output)
{
    public const string Secret = "webhook-secret-of-integration-42-0123456789";

    public static IEnumerable<object[]> Seeds()
    {
        // A dozen seeds keep CI short; MODEL_SEED_FROM and MODEL_SEED_COUNT run more (about a second each).
        var from = int.TryParse(Environment.GetEnvironmentVariable("MODEL_SEED_FROM"), out var f) ? f : 1;
        var count = int.TryParse(Environment.GetEnvironmentVariable("MODEL_SEED_COUNT"), out var c) ? c : 12;
        return Enumerable.Range(from, count).Select(seed => new object[] { seed });
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Random_sequence_keeps_the_invariants(int seed)
    {
        await using var harness = new Harness(seed, output);
        await harness.RunAsync();
        Assert.True(harness.Violations.Count == 0, $"seed {seed}:\n" + string.Join("\n", harness.Violations) + "\n--- ops:\n" + harness.TraceText);
    }

    private sealed class Harness : IAsyncDisposable
    {
        private readonly int seed;
        // Concurrent operations draw from it too (System.Random is not thread-safe).
        private readonly LockedRandom random;
        private readonly ITestOutputHelper output;
        private readonly TempDirectory temp = new();
        private readonly FakeCursor cursor = new();
        private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
        private readonly Dictionary<string, string?> settings;
        private EmbeddedServiceFactory? factory;
        private HttpClient? client;
        private readonly List<long> runs = [];
        private readonly Dictionary<long, JsonObject[]> versions = [];
        private readonly Dictionary<long, int> manualTriggers = [];
        private readonly List<(long Run, string Body)> pendingWebhooks = [];
        private readonly object gate = new();
        private int restartEpoch;
        private bool commandFaultsInjected;
        private int prCounter;

        public List<string> Violations { get; } = [];

        // Concurrent operations write to it: only through Note.
        private readonly List<string> trace = [];

        public string TraceText
        {
            get
            {
                lock (gate)
                {
                    return string.Join("\n", trace);
                }
            }
        }

        private void Note(string line)
        {
            lock (gate)
            {
                trace.Add(line);
            }
        }

        public Harness(int seed, ITestOutputHelper output)
        {
            this.seed = seed;
            this.output = output;
            random = new LockedRandom(seed);
            var grace = new[] { "00:00:00", "00:00:00.300", "00:00:02" }[random.Next(3)];
            settings = new Dictionary<string, string?>
            {
                ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
                ["Handoff:Integrations:42:WebhookSecret"] = Secret,
                ["Handoff:Integrations:42:RequestTimeout"] = "00:00:00.800",
                ["Handoff:Launch:AgentMaxAge"] = "02:00:00",
                ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "100000",
                ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "100000",
                ["Handoff:Embedded:ProviderCallGrace"] = grace,
            };
            Note($"grace={grace}");
        }

        private EmbeddedServiceFactory Factory => factory!;

        private void Start()
        {
            factory = new EmbeddedServiceFactory(temp.File("model.db"), cursor.Url, time, settings);
            client = factory.CreateClient();
        }

        private async Task RestartAsync()
        {
            var old = factory!;
            Interlocked.Increment(ref restartEpoch);
            factory = null;
            await old.DisposeAsync();
            Start();
        }

        private static string Repo(long run, int k) => $"run{run}/svc{k}";

        private static long RunOfRepository(string repositoryUrl)
        {
            // https://github.com/run{N}/svc{k}
            var owner = repositoryUrl.Split('/')[^2];
            return long.Parse(owner["run".Length..]);
        }

        public async Task RunAsync()
        {
            Start();
            var runCount = random.Next(2, 5);
            for (var i = 0; i < runCount; i++)
            {
                var run = 1000L + i;
                runs.Add(run);
                manualTriggers[run] = 0;
                string[] Pick() => Enumerable.Range(1, 4).Where(_ => random.Next(2) == 0).Select(k => Repo(run, k)).DefaultIfEmpty(Repo(run, 1)).ToArray();
                var v1 = Payloads.Run(run, Pick());
                var v2 = Payloads.Run(run, Pick());
                v2["artifacts"]!["root_cause"]!["one_line_description"] = "Pool exhausted under load (v2)";
                var v3 = Payloads.Run(run, Pick(), withSolution: true);
                versions[run] = [v1, v2, v3];
            }

            var operations = random.Next(5, 31);
            for (var op = 0; op < operations; op++)
            {
                await OneOperationAsync(op);
            }

            await FinishAsync();
        }

        private async Task OneOperationAsync(int op)
        {
            var pick = random.Next(100);
            switch (pick)
            {
                case < 25:
                    await EventAsync();
                    break;
                case < 35:
                    await TriggerAsync(random.Next(3) == 0 ? null : random.Next(3));
                    break;
                case < 42:
                    await StopOrFollowupAsync(stop: random.Next(2) == 0);
                    break;
                case < 55:
                    await ProgressAsync();
                    break;
                case < 62:
                    await DeliverPendingWebhookAsync();
                    break;
                case < 75:
                    await AdvanceAsync(TimeSpan.FromSeconds(random.Next(1, 2400)));
                    break;
                case < 83:
                    InjectFault();
                    break;
                case < 90:
                    await RestartMidwayAsync();
                    break;
                default:
                    await ConcurrentBatchAsync();
                    break;
            }
        }

        private async Task ConcurrentBatchAsync()
        {
            Note("batch {");
            var tasks = new List<Task>();
            var n = random.Next(2, 4);
            for (var i = 0; i < n; i++)
            {
                tasks.Add((random.Next(5)) switch
                {
                    0 => EventAsync(),
                    1 => TriggerAsync(random.Next(2) == 0 ? null : random.Next(3)),
                    2 => StopOrFollowupAsync(random.Next(2) == 0),
                    3 => DeliverPendingWebhookAsync(),
                    _ => RunDueAsync(),
                });
            }

            await Task.WhenAll(tasks);
            Note("}");
        }

        private async Task RestartMidwayAsync()
        {
            // Something is under way (maybe a launch round at the provider) when the process stops.
            Task? background = (random.Next(4)) switch
            {
                0 => TriggerAsync(random.Next(3), overlapsRestart: true),
                1 => RunDueAsync(overlapsRestart: true),
                2 => EventAsync(overlapsRestart: true),
                _ => null,
            };
            if (background is not null)
            {
                await Task.Delay(random.Next(0, 300));
            }

            Note("restart");
            await RestartAsync();
            if (background is not null)
            {
                try
                {
                    await background;
                }
                catch (Exception exception)
                {
                    Note($"  (background op ended with {exception.GetType().Name} across restart)");
                }
            }
        }

        private void InjectFault()
        {
            var run = runs[random.Next(runs.Count)];
            var repo = Repo(run, random.Next(1, 5));
            switch (random.Next(7))
            {
                case 0:
                    Note($"fault {repo}: 429 Retry-After");
                    cursor.Script(repo, FakeCursor.Status(429, retryAfter: random.Next(2) == 0 ? "5" : "120"));
                    break;
                case 1:
                    Note($"fault {repo}: 503 then 500");
                    cursor.Script(repo, FakeCursor.Status(503), FakeCursor.Status(500));
                    break;
                case 2:
                    Note($"fault {repo}: creates, garbage answer");
                    cursor.Script(repo, cursor.CreatesButAnswersGarbage());
                    break;
                case 3:
                    Note($"fault {repo}: creates, 502 answer");
                    cursor.Script(repo, cursor.CreatesButAnswers(502));
                    break;
                case 4:
                    Note($"fault {repo}: 401");
                    cursor.Script(repo, FakeCursor.Status(401));
                    break;
                case 5:
                    Note($"fault {repo}: 400 branch");
                    cursor.Script(repo, FakeCursor.Status(400, "{\"error\":\"Failed to verify existence of branch 'main'\"}"));
                    break;
                default:
                    var chaosSeed = random.Next();
                    Note($"chaos seed {chaosSeed}");
                    cursor.Chaos(chaosSeed, 0.3, TimeSpan.FromMilliseconds(1200));
                    break;
            }

            if (random.Next(6) == 0)
            {
                Note("fault: next stop/follow-up answer 500 garbage");
                commandFaultsInjected = true;
                cursor.NextCommandAnswer = () =>
                {
                    cursor.NextCommandAnswer = null;
                    return FakeCursorJson(500, "{\"error\": \"" + FakeCursor.ProviderSecretText + "\"");
                };
            }
        }

        private static WireMock.ResponseMessage FakeCursorJson(int status, string body) => (WireMock.ResponseMessage)FakeCursor.Status(status, body)();

        private async Task EventAsync(bool overlapsRestart = false)
        {
            var run = runs[random.Next(runs.Count)];
            var version = random.Next(3);
            var data = versions[run][version];
            var cloud = random.Next(2) == 0;
            var mode = random.Next(3); // 0 once, 1 twice concurrently, 2 twice in a row
            Note($"event run {run} v{version + 1} {(cloud ? "cloud" : "raw")} x{(mode == 0 ? 1 : 2)}{(mode == 1 ? " concurrent" : "")}");
            Func<Task> one = () => Call(
                $"event {run} v{version + 1}",
                c => cloud
                    ? c.PostJsonAsync("/events/autofix-run-completed", Payloads.CloudEvent(data), "application/cloudevents+json")
                    : c.PostJsonAsync("/events/autofix-run-completed", data),
                overlapsRestart,
                expect: s => s == 200);
            if (mode == 1)
            {
                await Task.WhenAll(one(), one());
            }
            else
            {
                await one();
                if (mode == 2)
                {
                    await one();
                }
            }
        }

        private async Task TriggerAsync(int? version, bool overlapsRestart = false)
        {
            var run = runs[random.Next(runs.Count)];
            var body = Payloads.Trigger(version is { } v ? versions[run][v] : null, instruction: random.Next(2) == 0 ? "Keep the API" : null);
            Note($"trigger run {run} {(version is { } w ? $"v{w + 1}" : "no snapshot")}");
            // Counted when sent: an answer lost across a restart may still have been acted on.
            lock (gate)
            {
                manualTriggers[run]++;
            }

            var answer = await Call($"trigger {run}", c => c.PostJsonAsync($"/runs/{run}/handoff", body), overlapsRestart, expect: s => s is 202 or 404);
            if (answer is { Status: 202 } ok)
            {
                var json = JsonNode.Parse(ok.Body)!;
                foreach (var failure in json["failures"]!.AsArray())
                {
                    if (failure!["failure_type"] is null)
                    {
                        Violation($"trigger {run}: failure without failure_type: {failure.ToJsonString()}");
                    }
                }
            }
            else if (answer is { Status: 404 } && version is not null)
            {
                Violation($"trigger {run} with snapshot answered 404");
            }
        }

        private async Task StopOrFollowupAsync(bool stop)
        {
            var run = runs[random.Next(runs.Count)];
            var ids = cursor.Agents.Where(a => RunOfRepository(a.Value["source"]!["repository"]!.GetValue<string>()) == run).Select(a => a.Key).Order().ToList();
            var agentId = ids.Count == 0 || random.Next(8) == 0 ? "bc-ffffff" : ids[random.Next(ids.Count)];
            Note($"{(stop ? "stop" : "followup")} run {run} agent {agentId}");
            await Call(
                $"{(stop ? "stop" : "followup")} {run} {agentId}",
                c => stop ? c.PostAsync($"/runs/{run}/agents/{agentId}/stop", null) : c.PostJsonAsync($"/runs/{run}/agents/{agentId}/followup", new JsonObject { ["text"] = "Please also add a test" }),
                overlapsRestart: false,
                expect: s => s is 200 or 404 || (s == 502 && commandFaultsInjected));
        }

        private Task ProgressAsync()
        {
            var candidates = cursor.Agents.Where(a => a.Value["status"]!.GetValue<string>() is "CREATING" or "RUNNING").Select(a => a.Key).Order().ToList();
            if (candidates.Count == 0)
            {
                return Task.CompletedTask;
            }

            var id = candidates[random.Next(candidates.Count)];
            var agent = cursor.Agents[id];
            var current = agent["status"]!.GetValue<string>();
            var next = current == "CREATING" ? (random.Next(4) == 0 ? "ERROR" : "RUNNING") : (random.Next(4) == 0 ? "ERROR" : "FINISHED");
            var repository = agent["source"]!["repository"]!.GetValue<string>();
            string? pr = next == "FINISHED" && random.Next(4) != 0 ? $"{repository}/pull/{Interlocked.Increment(ref prCounter)}" : null;
            cursor.SetStatus(id, next, pr, next == "FINISHED" ? "Fixed the pool" : null);
            var run = RunOfRepository(repository);
            var body = HandoffInvariants.CursorStatusChange(id, next, pr, repository, agent["target"]!["branchName"]?.GetValue<string>());
            var delivery = random.Next(4); // 0 none (lost), 1 now, 2 now twice concurrently, 3 later
            Note($"provider {id} {current}->{next}{(pr is null ? "" : " pr")} webhook={new[] { "lost", "now", "twice", "later" }[delivery]}");
            switch (delivery)
            {
                case 1:
                    return Webhook(run, body);
                case 2:
                    return Task.WhenAll(Webhook(run, body), Webhook(run, body));
                case 3:
                    lock (gate)
                    {
                        pendingWebhooks.Add((run, body));
                    }

                    return Task.CompletedTask;
                default:
                    return Task.CompletedTask;
            }
        }

        private Task DeliverPendingWebhookAsync()
        {
            (long Run, string Body) hook;
            lock (gate)
            {
                if (pendingWebhooks.Count == 0)
                {
                    return Task.CompletedTask;
                }

                var index = random.Next(pendingWebhooks.Count);
                hook = pendingWebhooks[index];
                // Sometimes kept, to be delivered again later (Cursor resends on non-2xx, and duplicates happen).
                if (random.Next(3) != 0)
                {
                    pendingWebhooks.RemoveAt(index);
                }
            }

            Note($"deliver late webhook run {hook.Run}");
            return Webhook(hook.Run, hook.Body);
        }

        private Task Webhook(long run, string body) =>
            Call($"webhook {run}", c =>
            {
                var request = new HttpRequestMessage(HttpMethod.Post, $"/webhooks/cursor/42?run_id={run}")
                {
                    Content = new StringContent(body, Encoding.UTF8, "application/json"),
                };
                request.Headers.Add("X-Webhook-Signature", WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(body)));
                request.Headers.Add("X-Webhook-ID", Guid.NewGuid().ToString());
                request.Headers.Add("X-Webhook-Event", "statusChange");
                return c.SendAsync(request);
            }, overlapsRestart: false, expect: s => s is 200 or 204);

        private async Task AdvanceAsync(TimeSpan by)
        {
            Note($"advance {by}");
            time.Advance(by);
            await RunDueAsync();
        }

        private async Task RunDueAsync(bool overlapsRestart = false)
        {
            var f = Factory;
            try
            {
                await f.Scheduler.RunDueAsync(CancellationToken.None);
            }
            catch (Exception exception) when (overlapsRestart)
            {
                Note($"  RunDueAsync across restart: {exception.GetType().Name}");
            }
        }

        private sealed record Answer(int Status, string Body);

        private async Task<Answer?> Call(string label, Func<HttpClient, Task<HttpResponseMessage>> send, bool overlapsRestart, Func<int, bool> expect)
        {
            var epoch = Volatile.Read(ref restartEpoch);
            var c = client!;
            HttpResponseMessage response;
            string body;
            try
            {
                response = await send(c);
                body = await response.Content.ReadAsStringAsync();
            }
            catch (Exception exception) when (overlapsRestart || epoch != Volatile.Read(ref restartEpoch))
            {
                Note($"  {label}: {exception.GetType().Name} across restart");
                return null;
            }

            var status = (int)response.StatusCode;
            var crossed = overlapsRestart || epoch != Volatile.Read(ref restartEpoch);
            Note($"  {label} -> {status}");
            CheckLeak($"{label} answer {status}", body);
            if (!expect(status) && !(crossed && status == 503))
            {
                Violation($"{label}: unexpected {status}: {HandoffInvariants.Truncate(body)}");
            }

            return new Answer(status, body);
        }

        private void CheckLeak(string where, string text) => HandoffInvariants.CheckNoLeak(where, text, Violation, EmbeddedServiceFactory.ApiKey, Secret);

        private void Violation(string message)
        {
            lock (gate)
            {
                Violations.Add(message);
            }
        }

        private Task<JsonObject?> ViewAsync(long run) => HandoffInvariants.ReadViewAsync(client!, run, string.Empty, CheckLeak, Violation);

        private async Task<bool> LaunchesSettledAsync()
        {
            foreach (var run in runs)
            {
                if (await ViewAsync(run) is { } view && HandoffInvariants.HasUnsettledLaunch(view))
                {
                    return false;
                }
            }

            return true;
        }

        private async Task<bool> NothingScheduledAsync()
        {
            foreach (var run in runs)
            {
                if (await Factory.Store.GetWakeupAsync(run, CancellationToken.None) is not null)
                {
                    return false;
                }
            }

            return true;
        }

        private async Task SettleLaunchesAsync(string phase)
        {
            for (var round = 0; round < 60; round++)
            {
                await RunDueAsync();
                if (await LaunchesSettledAsync())
                {
                    return;
                }

                time.Advance(TimeSpan.FromMinutes(31));
            }

            Violation($"{phase}: launches still pending after 60 × 31 min");
        }

        private async Task FinishAsync()
        {
            Note("--- finish");
            cursor.Chaos(0, 0, TimeSpan.Zero);
            cursor.NextCommandAnswer = null;
            await SettleLaunchesAsync("before final trigger");

            // A completion event never relaunches; only a person's trigger starts another generation.
            foreach (var run in runs)
            {
                if (await ViewAsync(run) is not { } view)
                {
                    continue;
                }

                var byRepo = view["launches"]!.AsArray().GroupBy(l => l!["repository"]!.GetValue<string>());
                foreach (var group in byRepo)
                {
                    var generations = group.Max(l => l!["generation"]!.GetValue<int>());
                    if (generations > 1 + manualTriggers[run])
                    {
                        Violation($"run {run} {group.Key}: {generations} generations with {manualTriggers[run]} manual triggers");
                    }
                }
            }

            // The latest solution is handed off by a person's trigger: all of its repositories must end somewhere.
            foreach (var run in runs)
            {
                Note($"final trigger run {run} v3");
                await Call($"final trigger {run}", c => c.PostJsonAsync($"/runs/{run}/handoff", Payloads.Trigger(versions[run][2])), false, s => s == 202);
                manualTriggers[run]++;
            }

            await SettleLaunchesAsync("after final trigger");

            // The provider ends every agent; the poll (no webhooks) must bring the views in line.
            foreach (var (id, agent) in cursor.Agents.OrderBy(a => a.Key))
            {
                if (agent["status"]!.GetValue<string>() is "CREATING" or "RUNNING")
                {
                    var repository = agent["source"]!["repository"]!.GetValue<string>();
                    if (random.Next(3) == 0)
                    {
                        cursor.SetStatus(id, "ERROR");
                    }
                    else
                    {
                        cursor.SetStatus(id, "FINISHED", $"{repository}/pull/{Interlocked.Increment(ref prCounter)}", "Fixed");
                    }
                }
            }

            var quiet = false;
            for (var round = 0; round < 80 && !quiet; round++)
            {
                time.Advance(TimeSpan.FromMinutes(31));
                await RunDueAsync();
                quiet = await NothingScheduledAsync() && await LaunchesSettledAsync();
            }

            if (!quiet)
            {
                foreach (var run in runs)
                {
                    var due = await Factory.Store.GetWakeupAsync(run, CancellationToken.None);
                    if (due is not null)
                    {
                        Violation($"run {run}: still scheduled at {due:O} (now {time.GetUtcNow():O}) after 80 × 31 min with every agent ended at the provider: {HandoffInvariants.Truncate((await ViewAsync(run))?.ToJsonString() ?? "")}");
                    }
                }
            }

            // Restart once more: the stored views must survive and agree.
            if (random.Next(2) == 0)
            {
                Note("final restart");
                await RestartAsync();
            }

            await CheckFinalAsync();
        }

        private static string? Expected(string providerStatus) => providerStatus switch
        {
            "CREATING" => "pending",
            "RUNNING" => "running",
            "FINISHED" => "completed",
            "ERROR" or "EXPIRED" or "STOPPED" => "failed",
            _ => null,
        };

        private async Task CheckFinalAsync()
        {
            foreach (var run in runs)
            {
                var view = await ViewAsync(run);
                if (view is null)
                {
                    Violation($"run {run}: no view after the final trigger");
                    continue;
                }

                var agents = view["coding_agents"]!.AsObject();
                var launches = view["launches"]!.AsArray().Select(l => l!.AsObject()).ToList();

                HandoffInvariants.CheckLaunches(run, view, versions[run][2], Violation);

                // Provider agents of this run = coding_agents; each agent belongs to one launch.
                var atProvider = cursor.Agents.Where(a => RunOfRepository(a.Value["source"]!["repository"]!.GetValue<string>()) == run).ToDictionary(a => a.Key, a => a.Value);
                foreach (var (id, agent) in atProvider)
                {
                    if (!agents.ContainsKey(id))
                    {
                        Violation($"run {run}: provider agent {id} ({agent["source"]!["repository"]}, branch {agent["target"]!["branchName"]}) is not tracked; launches: {string.Join(", ", launches.Where(l => "https://github.com/" + l["repository"]!.GetValue<string>() == agent["source"]!["repository"]!.GetValue<string>()).Select(l => l.ToJsonString()))}");
                    }
                }

                foreach (var twin in atProvider.Values.GroupBy(a => (a["source"]!["repository"]!.GetValue<string>(), a["target"]!["branchName"]?.GetValue<string>())).Where(g => g.Count() > 1))
                {
                    Violation($"run {run}: {twin.Count()} agents at the provider for {twin.Key}");
                }

                foreach (var (id, node) in agents)
                {
                    var owners = launches.Count(l => l["agent_id"]?.GetValue<string>() == id);
                    if (owners != 1)
                    {
                        Violation($"run {run}: agent {id} is owned by {owners} launches");
                    }

                    if (!atProvider.TryGetValue(id, out var agent))
                    {
                        Violation($"run {run}: agent {id} in coding_agents was never created at the provider");
                        continue;
                    }

                    var providerStatus = agent["status"]!.GetValue<string>();
                    var expected = Expected(providerStatus);
                    var actual = node!["status"]!.GetValue<string>();
                    // A status never moves backwards: a finished agent later stopped stays completed.
                    var allowed = actual == expected || (actual == "completed" && providerStatus == "STOPPED");
                    if (!allowed)
                    {
                        Violation($"run {run}: agent {id} is {actual} in the view, {providerStatus} at the provider");
                    }

                    if (actual == "completed" && providerStatus == "FINISHED")
                    {
                        var prUrl = agent["target"]!["prUrl"]?.GetValue<string>();
                        var shown = node["results"]!.AsArray().Select(r => r!["pr_url"]?.GetValue<string>()).FirstOrDefault(p => p is not null);
                        if (prUrl is not null && shown != prUrl)
                        {
                            Violation($"run {run}: agent {id} shows PR {shown ?? "none"}, provider has {prUrl}");
                        }
                    }
                }
            }

            // The list of runs must not leak either.
            var list = await client!.GetAsync("/runs?limit=200");
            CheckLeak("GET /runs", await list.Content.ReadAsStringAsync());
        }

        public async ValueTask DisposeAsync()
        {
            if (Violations.Count > 0)
            {
                output.WriteLine($"seed {seed}: {Violations.Count} violations");
            }

            if (factory is not null)
            {
                await factory.DisposeAsync();
            }

            cursor.Dispose();
            temp.Dispose();
        }
    }
}
