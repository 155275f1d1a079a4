using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using WireMock;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Types;
using WireMock.Util;
using Xunit.Abstractions;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>What a randomized embedded test does at a step, drawn by weight.</summary>
internal enum RandomOperation
{
    Event,
    Trigger,
    StopOrFollowup,
    ProviderProgress,
    LateWebhook,
    AdvanceClock,
    ProviderFault,
    StopOrStart,
    StopWhileLaunchHeld,
    Duel,
    ConcurrentBatch,
    Sweep,
}

/// <param name="Processes">Embedded processes on the one data file (1 or 2).</param>
/// <param name="Graces">The shutdown grace (<c>Handoff:Embedded:ProviderCallGrace</c>), one drawn per seed.</param>
/// <param name="RequestTimeout">The provider calls' timeout: short, so that slow answers time out; or longer than any hold.</param>
/// <param name="Chaos">Whether faults include the fake Cursor's chaos (failures, and answers slower than the timeout).</param>
/// <param name="Retention"><c>Handoff:RunRetention</c>, or null to keep every run (no run is then ever deleted).</param>
internal sealed record RandomProfile(
    string Name, int Processes, string[] Graces, string RequestTimeout, bool Chaos, int MinOperations, int MaxOperations, (RandomOperation Operation, int Weight)[] Mix,
    TimeSpan? Retention = null);

/// <summary>
/// The seeded randomized test of embedded mode, one process or two on ONE SQLite file (a hand-over): runs of three
/// evolving snapshots (a quarter of them on Copilot); completion events (raw or CloudEvent; once, twice, concurrently,
/// on either process), manual triggers, stops and follow-ups (Cursor's resume an agent that ended), signed webhooks
/// (lost, late, repeated), provider faults, the clock and each process's schedule, processes stopped and started again
/// at random moments, also while a launch round is held at the provider (the agent created before the stop, during the
/// grace, after it, or never). After every operation each running process's view of each run is the run as the data
/// file holds it (the view saved with the state is sent as stored). Then everything is settled and the design's
/// invariants are checked. The processes share one clock (one machine, one wall clock), never advanced while a launch
/// is held: a held call ends well inside <c>InFlightTimeout</c>, as the design presumes. A failure prints the seed,
/// what broke and the operations in order; each seed's counters go to the output.
/// </summary>
internal sealed partial class RandomizedEmbeddedHarness : IAsyncDisposable
{
    public const string Secret = "webhook-secret-of-integration-42-0123456789";

    /// <summary>One process, restarted at random; provider calls time out at 0.8 s and chaos makes some answers slower.</summary>
    public static readonly RandomProfile OneProcess = new(
        "one process", 1, ["00:00:00", "00:00:00.300", "00:00:02"], "00:00:00.800", Chaos: true, 5, 30,
        [
            (RandomOperation.Event, 25), (RandomOperation.Trigger, 10), (RandomOperation.StopOrFollowup, 7),
            (RandomOperation.ProviderProgress, 13), (RandomOperation.LateWebhook, 7), (RandomOperation.AdvanceClock, 13),
            (RandomOperation.ProviderFault, 8), (RandomOperation.StopOrStart, 7), (RandomOperation.ConcurrentBatch, 10),
        ]);

    /// <summary>Two processes on one file: duels on one run, and stops while a launch is held (calls time out at 8 s, after any hold).</summary>
    public static readonly RandomProfile TwoProcesses = new(
        "two processes", 2, ["00:00:00", "00:00:00.200", "00:00:00.600"], "00:00:08", Chaos: false, 10, 30,
        [
            (RandomOperation.Event, 18), (RandomOperation.Trigger, 10), (RandomOperation.StopOrFollowup, 5),
            (RandomOperation.ProviderProgress, 10), (RandomOperation.LateWebhook, 5), (RandomOperation.AdvanceClock, 10),
            (RandomOperation.ProviderFault, 5), (RandomOperation.StopOrStart, 7), (RandomOperation.StopWhileLaunchHeld, 12),
            (RandomOperation.Duel, 10), (RandomOperation.ConcurrentBatch, 8),
        ]);

    /// <summary>
    /// <see cref="OneProcess"/> with <c>Handoff:RunRetention</c> set (1 hour): sweeps (<see cref="RandomOperation.Sweep"/>)
    /// after clock moves past it or short of it, on their own or meeting an event, trigger or webhook of a run they may delete;
    /// and the schedule's own sweep every 10 minutes of the clock. Deleted runs are then sent events, triggers, webhooks.
    /// </summary>
    public static readonly RandomProfile OneProcessWithRetention = OneProcess with
    {
        Name = "one process, retention", Retention = TimeSpan.FromHours(1), Mix = [.. OneProcess.Mix, (RandomOperation.Sweep, 14)],
    };

    /// <summary><see cref="TwoProcesses"/> with retention, as <see cref="OneProcessWithRetention"/>: a sweep in either process, or both at once.</summary>
    public static readonly RandomProfile TwoProcessesWithRetention = TwoProcesses with
    {
        Name = "two processes, retention", Retention = TimeSpan.FromHours(1), Mix = [.. TwoProcesses.Mix, (RandomOperation.Sweep, 12)],
    };

    /// <summary>Seeds from the environment (<paramref name="fromVariable"/>, <paramref name="countVariable"/>), 1..<paramref name="defaultCount"/> by default.</summary>
    public static IEnumerable<object[]> Seeds(string fromVariable, string countVariable, int defaultCount = 12)
    {
        var from = int.TryParse(Environment.GetEnvironmentVariable(fromVariable), out var f) ? f : 1;
        var count = int.TryParse(Environment.GetEnvironmentVariable(countVariable), out var c) ? c : defaultCount;
        return Enumerable.Range(from, count).Select(seed => new object[] { seed });
    }

    /// <summary>Runs one seed; fails with its violations and the operations in order.</summary>
    public static async Task CheckAsync(int seed, RandomProfile profile, ITestOutputHelper output)
    {
        await using var harness = new RandomizedEmbeddedHarness(seed, profile, output);
        await harness.RunAsync();
        Assert.True(harness.Violations.Count == 0, $"seed {seed} ({profile.Name}):\n" + string.Join("\n", harness.Violations) + "\n--- ops:\n" + harness.TraceText);
    }

    private sealed class Proc(string name)
    {
        public string Name { get; } = name;
        public EmbeddedServiceFactory? Factory;
        public HttpClient? Client;
        public int Epoch;
        public bool Running => Factory is not null;
    }

    /// <summary>
    /// Launches of one run wait at the provider until released; then the agent is created, or not. They wait without
    /// a thread: the stop, its grace and the callers' timeouts they are held across need the thread pool.
    /// </summary>
    private sealed class Hold(string match)
    {
        public string Match { get; } = match;
        public TaskCompletionSource Arrived { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource Released { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public volatile bool Create = true;
        public int Count;
    }

    private readonly int seed;
    private readonly RandomProfile profile;
    // Concurrent operations draw from it too (System.Random is not thread-safe).
    private readonly LockedRandom random;
    private readonly LockedRandom webhookOmissions;
    private readonly ITestOutputHelper output;
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new() { FollowupResumes = true, RefusesStopOfEnded = true };
    private readonly FakeCopilot github = new();
    private readonly UnservedRequests unservedLaunches;
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
    private readonly Dictionary<string, string?> settings;
    private readonly Proc[] procs;
    private readonly List<long> runs = [];
    private readonly HashSet<long> copilotRuns = [];
    private readonly Dictionary<long, JsonObject[]> versions = [];
    private readonly Dictionary<long, int> manualTriggers = [];
    private readonly List<(long Run, string Body)> pendingWebhooks = [];
    private readonly object gate = new();
    private volatile Hold? hold;
    private bool commandFaultsInjected;
    private bool chaosInjected;
    private int prCounter;

    // When the provider ended each agent (the harness's doing): an agent the service had given up on is watched for
    // 2 × AgentMaxAge from its start or its last follow-up only, so an end after that is never seen, as documented.
    private readonly ConcurrentDictionary<string, DateTimeOffset> endedAtProvider = new();
    private static readonly TimeSpan AgentMaxAge = TimeSpan.FromHours(2);
    private static readonly TimeSpan GivenUpWatch = 2 * AgentMaxAge;
    private static readonly TimeSpan LongestPollInterval = TimeSpan.FromMinutes(15); // Launch:PollMaxInterval's default

    // Cursor agents the provider showed finished at some time: a status never moves backwards, so one the run learnt
    // completed stays so when a follow-up resumed it and it then ended otherwise.
    private readonly ConcurrentDictionary<string, bool> finishedAtProvider = new();

    // When each agent appeared at the provider, on the test clock (the fakes' own creation times are on the real clock).
    private readonly ConcurrentDictionary<string, DateTimeOffset> createdAtProvider = new();

    // When the last follow-up that may have been taken (200 or 504) was sent, on the test clock, read before the call
    // so never after the service's: the service watches an agent followed up for 2 × AgentMaxAge from then.
    private readonly ConcurrentDictionary<string, DateTimeOffset> followedUpAt = new();

    /// <summary>
    /// Moves the clock once the fakes have carried out every launch sent to them: past a retry's delay the next attempt
    /// looks for the agent a lost answer's launch made, which a real provider made long before then.
    /// </summary>
    private async Task StepClockAsync(TimeSpan by)
    {
        await ProviderCallsEndedAsync();
        StepClock(by);
    }

    /// <summary>Every clock step goes through here: agents created since the last step were created at the time it leaves.</summary>
    private void StepClock(TimeSpan by)
    {
        foreach (var id in cursor.Agents.Keys.Concat(github.Tasks.Keys))
        {
            createdAtProvider.TryAdd(id, time.GetUtcNow());
        }

        time.Advance(by);
    }

    /// <summary>
    /// The provider ended the agent once the service's watch of a given-up agent was over, or too near its end for a
    /// poll to see: counted from its start, or from its last follow-up (docs/api.md, "How long agents are polled").
    /// </summary>
    private bool EndedAfterItsWatch(string agentId) =>
        endedAtProvider.TryGetValue(agentId, out var ended) && createdAtProvider.TryGetValue(agentId, out var created)
        && ended > (followedUpAt.TryGetValue(agentId, out var since) && since > created ? since : created)
            + GivenUpWatch - LongestPollInterval;
    private readonly string grace;

    // Counters for the report.
    private int operations, restarts, heldRestarts, createdAfterStop, neverCreated, createdBeforeStop, answers503, uncrossed503, crossProcessOps;

    public List<string> Violations { get; } = [];
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

    private readonly Stopwatch clock = Stopwatch.StartNew();

    private void Note(string line)
    {
        lock (gate)
        {
            trace.Add($"[{clock.ElapsedMilliseconds,6} ms] {line}");
        }
    }

    private RandomizedEmbeddedHarness(int seed, RandomProfile profile, ITestOutputHelper output)
    {
        this.seed = seed;
        this.profile = profile;
        this.output = output;
        random = new LockedRandom(seed);
        webhookOmissions = new LockedRandom(unchecked(seed * 7919 + 3));
        procs = [.. new[] { "A", "B" }.Take(profile.Processes).Select(name => new Proc(name))];
        grace = profile.Graces[random.Next(profile.Graces.Length)];
        settings = new Dictionary<string, string?>
        {
            ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
            ["Handoff:Integrations:42:WebhookSecret"] = Secret,
            ["Handoff:Integrations:42:RequestTimeout"] = profile.RequestTimeout,
            ["Handoff:Integrations:43:Provider"] = "github_copilot_agent",
            ["Handoff:Integrations:43:BaseUrl"] = github.Url,
            ["Handoff:Integrations:43:RequestTimeout"] = profile.RequestTimeout,
            ["Handoff:Launch:AgentMaxAge"] = AgentMaxAge.ToString(),
            ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "100000",
            ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "100000",
            ["Handoff:Embedded:ProviderCallGrace"] = grace,
        };
        if (profile.Retention is { } retention)
        {
            settings["Handoff:RunRetention"] = retention.ToString();
        }

        Note($"grace={grace}{(profile.Retention is { } r ? $" retention={r}" : "")}");

        var fakes = new[] { new Uri(cursor.Url).Port, new Uri(github.Url).Port };
        unservedLaunches = new UnservedRequests(request => request.Method == HttpMethod.Post && request.RequestUri is { } uri
            && fakes.Contains(uri.Port) && (uri.AbsolutePath == "/v0/agents" || uri.AbsolutePath.EndsWith("/tasks", StringComparison.Ordinal)));

        // Held launches: one mapping above FakeCursor's and FakeCopilot's own, passing through to them when nothing is held.
        Func<IRequestMessage, Task<ResponseMessage>> cursorLaunch = cursor.LaunchAsync;
        Func<IRequestMessage, Task<ResponseMessage>> copilotCreate = request => Task.FromResult(github.Create(request));
        cursor.Server.Given(Request.Create().WithPath("/v0/agents").UsingPost()).AtPriority(-5)
            .RespondWith(Response.Create().WithCallback(async request => await HeldAsync(request, request.Body ?? "", cursorLaunch)));
        github.Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/agents/repos/[^/]+/[^/]+/tasks$")).UsingPost()).AtPriority(-5)
            .RespondWith(Response.Create().WithCallback(async request => await HeldAsync(request, request.Path, copilotCreate)));
    }

    private async Task<IResponseMessage> HeldAsync(IRequestMessage request, string text, Func<IRequestMessage, Task<ResponseMessage>> pass)
    {
        // Until disposed the launch counts as not yet carried out (its agent is not in the fake's state yet).
        using var serving = unservedLaunches.Serve(request);
        if (serving.Lost)
        {
            // Sent before the clock moved on and unserved until after: lost on the way, as no real provider is so late.
            return Json(503, "{\"error\":\"lost, not created\"}");
        }

        var h = hold;
        if (h is null || !text.Contains(h.Match, StringComparison.Ordinal))
        {
            return await pass(request);
        }

        Interlocked.Increment(ref h.Count);
        h.Arrived.TrySetResult();
        await Task.WhenAny(h.Released.Task, Task.Delay(TimeSpan.FromSeconds(15)));
        return h.Create ? await pass(request) : Json(503, "{\"error\":\"held, not created\"}");
    }

    /// <summary>
    /// Waits (up to 10 s) until every launch sent to a fake provider is carried out there. A process that stopped
    /// gave up on its calls, but the fake still carries them out on threads of its own: a process started before then
    /// would look for their agents too early, not find them and launch a second one, which no real provider does a
    /// timeout later (the harness's clock has moved by then; the fake's threads have not). A launch the fake has not
    /// even begun after 5 s is lost.
    /// </summary>
    private async Task ProviderCallsEndedAsync()
    {
        var waited = Stopwatch.StartNew();
        var lost = await unservedLaunches.WaitUntilServedAsync(TimeSpan.FromSeconds(5));
        if (lost > 0)
        {
            Note($"  {lost} launch(es) sent but not served after {waited.ElapsedMilliseconds} ms: lost");
        }

        while (unservedLaunches.Unfinished > 0 && waited.ElapsedMilliseconds < 10_000)
        {
            await Task.Delay(5);
        }

        if (unservedLaunches.Unfinished > 0)
        {
            Note($"  provider calls still under way after {waited.ElapsedMilliseconds} ms");
        }
    }

    private static ResponseMessage Json(int status, string body) => new()
    {
        StatusCode = status,
        Headers = new Dictionary<string, WireMockList<string>> { ["Content-Type"] = new("application/json") },
        BodyData = new BodyData { BodyAsString = body, DetectedBodyType = BodyType.String, Encoding = Encoding.UTF8 },
    };

    private void Start(Proc p)
    {
        p.Factory = new EmbeddedServiceFactory(temp.File("shared.db"), cursor.Url, time, settings);
        p.Client = p.Factory.CreateClient();
        Note($"start {p.Name}");
    }

    /// <summary>
    /// Stops the process. The shutdown grace runs on the (shared, fake) clock: once shutdown has begun the clock is
    /// moved through the grace, as the wall clock would move (by at most 0.6 s, far inside InFlightTimeout).
    /// <paramref name="duringGrace"/> runs after shutdown began and before the grace is over. Like Kestrel, which lets
    /// the requests it is serving end before the app's services go away, the stop waits for <paramref name="serving"/>
    /// (a request that reached the test server late, after the drain looked, would otherwise meet disposed services:
    /// the test server does not wait for its requests).
    /// </summary>
    private async Task StopAsync(Proc p, Func<Task>? duringGrace = null, Task? serving = null)
    {
        var old = p.Factory!;
        var lifetime = old.Services.GetRequiredService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>();
        Interlocked.Increment(ref p.Epoch);
        p.Factory = null;
        p.Client = null;
        Interlocked.Increment(ref restarts);
        // SIGTERM: the host begins shutdown (ApplicationStopping arms the grace), then the process goes away.
        var waited = Stopwatch.StartNew();
        lifetime.StopApplication();
        await Task.Delay(20);
        if (duringGrace is not null)
        {
            await duringGrace();
        }

        StepClock(TimeSpan.Parse(grace, CultureInfo.InvariantCulture) + TimeSpan.FromMilliseconds(1));
        while (!lifetime.ApplicationStopped.IsCancellationRequested && waited.ElapsedMilliseconds < 15000)
        {
            await Task.Delay(10);
        }

        if (serving is not null)
        {
            await Task.WhenAny(serving, Task.Delay(TimeSpan.FromSeconds(5)));
        }

        await old.DisposeAsync();
        Note($"stopped {p.Name} ({waited.ElapsedMilliseconds} ms)");
        if (hold is null)
        {
            // A held stop releases its launches after this, and waits for them then.
            await ProviderCallsEndedAsync();
        }
    }

    private Proc AnyRunning()
    {
        var running = procs.Where(p => p.Running).ToArray();
        return running[random.Next(running.Length)];
    }

    /// <summary>The other process if it is running, else <paramref name="p"/> itself.</summary>
    private Proc Other(Proc p) => procs.FirstOrDefault(q => q != p && q.Running) ?? p;

    private static string Repo(long run, int k) => $"run{run}/svc{k}";

    private static long RunOfRepository(string repositoryUrl) => long.Parse(repositoryUrl.Split('/')[^2]["run".Length..]);

    private long IntegrationOf(long run) => copilotRuns.Contains(run) ? EmbeddedServiceFactory.CopilotIntegrationId : EmbeddedServiceFactory.IntegrationId;

    private async Task RunAsync()
    {
        foreach (var p in procs)
        {
            Start(p);
        }

        InstallDeleteAudit();
        var runCount = random.Next(2, 5);
        for (var i = 0; i < runCount; i++)
        {
            var run = 1000L + i;
            runs.Add(run);
            manualTriggers[run] = 0;
            var copilot = random.Next(4) == 0;
            if (copilot)
            {
                copilotRuns.Add(run);
            }

            string[] Pick() => Enumerable.Range(1, 4).Where(_ => random.Next(2) == 0).Select(k => Repo(run, k)).DefaultIfEmpty(Repo(run, 1)).ToArray();
            var v1 = Payloads.Run(run, Pick());
            var v2 = Payloads.Run(run, Pick());
            v2["artifacts"]!["root_cause"]!["one_line_description"] = "Pool exhausted under load (v2)";
            var v3 = Payloads.Run(run, Pick(), withSolution: true);
            versions[run] = [v1, v2, v3];
            if (copilot)
            {
                foreach (var v in versions[run])
                {
                    v["preferences"]!["automation_handoff"]!["target"] = "github_copilot_agent";
                    v["preferences"]!["automation_handoff"]!["integration_id"] = EmbeddedServiceFactory.CopilotIntegrationId;
                }
            }

            Note($"run {run}: {(copilot ? "copilot" : "cursor")}; v1 {Repos(v1)}; v2 {Repos(v2)}; v3 {Repos(v3)}");
        }

        var count = random.Next(profile.MinOperations, profile.MaxOperations + 1);
        for (var op = 0; op < count; op++)
        {
            Interlocked.Increment(ref operations);
            await OneOperationAsync();
            ObserveDeletions();
            await CheckViewsAgreeWithStoreAsync();
        }

        await FinishAsync();
    }

    private static string Repos(JsonObject v) => string.Join(",", v["preferences"]!["repositories"]!.AsArray().Select(r => $"{r!["owner"]}/{r["name"]}"));

    private async Task OneOperationAsync()
    {
        var pick = random.Next(profile.Mix.Sum(entry => entry.Weight));
        var operation = profile.Mix.First(entry => (pick -= entry.Weight) < 0).Operation;
        switch (operation)
        {
            case RandomOperation.Event:
                await EventAsync(AnyRunning());
                break;
            case RandomOperation.Trigger:
                await TriggerAsync(AnyRunning(), random.Next(3) == 0 ? null : random.Next(3));
                break;
            case RandomOperation.StopOrFollowup:
                await StopOrFollowupAsync(AnyRunning(), stop: random.Next(2) == 0, alone: true);
                break;
            case RandomOperation.ProviderProgress:
                await ProgressAsync();
                break;
            case RandomOperation.LateWebhook:
                await DeliverPendingWebhookAsync();
                break;
            case RandomOperation.AdvanceClock:
                await AdvanceAsync(TimeSpan.FromSeconds(random.Next(1, 2400)));
                break;
            case RandomOperation.ProviderFault:
                InjectFault();
                break;
            case RandomOperation.StopOrStart:
                await StopOrStartAsync();
                break;
            case RandomOperation.StopWhileLaunchHeld:
                await HeldStopAsync();
                break;
            case RandomOperation.Duel:
                await DuelAsync();
                break;
            case RandomOperation.Sweep:
                await SweepStepAsync();
                break;
            default:
                await ConcurrentBatchAsync();
                break;
        }
    }

    private async Task StopOrStartAsync()
    {
        if (procs.All(p => p.Running))
        {
            var p = procs[random.Next(procs.Length)];
            // Something may be under way on it (a round, a wake-up, an event) when it stops.
            Task? background = random.Next(4) switch
            {
                0 => TriggerAsync(p, random.Next(3), overlapsRestart: true),
                1 => RunDueAsync(p, overlapsRestart: true),
                2 => EventAsync(p, overlapsRestart: true),
                _ => null,
            };
            if (background is not null)
            {
                await Task.Delay(random.Next(0, 300));
            }

            Note($"stop {p.Name}");
            await StopAsync(p, serving: background);
            await Swallow(background);
            if (procs.Length == 1)
            {
                // The only process: a restart.
                Start(p);
            }
        }
        else
        {
            Start(procs.First(p => !p.Running));
        }
    }

    /// <summary>A process stops while a launch round of one run is held at the provider.</summary>
    private async Task HeldStopAsync()
    {
        var p = procs.All(q => q.Running) ? procs[random.Next(procs.Length)] : procs.First(q => q.Running);
        var other = procs.FirstOrDefault(q => q != p);
        // Prefer a run and snapshot with a repository that has no agent yet, so the round really reaches the provider.
        var fresh = runs.SelectMany(r => Enumerable.Range(0, 3).Where(v => Repositories(versions[r][v]).Any(repo => !HasAgent(r, repo))).Select(v => (r, v))).ToList();
        var (run, version) = fresh.Count > 0 && random.Next(5) != 0 ? fresh[random.Next(fresh.Count)] : (runs[random.Next(runs.Count)], random.Next(3));
        var copilot = copilotRuns.Contains(run);
        var h = new Hold(copilot ? $"/agents/repos/run{run}/" : $"github.com/run{run}/");
        var release = random.Next(4); // 0 before the stop, 1 during the grace, 2 after the stop (created), 3 after the stop (never created)
        h.Create = release != 3;
        hold = h;
        Note($"hold launches of run {run} on {p.Name}; release={new[] { "before-stop", "during-grace", "after-stop", "after-stop-no-agent" }[release]}");
        Task background = random.Next(3) switch
        {
            0 => TriggerAsync(p, version, overlapsRestart: true, run: run),
            1 => EventThenScheduleAsync(p, run, version),
            _ => RunDueAsync(p, overlapsRestart: true),
        };
        await Task.WhenAny(h.Arrived.Task, Task.Delay(TimeSpan.FromMilliseconds(random.Next(2) == 0 ? 400 : 900)));
        var arrived = h.Arrived.Task.IsCompleted;
        Note($"  held launches arrived: {arrived} ({Volatile.Read(ref h.Count)})");

        // Meanwhile the other process is asked about the same run (no clock advance while held).
        Task? meanwhile = null;
        if (arrived && other is { Running: true } && random.Next(2) == 0)
        {
            Interlocked.Increment(ref crossProcessOps);
            meanwhile = random.Next(4) switch
            {
                0 => TriggerAsync(other, random.Next(3) == 0 ? null : random.Next(3), run: run),
                1 => EventAsync(other, run: run),
                2 => RunDueAsync(other),
                _ => Task.WhenAll(EventAsync(other, run: run), RunDueAsync(other)),
            };
        }

        if (release == 0)
        {
            h.Released.TrySetResult();
            await Task.Delay(random.Next(0, 50));
        }

        if (arrived)
        {
            Interlocked.Increment(ref heldRestarts);
            _ = release switch { 0 => Interlocked.Increment(ref createdBeforeStop), 3 => Interlocked.Increment(ref neverCreated), _ => Interlocked.Increment(ref createdAfterStop) };
        }

        Note($"stop {p.Name} (held)");
        await StopAsync(p, release == 1 ? async () =>
        {
            await Task.Delay(random.Next(0, 100));
            h.Released.TrySetResult();
            await Task.Delay(random.Next(0, 100));
        } : null, serving: background);
        h.Released.TrySetResult();
        await Swallow(background);
        await Swallow(meanwhile);
        hold = null;
        // A released call (answered into a stopped process) reaches the fake provider's state before anything else runs.
        await ProviderCallsEndedAsync();
        if (other is null)
        {
            Start(p);
        }
        else if (!other.Running)
        {
            // A hand-over: the other process takes over, or this one comes back.
            Start(random.Next(2) == 0 ? other : p);
        }
        else if (random.Next(3) != 0)
        {
            Start(p);
        }
    }

    private static IEnumerable<string> Repositories(JsonObject v) => v["preferences"]!["repositories"]!.AsArray().Select(r => $"{r!["owner"]}/{r["name"]}");

    private bool HasAgent(long run, string repo) => copilotRuns.Contains(run)
        ? github.Tasks.Values.Any(t => t["html_url"]!.GetValue<string>().Contains($"/{repo}/", StringComparison.Ordinal))
        : cursor.AgentsFor(repo) > 0;

    private async Task Swallow(Task? task)
    {
        if (task is null)
        {
            return;
        }

        try
        {
            await task;
        }
        catch (Exception exception)
        {
            Note($"  (background op ended with {exception.GetType().Name} across stop)");
        }
    }

    private async Task EventThenScheduleAsync(Proc p, long run, int version)
    {
        await EventAsync(p, overlapsRestart: true, run: run, once: true, version: version);
        await RunDueAsync(p, overlapsRestart: true);
    }

    /// <summary>Both processes act on the same run at once: the turns' saves meet.</summary>
    private async Task DuelAsync()
    {
        var run = runs[random.Next(runs.Count)];
        Note($"duel on run {run} {{");
        var tasks = new List<Task>();
        var n = random.Next(2, 5);
        for (var i = 0; i < n; i++)
        {
            var p = procs[i % procs.Length].Running ? procs[i % procs.Length] : AnyRunning();
            tasks.Add(random.Next(5) switch
            {
                0 or 1 => EventAsync(p, run: run, once: true),
                2 => TriggerAsync(p, random.Next(2) == 0 ? null : random.Next(3), run: run),
                3 => StopOrFollowupAsync(p, random.Next(2) == 0, run),
                _ => RunDueAsync(p),
            });
        }

        await Task.WhenAll(tasks);
        Note("}");
    }

    private async Task ConcurrentBatchAsync()
    {
        Note("batch {");
        var tasks = new List<Task>();
        var n = random.Next(2, 5);
        for (var i = 0; i < n; i++)
        {
            var p = AnyRunning();
            tasks.Add(random.Next(5) switch
            {
                0 => EventAsync(p),
                1 => TriggerAsync(p, random.Next(2) == 0 ? null : random.Next(3)),
                2 => StopOrFollowupAsync(p, random.Next(2) == 0),
                3 => DeliverPendingWebhookAsync(),
                _ => RunDueAsync(p),
            });
        }

        await Task.WhenAll(tasks);
        Note("}");
    }

    private void InjectFault()
    {
        var run = runs[random.Next(runs.Count)];
        if (copilotRuns.Contains(run))
        {
            if (random.Next(2) == 0)
            {
                Note("fault copilot: next launch creates, answers 502");
                github.CreateButAnswerStatus = 502;
            }
            else
            {
                Note("fault copilot: next launch 503");
                github.NextLaunchAnswer = () => WireMockMessages.Json(503, """{"message":"Service Unavailable"}""");
            }

            return;
        }

        var repo = Repo(run, random.Next(1, 5));
        switch (random.Next(profile.Chaos ? 7 : 6))
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
                // Failures, and answers slower than the provider calls' timeout.
                var chaosSeed = random.Next();
                Note($"chaos seed {chaosSeed}");
                cursor.Chaos(chaosSeed, 0.3, TimeSpan.FromMilliseconds(1200));
                chaosInjected = true;
                break;
        }

        if (random.Next(6) == 0)
        {
            Note("fault: next stop/follow-up answer 500 garbage");
            commandFaultsInjected = true;
            cursor.NextCommandAnswer = () =>
            {
                cursor.NextCommandAnswer = null;
                return Json(500, "{\"error\": \"" + FakeCursor.ProviderSecretText + "\"");
            };
        }
    }

    private async Task EventAsync(Proc p, bool overlapsRestart = false, long? run = null, bool once = false, int? version = null)
    {
        var r = run ?? runs[random.Next(runs.Count)];
        var v = version ?? random.Next(3);
        await EventOfAsync(p, overlapsRestart, r, once, v);
    }

    private async Task EventOfAsync(Proc p, bool overlapsRestart, long r, bool once, int version)
    {
        var data = versions[r][version];
        var cloud = random.Next(2) == 0;
        var deleted = KnownDeleted(r);
        if (deleted)
        {
            // Taken and ignored (200, as checked below): that it launches nothing, the end finds (every agent of a deleted run is one its last row had).
            Interlocked.Increment(ref eventsOnDeleted);
        }

        var mode = once ? 0 : random.Next(4); // 0 once, 1 twice concurrently (on both processes), 2 twice in a row, 3 in a row on both
        Note($"event run {r} v{version + 1} {(cloud ? "cloud" : "raw")} on {p.Name} mode {mode}");
        Func<Proc, Task> one = q => Call(
            q,
            $"event {r} v{version + 1}",
            c => cloud
                ? c.PostJsonAsync("/events/autofix-run-completed", Payloads.CloudEvent(data), "application/cloudevents+json")
                : c.PostJsonAsync("/events/autofix-run-completed", data),
            overlapsRestart,
            expect: s => s == 200,
            deletedRun: deleted);
        switch (mode)
        {
            case 0:
                await one(p);
                break;
            case 1:
                await Task.WhenAll(one(p), one(Other(p)));
                break;
            case 2:
                await one(p);
                await one(p);
                break;
            default:
                await one(p);
                await one(Other(p));
                break;
        }
    }

    private async Task TriggerAsync(Proc p, int? version, bool overlapsRestart = false, long? run = null)
    {
        var r = run ?? runs[random.Next(runs.Count)];
        var body = Payloads.Trigger(version is { } v ? versions[r][v] : null, integrationId: IntegrationOf(r), instruction: random.Next(2) == 0 ? "Keep the API" : null);
        Note($"trigger run {r} {(version is { } w ? $"v{w + 1}" : "no snapshot")} on {p.Name}");
        lock (gate)
        {
            manualTriggers[r]++;
        }

        var wasDeleted = KnownDeleted(r);
        if (wasDeleted)
        {
            Interlocked.Increment(ref triggersOnDeleted);
        }

        var answer = await Call(p, $"trigger {r}", c => c.PostJsonAsync($"/runs/{r}/handoff", body), overlapsRestart, expect: s => wasDeleted ? s == 404 : s is 202 or 404, deletedRun: wasDeleted);
        if (answer is { Status: 404 } && CheckRunDeletedAnswer($"trigger {r}", r, wasDeleted, answer.Body))
        {
            // A run retention deleted: told so, whatever the body carried.
        }
        else if (answer is { Status: 202 } ok)
        {
            foreach (var failure in JsonNode.Parse(ok.Body)!["failures"]!.AsArray())
            {
                if (failure!["failure_type"] is null)
                {
                    Violation($"trigger {r}: failure without failure_type: {failure.ToJsonString()}");
                }
            }
        }
        else if (answer is { Status: 404 } && version is not null)
        {
            Violation($"trigger {r} with snapshot answered 404");
        }
    }

    /// <summary>
    /// How many stops and follow-ups of the agent the run's timeline shows sent (none while no process runs).
    /// </summary>
    private static async Task<int> CommandEntriesAsync(Proc p, long run, string agentId) =>
        p.Running && (await p.Factory!.Store.LoadAsync(run, CancellationToken.None)).State is { } state
            ? state.Timeline.Count(entry => entry.AgentId == agentId
                && entry.Event is HandoffDapr.Core.Handoff.TimelineEvents.Stopped or HandoffDapr.Core.Handoff.TimelineEvents.FollowupSent)
            : 0;

    // Agents a command outlived its answer for (a 504 by the request timeout): it may reach the fake only later.
    private readonly ConcurrentDictionary<string, bool> answeredLate = new();

    /// <param name="alone">
    /// No other step runs meanwhile: nothing but this command can move its agent at the provider.
    /// </param>
    private async Task StopOrFollowupAsync(Proc p, bool stop, long? only = null, bool alone = false)
    {
        var run = only ?? runs[random.Next(runs.Count)];
        var copilot = copilotRuns.Contains(run);
        var ids = copilot
            ? github.Tasks.Where(t => t.Value["html_url"]!.GetValue<string>().Contains($"/run{run}/", StringComparison.Ordinal)).Select(t => t.Key).Order().ToList()
            : cursor.Agents.Where(a => RunOfRepository(a.Value["source"]!["repository"]!.GetValue<string>()) == run).Select(a => a.Key).Order().ToList();
        var agentId = ids.Count == 0 || random.Next(8) == 0 ? "bc-ffffff" : ids[random.Next(ids.Count)];
        Note($"{(stop ? "stop" : "followup")} run {run} agent {agentId} on {p.Name}");
        var requestTimeout = TimeSpan.Parse(profile.RequestTimeout, CultureInfo.InvariantCulture);
        var started = Stopwatch.GetTimestamp();
        var sentAt = time.GetUtcNow();
        var refusedBefore = cursor.StopsRefused(agentId);
        // The service's own stops move only agents at work: one that ended stays so but for another step's follow-up.
        var endedBefore = !copilot && cursor.Agents.TryGetValue(agentId, out var atProvider) && FakeCursor.HasEnded(atProvider["status"]!.GetValue<string>());
        var entriesBefore = alone ? await CommandEntriesAsync(p, run, agentId) : 0;
        var answer = await Call(
            p,
            $"{(stop ? "stop" : "followup")} {run} {agentId}",
            c => stop ? c.PostAsync($"/runs/{run}/agents/{agentId}/stop", null) : c.PostJsonAsync($"/runs/{run}/agents/{agentId}/followup", new JsonObject { ["text"] = "Please also add a test" }),
            overlapsRestart: false,
            // The command's outcome is unknown (a 504 that says it may have been carried out) after the injected 500, or when
            // the call lasted the provider calls' timeout: on a loaded machine the fake can answer later than that.
            expect: s => s is 200 or 404 || (s == 409 && copilot)
                || (s == 504 && (commandFaultsInjected || Stopwatch.GetElapsedTime(started) >= requestTimeout))
                // Chaos's failed launches can open Cursor's circuit breaker (half of ten calls within 30 s): a command is
                // then refused unsent, a 502 saying the provider is unavailable.
                || (s == 502 && chaosInjected && !copilot)
                // Cursor refuses to stop an agent that ended (FakeCursor.RefusesStopOfEnded).
                || (s == 502 && stop && cursor.StopsRefused(agentId) != refusedBefore));
        if (!stop && answer is { Status: 200 or 504 })
        {
            followedUpAt.AddOrUpdate(agentId, sentAt, (_, earlier) => earlier > sentAt ? earlier : sentAt);
        }

        if (answer is { Status: 504 } && !answer.Body.Contains("/problems/outcome-unknown\"", StringComparison.Ordinal))
        {
            Violation($"{(stop ? "stop" : "followup")} {run} {agentId}: a 504 that is not the documented 'outcome unknown' problem: {HandoffInvariants.Truncate(answer.Body)}");
        }

        // Only a stop is refused: one counted during a follow-up is another step's stop, or the service's own.
        var refused = stop && cursor.StopsRefused(agentId) != refusedBefore;
        var answeredLateBefore = answeredLate.ContainsKey(agentId);
        if (Stopwatch.GetElapsedTime(started) >= requestTimeout)
        {
            answeredLate[agentId] = true;
        }

        // A command the provider refused changed nothing there: the run's timeline does not show it sent (more entries;
        // not fewer, which trimming a long timeline could make).
        if (alone && answer is { Status: 502 } && await CommandEntriesAsync(p, run, agentId) > entriesBefore)
        {
            Violation($"{(stop ? "stop" : "followup")} {run} {agentId}: a 502, yet the run's timeline shows the command sent");
        }

        if (alone && stop && endedBefore && !answeredLateBefore && answer is { Status: 200 })
        {
            Violation($"stop {run} {agentId}: 200 for an agent that had ended, whose stop the provider refuses: {HandoffInvariants.Truncate(answer.Body)}");
        }

        // Either 502 where both may be: in a batch another stop of the agent can be refused while the breaker turns
        // this command away unsent.
        if (answer is { Status: 502 }
            && !(refused && answer.Body.Contains("\"failure_type\":\"invalid_request\"", StringComparison.Ordinal))
            && !(chaosInjected && !copilot
                && answer.Body.Contains("\"failure_type\":\"provider_unavailable\"", StringComparison.Ordinal)))
        {
            Violation($"{(stop ? "stop" : "followup")} {run} {agentId}: a 502 that is not "
                + $"{(refused ? "the provider's refusal" : "the provider found unavailable")}: {HandoffInvariants.Truncate(answer.Body)}");
        }
    }

    private Task ProgressAsync()
    {
        var copilotCandidates = github.Tasks.Where(t => t.Value["state"]!.GetValue<string>() is "queued" or "in_progress").Select(t => t.Key).Order().ToList();
        if (copilotCandidates.Count > 0 && random.Next(3) == 0)
        {
            var taskId = copilotCandidates[random.Next(copilotCandidates.Count)];
            var task = github.Tasks[taskId];
            var state = task["state"]!.GetValue<string>();
            var next = state == "queued" ? (random.Next(4) == 0 ? "failed" : "in_progress") : (random.Next(4) == 0 ? "failed" : "completed");
            var url = task["html_url"]!.GetValue<string>();
            var repoPath = string.Join('/', url.Split('/')[3..5]);
            var pr = next == "completed" && random.Next(4) != 0 ? $"https://github.com/{repoPath}/pull/{Interlocked.Increment(ref prCounter)}" : null;
            Note($"copilot {taskId} {state}->{next}{(pr is null ? "" : " pr")}");
            github.SetState(taskId, next, pr);
            if (next is "failed" or "completed")
            {
                endedAtProvider[taskId] = time.GetUtcNow();
            }

            return Task.CompletedTask;
        }

        var candidates = cursor.Agents.Where(a => a.Value["status"]!.GetValue<string>() is "CREATING" or "RUNNING").Select(a => a.Key).Order().ToList();
        if (candidates.Count == 0)
        {
            return Task.CompletedTask;
        }

        var id = candidates[random.Next(candidates.Count)];
        var agent = cursor.Agents[id];
        var current = agent["status"]!.GetValue<string>();
        var nextStatus = current == "CREATING" ? (random.Next(4) == 0 ? "ERROR" : "RUNNING") : (random.Next(4) == 0 ? "ERROR" : "FINISHED");
        var repository = agent["source"]!["repository"]!.GetValue<string>();
        string? prUrl = nextStatus == "FINISHED" && random.Next(4) != 0 ? cursor.PullRequestOf(id) : null;
        cursor.SetStatus(id, nextStatus, prUrl, nextStatus == "FINISHED" ? "Fixed the pool" : null);
        if (nextStatus is "ERROR" or "FINISHED")
        {
            endedAtProvider[id] = time.GetUtcNow();
        }

        if (nextStatus == "FINISHED")
        {
            finishedAtProvider[id] = true;
        }

        var run = RunOfRepository(repository);
        // Cursor's webhooks can leave target.prUrl out: one finish in three of an agent asked to open a pull request is
        // reported without it, which the run must learn by a read (drawn from a stream of its own, so a seed's other draws
        // are those it had before). An agent not asked for one (an event's launch) is taken as finished without it.
        var withoutPullRequest = prUrl is not null && agent["target"]!["autoCreatePr"]?.GetValue<bool>() == true && webhookOmissions.Next(3) == 0;
        var body = HandoffInvariants.CursorStatusChange(id, nextStatus, withoutPullRequest ? null : prUrl, repository, agent["target"]!["branchName"]?.GetValue<string>());
        var delivery = random.Next(5); // 0 lost, 1 now, 2 twice concurrently (on both processes), 3 later, 4 now and again (on the other)
        Note($"provider {id} {current}->{nextStatus}{(prUrl is null ? "" : withoutPullRequest ? " pr (not in the webhook)" : " pr")} webhook={new[] { "lost", "now", "twice-both", "later", "one-then-other" }[delivery]}");
        switch (delivery)
        {
            case 1:
                return Webhook(AnyRunning(), run, body);
            case 2:
                var first = AnyRunning();
                return Task.WhenAll(Webhook(first, run, body), Webhook(Other(first), run, body));
            case 3:
                lock (gate)
                {
                    pendingWebhooks.Add((run, body));
                }

                return Task.CompletedTask;
            case 4:
                return Webhook(AnyRunning(), run, body).ContinueWith(_ => Webhook(AnyRunning(), run, body)).Unwrap();
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
            if (random.Next(3) != 0)
            {
                pendingWebhooks.RemoveAt(index);
            }
        }

        Note($"deliver late webhook run {hook.Run}");
        return Webhook(AnyRunning(), hook.Run, hook.Body);
    }

    private Task Webhook(Proc p, long run, string body)
    {
        // A deleted run's agents are no one's: 204, not applied.
        var wasDeleted = KnownDeleted(run);
        if (wasDeleted)
        {
            Interlocked.Increment(ref webhooksOnDeleted);
        }

        return Call(p, $"webhook {run}", c =>
        {
            var request = Payloads.SignedWebhook($"/webhooks/cursor/42?run_id={run}", body, Secret);
            request.Headers.Add("X-Webhook-ID", Guid.NewGuid().ToString());
            request.Headers.Add("X-Webhook-Event", "statusChange");
            return c.SendAsync(request);
        }, overlapsRestart: false, expect: s => wasDeleted ? s == 204 : s is 200 or 204, deletedRun: wasDeleted);
    }

    /// <summary>
    /// Of a 404 answer: a run known deleted before the call must be answered run-deleted, and run-deleted only said of a
    /// run whose tombstone is in the file. Returns whether the answer said run-deleted.
    /// </summary>
    private bool CheckRunDeletedAnswer(string label, long run, bool wasDeleted, string body)
    {
        var saysDeleted = body.Contains(RunDeletedProblem, StringComparison.Ordinal);
        if (wasDeleted && !saysDeleted)
        {
            Violation($"{label}: the run was deleted, the answer does not say so: {HandoffInvariants.Truncate(body)}");
        }
        else if (saysDeleted && !DeletedInFile(run))
        {
            Violation($"{label}: answered run-deleted, but the run has no tombstone: {HandoffInvariants.Truncate(body)}");
        }

        return saysDeleted;
    }

    private async Task AdvanceAsync(TimeSpan by)
    {
        Note($"advance {by}");
        await StepClockAsync(by);
        switch (random.Next(3))
        {
            case 0:
                await RunDueAsync(AnyRunning());
                break;
            default:
                await Task.WhenAll(procs.Where(p => p.Running).Select(p => RunDueAsync(p)));
                break;
        }
    }

    private async Task RunDueAsync(Proc p, bool overlapsRestart = false)
    {
        var f = p.Factory;
        if (f is null)
        {
            return;
        }

        var epoch = Volatile.Read(ref p.Epoch);
        try
        {
            var woken = await f.Scheduler.RunDueAsync(CancellationToken.None);
            Note($"  schedule {p.Name}: {woken} woken");
        }
        catch (Exception exception) when (overlapsRestart || epoch != Volatile.Read(ref p.Epoch))
        {
            Note($"  schedule {p.Name} across stop: {exception.GetType().Name}");
        }
    }

    private sealed record Answer(int Status, string Body);

    /// <param name="deletedRun">
    /// The call is about a run known deleted by retention: it is answered from the tombstone alone (nothing is saved), so
    /// a 503 is a violation unless the call crossed a stop.
    /// </param>
    private async Task<Answer?> Call(Proc p, string label, Func<HttpClient, Task<HttpResponseMessage>> send, bool overlapsRestart, Func<int, bool> expect, bool deletedRun = false)
    {
        var target = p.Running ? p : procs.First(q => q.Running);
        var epoch = Volatile.Read(ref target.Epoch);
        var c = target.Client;
        if (c is null)
        {
            return null;
        }

        HttpResponseMessage response;
        string body;
        try
        {
            response = await send(c);
            body = await response.Content.ReadAsStringAsync();
        }
        catch (Exception exception) when (overlapsRestart || epoch != Volatile.Read(ref target.Epoch))
        {
            Note($"  {label} on {target.Name}: {exception.GetType().Name} across stop");
            return null;
        }

        var status = (int)response.StatusCode;
        var crossed = overlapsRestart || epoch != Volatile.Read(ref target.Epoch);
        Note($"  {label} on {target.Name} -> {status}{(status >= 500 ? " " + HandoffInvariants.Truncate(body) : "")}");
        CheckLeak($"{label} answer {status}", body);
        if (status == 503)
        {
            Interlocked.Increment(ref answers503);
            if (!crossed)
            {
                Interlocked.Increment(ref uncrossed503);
            }
            if (!body.Contains("/problems/unavailable\"", StringComparison.Ordinal))
            {
                Violation($"{label}: a 503 that is not the documented 'unavailable' problem: {HandoffInvariants.Truncate(body)}");
            }
            else if (deletedRun && !crossed)
            {
                Violation($"{label} on {target.Name}: 503 for a deleted run: {HandoffInvariants.Truncate(body)}");
            }
        }
        else if (!expect(status))
        {
            Violation($"{label} on {target.Name}: unexpected {status}{(crossed ? " (crossed a stop)" : "")}: {HandoffInvariants.Truncate(body)}");
        }

        return new Answer(status, body);
    }

    private void CheckLeak(string where, string text) => HandoffInvariants.CheckNoLeak(where, text, Violation, EmbeddedServiceFactory.ApiKey, EmbeddedServiceFactory.CopilotToken, Secret);

    private void Violation(string message)
    {
        lock (gate)
        {
            Violations.Add(message);
        }
    }

    private Task<JsonObject?> ViewAsync(long run, Proc? on = null)
    {
        var p = on ?? AnyRunning();
        return HandoffInvariants.ReadViewAsync(p.Client!, run, $" on {p.Name}", CheckLeak, Violation);
    }

    /// <summary>
    /// What <c>GET /runs/{id}/handoff</c> answers on each running process is the run as the data file holds it: embedded
    /// mode sends the view saved with the row's state (a read sends it as stored), which must be that state's, not an
    /// earlier one's. The answer is read between two loads of the row that find one version, so that a save meanwhile (a
    /// launch in the background, the schedule) is not taken for a difference; the comparisons so skipped are counted.
    /// </summary>
    private async Task CheckViewsAgreeWithStoreAsync()
    {
        foreach (var p in procs.Where(p => p.Running))
        {
            var http = p.Factory!.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions>>().Value.SerializerOptions;
            foreach (var run in runs)
            {
                var before = await p.Factory.Store.LoadAsync(run, CancellationToken.None);
                if (before.State is not { } state)
                {
                    continue;
                }

                var response = await p.Client!.GetAsync($"/runs/{run}/handoff?group_id={Payloads.GroupId}");
                var body = await response.Content.ReadAsStringAsync();
                if ((await p.Factory.Store.LoadAsync(run, CancellationToken.None)).Version != before.Version)
                {
                    Interlocked.Increment(ref viewsChangedWhileRead);
                    continue;
                }

                Interlocked.Increment(ref viewsCompared);
                var stored = JsonNode.Parse(HandoffDapr.Service.Api.RunHandoffView.Json(state, http));
                if (response.StatusCode != System.Net.HttpStatusCode.OK || !JsonNode.DeepEquals(JsonNode.Parse(body), stored))
                {
                    Violation($"run {run} on {p.Name}: GET answers {(int)response.StatusCode} {HandoffInvariants.Truncate(body)}\nthe stored state (version {before.Version}) is {HandoffInvariants.Truncate(stored!.ToJsonString())}");
                }
            }
        }
    }

    private int viewsCompared, viewsChangedWhileRead;

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
            if (await AnyRunning().Factory!.Store.GetWakeupAsync(run, CancellationToken.None) is not null)
            {
                return false;
            }
        }

        return true;
    }

    private Task RunBothAsync() => Task.WhenAll(procs.Where(p => p.Running).Select(p => RunDueAsync(p)));

    private async Task SettleLaunchesAsync(string phase)
    {
        for (var round = 0; round < 60; round++)
        {
            await RunBothAsync();
            if (await LaunchesSettledAsync())
            {
                return;
            }

            await StepClockAsync(TimeSpan.FromMinutes(31));
        }

        Violation($"{phase}: launches still pending after 60 × 31 min");
    }

    private async Task FinishAsync()
    {
        Note("--- finish");
        hold = null;
        cursor.Chaos(0, 0, TimeSpan.Zero);
        github.NextLaunchAnswer = null;
        github.CreateButAnswerStatus = null;
        cursor.NextCommandAnswer = null;
        foreach (var p in procs.Where(p => !p.Running))
        {
            Start(p);
        }

        // Past the leases and the in-flight deadlines of whatever a stopped process left.
        await StepClockAsync(TimeSpan.FromMinutes(3));
        await SettleLaunchesAsync("before final trigger");

        foreach (var run in runs)
        {
            if (await ViewAsync(run) is not { } view)
            {
                continue;
            }

            foreach (var group in view["launches"]!.AsArray().GroupBy(l => l!["repository"]!.GetValue<string>()))
            {
                var generations = group.Max(l => l!["generation"]!.GetValue<int>());
                if (generations > 1 + manualTriggers[run])
                {
                    Violation($"run {run} {group.Key}: {generations} generations with {manualTriggers[run]} manual triggers");
                }
            }
        }

        // The latest solution is handed off by a person's trigger, on either process; a run retention deleted is told so.
        ObserveDeletions(finishing: true);
        foreach (var run in runs)
        {
            var p = AnyRunning();
            var wasDeleted = KnownDeleted(run);
            Note($"final trigger run {run} v3 on {p.Name}{(wasDeleted ? " (deleted)" : "")}");
            var answer = await Call(p, $"final trigger {run}", c => c.PostJsonAsync($"/runs/{run}/handoff", Payloads.Trigger(versions[run][2], integrationId: IntegrationOf(run))), false,
                s => s == (wasDeleted ? 404 : 202) || (s == 404 && profile.Retention is not null), deletedRun: wasDeleted);
            if (answer is { Status: 404 } && !CheckRunDeletedAnswer($"final trigger {run}", run, wasDeleted, answer.Body))
            {
                Violation($"final trigger {run}: 404 not run-deleted: {HandoffInvariants.Truncate(answer.Body)}");
            }

            manualTriggers[run]++;
        }

        await SettleLaunchesAsync("after final trigger");

        // The provider ends every agent; the polls of both processes must bring the views in line.
        foreach (var (id, agent) in cursor.Agents.OrderBy(a => a.Key))
        {
            if (agent["status"]!.GetValue<string>() is "CREATING" or "RUNNING")
            {
                endedAtProvider[id] = time.GetUtcNow();
                if (random.Next(3) == 0)
                {
                    cursor.SetStatus(id, "ERROR");
                }
                else
                {
                    cursor.SetStatus(id, "FINISHED", cursor.PullRequestOf(id), "Fixed");
                    finishedAtProvider[id] = true;
                }
            }
        }

        foreach (var (id, task) in github.Tasks.OrderBy(t => t.Key))
        {
            if (task["state"]!.GetValue<string>() is "queued" or "in_progress")
            {
                var url = task["html_url"]!.GetValue<string>();
                var repoPath = string.Join('/', url.Split('/')[3..5]);
                endedAtProvider[id] = time.GetUtcNow();
                github.SetState(id, random.Next(3) == 0 ? "failed" : "completed", random.Next(3) == 0 ? null : $"https://github.com/{repoPath}/pull/{Interlocked.Increment(ref prCounter)}");
            }
        }

        var quiet = false;
        for (var round = 0; round < 80 && !quiet; round++)
        {
            await StepClockAsync(TimeSpan.FromMinutes(31));
            await RunBothAsync();
            quiet = await NothingScheduledAsync() && await LaunchesSettledAsync();
        }

        if (!quiet)
        {
            foreach (var run in runs)
            {
                var due = await AnyRunning().Factory!.Store.GetWakeupAsync(run, CancellationToken.None);
                if (due is not null)
                {
                    Violation($"run {run}: still scheduled at {due:O} (now {time.GetUtcNow():O}) after 80 × 31 min with every agent ended: {HandoffInvariants.Truncate((await ViewAsync(run))?.ToJsonString() ?? "")}");
                }
            }
        }

        if (random.Next(2) == 0)
        {
            var p = procs[random.Next(procs.Length)];
            Note($"final restart {p.Name}");
            await StopAsync(p);
            Start(p);
        }

        ObserveDeletions(finishing: true);
        await CheckDeletedRunsAnswerAsync();
        await CheckViewsAgreeWithStoreAsync();
        await CheckFinalAsync();
    }

    /// <summary>Provider agents of this run (id -> (repository, status, the status the view should show)).</summary>
    private Dictionary<string, (string Repo, string Status, string? Expected)> ProviderAgentsOf(long run) => copilotRuns.Contains(run)
        ? github.Tasks.Where(t => t.Value["html_url"]!.GetValue<string>().Contains($"/run{run}/", StringComparison.Ordinal))
            .ToDictionary(t => t.Key, t => (Repo: string.Join('/', t.Value["html_url"]!.GetValue<string>().Split('/')[3..5]), Status: t.Value["state"]!.GetValue<string>(), Expected: ExpectedCopilot(t.Value["state"]!.GetValue<string>())))
        : cursor.Agents.Where(a => RunOfRepository(a.Value["source"]!["repository"]!.GetValue<string>()) == run)
            .ToDictionary(a => a.Key, a => (Repo: a.Value["source"]!["repository"]!.GetValue<string>()["https://github.com/".Length..], Status: a.Value["status"]!.GetValue<string>(), Expected: ExpectedCursor(a.Value["status"]!.GetValue<string>())));

    private static string? ExpectedCursor(string providerStatus) => providerStatus switch
    {
        "CREATING" => "pending",
        "RUNNING" => "running",
        "FINISHED" => "completed",
        "ERROR" or "EXPIRED" or "STOPPED" => "failed",
        _ => null,
    };

    private static string? ExpectedCopilot(string state) => state switch
    {
        "queued" => "pending",
        "in_progress" => "running",
        "completed" => "completed",
        "failed" or "timed_out" or "cancelled" => "failed",
        _ => null,
    };

    private async Task CheckFinalAsync()
    {
        foreach (var run in runs)
        {
            // A run retention deleted is held to its last row (both processes read it as deleted: CheckDeletedRunsAnswerAsync).
            var deleted = deletedRuns.TryGetValue(run, out var gone);
            var view = deleted ? LastViewOf(gone!) : await ViewAsync(run, procs[0]);
            if (view is null)
            {
                Violation($"run {run}: no view after the final trigger");
                continue;
            }

            foreach (var other in deleted ? [] : procs.Skip(1))
            {
                var otherView = await ViewAsync(run, other);
                if (otherView is null || !JsonNode.DeepEquals(view["coding_agents"], otherView["coding_agents"]) || !JsonNode.DeepEquals(view["launches"], otherView["launches"]))
                {
                    Violation($"run {run}: the two processes show different views:\nA {HandoffInvariants.Truncate(view.ToJsonString())}\nB {HandoffInvariants.Truncate(otherView?.ToJsonString() ?? "none")}");
                }
            }

            var copilot = copilotRuns.Contains(run);
            var agents = view["coding_agents"]!.AsObject();
            var launches = view["launches"]!.AsArray().Select(l => l!.AsObject()).ToList();

            if (!deleted)
            {
                // A deleted run's trigger was refused; the one it had was settled (checked as it went).
                HandoffInvariants.CheckLaunches(run, view, versions[run][2], Violation);
            }

            var atProvider = ProviderAgentsOf(run);
            foreach (var (id, agent) in atProvider)
            {
                if (!agents.ContainsKey(id))
                {
                    Violation($"run {run}: provider agent {id} ({agent.Repo}) is not tracked (a second agent, or a lost one); launches: {string.Join(", ", launches.Where(l => l["repository"]!.GetValue<string>() == agent.Repo).Select(l => l.ToJsonString()))}");
                }
            }

            // At most one agent per (repository, generation): more agents at the provider for a repository than generations is a double launch.
            foreach (var byRepo in atProvider.GroupBy(a => a.Value.Repo))
            {
                var generations = launches.Where(l => l["repository"]!.GetValue<string>() == byRepo.Key).Select(l => l["generation"]!.GetValue<int>()).DefaultIfEmpty(0).Max();
                if (byRepo.Count() > generations)
                {
                    Violation($"run {run}: {byRepo.Count()} agents at the provider for {byRepo.Key} with {generations} generations: {string.Join(",", byRepo.Select(a => a.Key))}");
                }
            }

            // Nor two agents on one branch (one launch, made twice).
            foreach (var twin in cursor.Agents.Values.Where(a => RunOfRepository(a["source"]!["repository"]!.GetValue<string>()) == run)
                .GroupBy(a => (a["source"]!["repository"]!.GetValue<string>(), a["target"]!["branchName"]?.GetValue<string>())).Where(g => g.Count() > 1))
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

                var actual = node!["status"]!.GetValue<string>();
                var allowed = actual == agent.Expected || (actual == "completed" && agent.Status is "STOPPED" or "cancelled")
                    || (actual == "completed" && finishedAtProvider.ContainsKey(id))
                    || (actual == "failed" && EndedAfterItsWatch(id));
                if (!allowed)
                {
                    Violation($"run {run}: agent {id} is {actual} in the view, {agent.Status} at the provider (created {(createdAtProvider.TryGetValue(id, out var createdAt) ? createdAt.ToString("O") : "-")}, ended {(endedAtProvider.TryGetValue(id, out var endedAt) ? endedAt.ToString("O") : "-")}, now {time.GetUtcNow():O})");
                }

                string? prUrl = copilot ? null : cursor.Agents[id]["target"]!["prUrl"]?.GetValue<string>();
                if (!copilot && actual == "completed" && agent.Status == "FINISHED" && prUrl is not null)
                {
                    var shown = node["results"]!.AsArray().Select(r => r!["pr_url"]?.GetValue<string>()).FirstOrDefault(u => u is not null);
                    if (shown != prUrl)
                    {
                        Violation($"run {run}: agent {id} shows PR {shown ?? "none"}, provider has {prUrl}");
                    }
                }
            }
        }

        foreach (var p in procs)
        {
            await HandoffInvariants.CheckListedAsViewedAsync(p.Client!, "", $" on {p.Name}", CheckLeak, Violation);
        }
    }

    public async ValueTask DisposeAsync()
    {
        output.WriteLine($"{profile.Name}: seed={seed} ops={operations} restarts={restarts} heldRestarts={heldRestarts} (createdBefore={createdBeforeStop} createdAfter/during={createdAfterStop} never={neverCreated}) crossProcessWhileHeld={crossProcessOps} 503s={answers503} (not across a stop: {uncrossed503}) copilotRuns={copilotRuns.Count} cursorAgents={cursor.Agents.Count} copilotTasks={github.Tasks.Count} viewsCompared={viewsCompared} (changed while read: {viewsChangedWhileRead}){RetentionCounters} violations={Violations.Count}");
        hold?.Released.TrySetResult();
        foreach (var p in procs)
        {
            if (p.Factory is not null)
            {
                await p.Factory.DisposeAsync();
            }
        }

        unservedLaunches.Dispose();
        cursor.Dispose();
        github.Dispose();
        temp.Dispose();
    }
}
