using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Providers;
using HandoffDapr.LoadTest;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection.Extensions;

// Load tool: starts the service (embedded mode) and a fake provider in this process, on loopback, and measures.
// Usage: dotnet run -c Release --project tests/HandoffDapr.LoadTest -- [--smoke] [--concurrency 64] [--requests 20000] [--stored-runs 100000]
//        [--provider-latency-ms 0] [--mix distinct=25,duplicates=25,triggers=25,webhooks=25]
//        [--profile distinct|acceptance|duplicates|get|bare --rounds 40]: after the distinct phase, repeat one phase so a profiler can attach
var smoke = args.Contains("--smoke");
var profilePhase = args.SkipWhile(a => a != "--profile").Skip(1).FirstOrDefault();
if (profilePhase is not (null or "distinct" or "acceptance" or "duplicates" or "get" or "bare"))
{
    Console.Error.WriteLine($"--profile takes distinct, acceptance, duplicates, get or bare, not '{profilePhase}'");
    return 2;
}

int Option(string name, int fallback) => args.SkipWhile(a => a != name).Skip(1).Select(int.Parse).DefaultIfEmpty(fallback).First();
var concurrency = Option("--concurrency", smoke ? 8 : 64);
var requests = Option("--requests", smoke ? 200 : 20000);
var storedRuns = Option("--stored-runs", smoke ? 2000 : 100_000);
// The fake provider's launch latency in every phase but the ten-repository one (which measures at 200 ms).
var providerLatency = TimeSpan.FromMilliseconds(Option("--provider-latency-ms", 0));
// The mixed phase's shares, by kind of request: new runs' completion events, their redeliveries, manual triggers, status webhooks.
var mixText = args.SkipWhile(a => a != "--mix").Skip(1).FirstOrDefault() ?? "distinct=25,duplicates=25,triggers=25,webhooks=25";
string[] mixKinds = ["distinct", "duplicates", "triggers", "webhooks"];
var mix = new Dictionary<string, int>();
foreach (var part in mixText.Split(',', StringSplitOptions.RemoveEmptyEntries))
{
    var pair = part.Split('=');
    if (pair.Length != 2 || !mixKinds.Contains(pair[0]) || !int.TryParse(pair[1], out var weight) || weight < 0 || mix.ContainsKey(pair[0]))
    {
        Console.Error.WriteLine($"--mix takes kind=weight pairs of {string.Join(", ", mixKinds)}, each once; not '{part}'");
        return 2;
    }

    mix[pair[0]] = weight;
}

if (mix.Values.Sum() == 0)
{
    Console.Error.WriteLine("--mix needs at least one positive weight");
    return 2;
}
var maxPhase = TimeSpan.FromSeconds(smoke ? 10 : 60);
const string webhookSecret = "load-test-webhook-secret-0123456789abcdef";

var dataDirectory = Directory.CreateTempSubdirectory("handoff-load-");
var dataPath = Path.Combine(dataDirectory.FullName, "handoff.db");
await using var provider = await FakeProvider.StartAsync();
await using var service = await ServiceHost.StartAsync(new Dictionary<string, string?>
{
    ["Handoff:Mode"] = "Embedded",
    ["Handoff:DataPath"] = dataPath,
    ["Handoff:PublicBaseUrl"] = "http://127.0.0.1",
    ["Handoff:Integrations:42:Provider"] = "cursor_background_agent",
    ["Handoff:Integrations:42:BaseUrl"] = provider.Url,
    ["Handoff:Integrations:42:ApiKey"] = "load-test-key",
    ["Handoff:Integrations:42:WebhookSecret"] = webhookSecret,
    ["Handoff:Integrations:43:ApiKey"] = "load-test-token",
    ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "100000000",
    ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "100000000",
    ["Logging:LogLevel:Default"] = "Warning",
});
// The same service with its launches held: what accepting an event costs on its own, without the provider calls
// the first instance makes for its events on the same two cores.
var heldDirectory = Directory.CreateTempSubdirectory("handoff-load-held-");
await using var held = await ServiceHost.StartAsync(
    new Dictionary<string, string?>
    {
        ["Handoff:Mode"] = "Embedded",
        ["Handoff:DataPath"] = Path.Combine(heldDirectory.FullName, "held.db"),
        ["Handoff:Integrations:42:BaseUrl"] = provider.Url,
        ["Handoff:Integrations:42:ApiKey"] = "load-test-key",
        ["Handoff:Integrations:43:ApiKey"] = "load-test-token",
        ["Handoff:Embedded:SchedulePollInterval"] = "1.00:00:00",
        ["Logging:LogLevel:Default"] = "Warning",
    },
    services => services.Replace(ServiceDescriptor.Singleton<HandoffDapr.Service.Embedded.WakeupSignal>(new HeldWakeupSignal())));
await using var bare = await BareHost.StartAsync();
using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = concurrency, PooledConnectionLifetime = TimeSpan.FromMinutes(10) });

async Task<bool> Post(Uri baseAddress, string path, byte[] body)
{
    using var content = new ByteArrayContent(body);
    content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
    using var response = await client.PostAsync(new Uri(baseAddress, path), content);
    return (int)response.StatusCode is >= 200 and < 300;
}

async Task<bool> GetRun(long runId)
{
    using var response = await client.GetAsync(new Uri(service.Address, $"/runs/{runId}/handoff"));
    return response.IsSuccessStatusCode;
}

var eventBodies = Enumerable.Range(1, requests).Select(run => Payloads.CompletionEvent(run, 3)).ToArray();
var results = new List<(PhaseResult Result, double Ceiling)>();

// Each phase is compared with a bare run made just before it, at the same concurrency: the machine's speed drifts
// by tens of percent over a run, and one early ceiling would put that drift into every ratio.
async Task<PhaseResult> Measure(string name, int clients, int count, Func<int, Task<bool>> send)
{
    var bareRun = await LoadDriver.RunAsync("bare endpoint", clients, requests, maxPhase, i => Post(bare.Address, "/events/autofix-run-completed", eventBodies[i]));
    var result = await LoadDriver.RunAsync(name, clients, count, maxPhase, send);
    results.Add((result, bareRun.Throughput));
    return result;
}
var notes = new List<string>();

// Warm-up of every kind of request, so JIT tiering and connection set-up are not measured: the bare endpoint and
// each of the service's paths get the same treatment, on runs the measured phases do not use.
var warmUp = smoke ? 50 : 3000;
var warmUpBodies = Enumerable.Range(0, warmUp).Select(i => Payloads.CompletionEvent(1_000_000 + i, 3)).ToArray();
await LoadDriver.RunAsync("warm-up", concurrency, warmUp, maxPhase, i => Post(bare.Address, "/events/autofix-run-completed", warmUpBodies[i]));
await LoadDriver.RunAsync("warm-up", concurrency, warmUp, maxPhase, i => Post(service.Address, "/events/autofix-run-completed", warmUpBodies[i]));
await WaitForLaunchesAsync(warmUp * 3, TimeSpan.FromSeconds(60));
await LoadDriver.RunAsync("warm-up", concurrency, warmUp, maxPhase, i => Post(service.Address, "/events/autofix-run-completed", warmUpBodies[i]));
await LoadDriver.RunAsync("warm-up", concurrency, warmUp, maxPhase, i => Post(service.Address, $"/runs/{1_000_000 + i}/handoff", Payloads.Trigger()));
await LoadDriver.RunAsync("warm-up", concurrency, warmUp, maxPhase, i => GetRun(1_000_000 + i));
await LoadDriver.RunAsync("warm-up", concurrency, warmUp, maxPhase, i => Post(held.Address, "/events/autofix-run-completed", warmUpBodies[i]));
provider.Reset();

// 1. The ceiling: the same payload to a bare endpoint.
var ceiling = await LoadDriver.RunAsync("bare endpoint (ceiling)", concurrency, requests, maxPhase, i => Post(bare.Address, "/events/autofix-run-completed", eventBodies[i]));
results.Add((ceiling, ceiling.Throughput));

// 2. Completion events for distinct runs, 3 repositories each, provider at --provider-latency-ms (default 0 ms). The service answers once the
//    launches are saved as due; its schedule makes the provider calls right after, so wait for them to drain.
provider.LaunchLatency = providerLatency;
// Launches at a latency take longer to drain: 32 runs are worked on at once, three launches each.
TimeSpan DrainTime(int launches) => TimeSpan.FromSeconds(smoke ? 30 : 120) + providerLatency * (launches / 64.0);
// The launch clock starts at the phase's first event, not before Measure: its adjacent bare run comes first.
long firstEvent = 0;
var distinct = await Measure("completion events, distinct runs ×3 repos", concurrency, requests, i =>
{
    Interlocked.CompareExchange(ref firstEvent, Stopwatch.GetTimestamp(), 0);
    return Post(service.Address, "/events/autofix-run-completed", eventBodies[i]);
});
var expectedCalls = distinct.Requests * 3;
var launchedDuringPhase = provider.Launches;
await WaitForLaunchesAsync(expectedCalls, DrainTime(expectedCalls));
var launchTime = Stopwatch.GetElapsedTime(firstEvent);
notes.Add($"provider calls {provider.Launches} for {expectedCalls} distinct run×repository pairs; repositories launched twice: {provider.DuplicatedRepositories}");
notes.Add($"launches: {launchedDuringPhase} made while the events came in, all {provider.Launches} done {launchTime.TotalSeconds:F2} s after the first event: {provider.Launches / launchTime.TotalSeconds:F0} launches/s");
var callsMatch = provider.Launches == expectedCalls && provider.DuplicatedRepositories == 0;

if (profilePhase is not null)
{
    await RepeatPhaseAsync(profilePhase, Option("--rounds", 40));
    dataDirectory.Delete(recursive: true);
    heldDirectory.Delete(recursive: true);
    return 0;
}

// 2b. The same events to the instance whose launches are held: acceptance alone.
await Measure("completion events, acceptance only (launches held)", concurrency, requests, i => Post(held.Address, "/events/autofix-run-completed", eventBodies[i]));

// 3. Duplicate deliveries of already-launched runs.
var duplicates = await Measure("duplicate deliveries (already launched)", concurrency, distinct.Requests, i => Post(service.Address, "/events/autofix-run-completed", eventBodies[i]));
callsMatch &= provider.Launches == expectedCalls;

// 4. Manual triggers of launched runs (answers with the existing agents).
var triggerBody = Payloads.Trigger();
await Measure("manual triggers (launched runs)", concurrency, distinct.Requests, i => Post(service.Address, $"/runs/{i + 1}/handoff", triggerBody));
callsMatch &= provider.Launches == expectedCalls;

// 5. Status webhooks for launched agents.
var agents = await AgentsOf(Enumerable.Range(1, Math.Min(distinct.Requests, smoke ? 200 : 3000)));
await Measure("status webhooks", concurrency, agents.Count, i => SendWebhook(agents[i]));
// Each webhook reports its agent finished: one the service did not apply (a report it refuses answers 204 too) was
// measured on another path than the phase claims.
var webhooksApplied = await CompletedAgentsOf(agents.Select(agent => agent.RunId).Distinct());
notes.Add($"status webhooks: {webhooksApplied} of {agents.Count} agents recorded as completed");
var webhooksMatch = webhooksApplied == agents.Count;

// Each report names its own agent's repository: one naming another is refused (logged, nothing saved) yet answered 204.
async Task<bool> SendWebhook((long RunId, string AgentId, string Repository) agent)
{
    var (runId, agentId, repository) = agent;
    var body = Encoding.UTF8.GetBytes($$$"""{"event":"statusChange","id":"{{{agentId}}}","status":"FINISHED","source":{"repository":"https://github.com/{{{repository}}}"},"target":{"prUrl":"https://github.com/{{{repository}}}/pull/1"}}""");
    using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(service.Address, $"/webhooks/cursor/42?run_id={runId}")) { Content = new ByteArrayContent(body) };
    request.Headers.Add("X-Webhook-Signature", WebhookSignature.Sign(webhookSecret, body));
    using var response = await client.SendAsync(request);
    return response.IsSuccessStatusCode;
}

// 5b. A mix of all four kinds at once, in the shares --mix gives: latency reported per kind as well.
await MeasureMixAsync();
callsMatch &= provider.Launches == expectedCalls && provider.DuplicatedRepositories == 0;

// 6. Ten repositories at 200 ms provider latency: launches run in parallel.
provider.LaunchLatency = TimeSpan.FromMilliseconds(200);
var parallelTimes = new List<double>();
for (var i = 0; i < (smoke ? 1 : 5); i++)
{
    // From the event's arrival to the tenth agent created at the provider.
    var before = provider.Launches;
    var started = Stopwatch.GetTimestamp();
    await Post(service.Address, "/events/autofix-run-completed", Payloads.CompletionEvent(2_000_000 + i, 10));
    await WaitForLaunchesAsync(before + 10, TimeSpan.FromSeconds(30), pollMilliseconds: 1);
    parallelTimes.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
}

provider.LaunchLatency = providerLatency;
notes.Add($"10 repositories at 200 ms: handoff took {parallelTimes.Order().ElementAt(parallelTimes.Count / 2):F0} ms (median of {parallelTimes.Count}); sequential would be ≥ 2000 ms");

// 7. Reads with many stored runs: seed the SQLite file directly, rows as the service writes them, then GET random runs.
var workingSetBefore = Process.GetCurrentProcess().WorkingSet64;
await SeedAsync(dataPath, storedRuns, service.App.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions>>().Value.SerializerOptions);
GC.Collect();
var random = new Random(7);
var ids = Enumerable.Range(0, requests).Select(_ => 10_000_000L + random.Next(storedRuns)).ToArray();
await Measure($"GET /runs/{{id}}/handoff, {storedRuns} stored runs", concurrency, requests, i => GetRun(ids[i]));
await Measure($"GET /runs/{{id}}/handoff, {storedRuns} stored runs, 8 clients", 8, requests, i => GetRun(ids[i]));
GC.Collect();
notes.Add($"working set before seeding {workingSetBefore / 1048576} MiB, after {storedRuns} stored runs and the reads {Process.GetCurrentProcess().WorkingSet64 / 1048576} MiB; peak {Process.GetCurrentProcess().PeakWorkingSet64 / 1048576} MiB");

// 8. Start-up of the built service to healthy, as its own process.
// NaN when the service never became healthy (it exited, or 30 s passed): a failure, not a figure.
var startup = await MeasureStartupAsync();
notes.Add($"start-up to healthy: {startup:F0} ms (built DLL, embedded mode, fresh data file)");

Console.WriteLine();
Console.WriteLine($"HandoffDapr load test — {Environment.ProcessorCount} cores, {(smoke ? "smoke" : "full")} run, {concurrency} concurrent clients");
Console.WriteLine($"{"phase",-48} {"req",7} {"err",5} {"req/s",9} {"vs bare",8} {"p50 ms",8} {"p95 ms",8} {"p99 ms",8} {"alloc/req",10} {"GC 0/1/2",10}");
foreach (var (r, bareThroughput) in results)
{
    Console.WriteLine($"{r.Name,-48} {r.Requests,7} {r.Errors,5} {r.Throughput,9:F0} {r.Throughput / bareThroughput,8:P0} {r.P50,8:F2} {r.P95,8:F2} {r.P99,8:F2} {r.AllocatedBytesPerRequest / 1024.0,8:F1}KB {r.Collections,10}");
}

Console.WriteLine($"- 'vs bare': against a bare run made just before each phase, at its concurrency ({string.Join(", ", results.Select(r => r.Ceiling.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)))} req/s)");

foreach (var note in notes)
{
    Console.WriteLine("- " + note);
}

dataDirectory.Delete(recursive: true);
heldDirectory.Delete(recursive: true);
var failed = !callsMatch || !webhooksMatch || double.IsNaN(startup) || results.Any(r => r.Result.Errors > 0);
Console.WriteLine(failed
    ? "FAILED: provider calls did not match distinct pairs, webhooks were not applied, requests failed, or the service did not start"
    : "OK: one provider call per distinct run×repository pair, every webhook applied, no failed requests, the service started");
return failed ? 1 : 0;

// The mixed phase: each request's kind drawn (seeded) by the --mix weights; new runs' launches are awaited and counted.
async Task<PhaseResult> MeasureMixAsync()
{
    var total = mix.Values.Sum();
    var draw = new Random(11);
    var kinds = Enumerable.Range(0, requests).Select(_ =>
    {
        var pick = draw.Next(total);
        return mix.First(pair => (pick -= pair.Value) < 0).Key;
    }).ToArray();
    // The n-th request of its kind: new runs get ids of their own, the other kinds go round the launched runs.
    var ordinals = new int[requests];
    var counts = new Dictionary<string, int>();
    for (var i = 0; i < requests; i++)
    {
        ordinals[i] = counts[kinds[i]] = counts.GetValueOrDefault(kinds[i]) + 1;
    }

    var newRuns = counts.GetValueOrDefault("distinct");
    var newBodies = Enumerable.Range(0, newRuns).Select(n => Payloads.CompletionEvent(4_000_000 + n, 3)).ToArray();
    var name = "mixed: " + string.Join(", ", mixKinds.Where(mix.ContainsKey).Select(kind => $"{kind} {mix[kind] * 100 / total} %"));
    var result = await Measure(name, concurrency, requests, i =>
    {
        var n = ordinals[i] - 1;
        return kinds[i] switch
        {
            "distinct" => Post(service.Address, "/events/autofix-run-completed", newBodies[n]),
            "duplicates" => Post(service.Address, "/events/autofix-run-completed", eventBodies[n % distinct.Requests]),
            "triggers" => Post(service.Address, $"/runs/{n % distinct.Requests + 1}/handoff", triggerBody),
            _ => SendWebhook(agents[n % agents.Count]),
        };
    });
    foreach (var kind in mixKinds.Where(counts.ContainsKey))
    {
        var sorted = result.Latencies.Where((_, i) => kinds[i] == kind).Order().ToArray();
        notes.Add($"{name} — {kind}: {sorted.Length} requests, p50 {LoadDriver.Percentile(sorted, 0.50):F2} ms, p95 {LoadDriver.Percentile(sorted, 0.95):F2} ms, p99 {LoadDriver.Percentile(sorted, 0.99):F2} ms");
    }

    expectedCalls += newRuns * 3;
    await WaitForLaunchesAsync(expectedCalls, DrainTime(newRuns * 3));
    notes.Add($"{name}: {newRuns} new runs; provider calls now {provider.Launches} for {expectedCalls} distinct run×repository pairs; repositories launched twice: {provider.DuplicatedRepositories}");
    return result;
}

// One phase again and again, one line per round: attach `perf` or `dotnet-trace` to the printed process id.
async Task RepeatPhaseAsync(string phase, int rounds)
{
    await WaitForLaunchesAsync(expectedCalls, TimeSpan.FromSeconds(120));
    Console.WriteLine($"repeating '{phase}' {rounds} times in process {Environment.ProcessId}");
    for (var round = 0; round < rounds; round++)
    {
        // Distinct and acceptance rounds need runs nobody has seen yet.
        var fresh = phase is "distinct" or "acceptance"
            ? Enumerable.Range(0, requests).Select(i => Payloads.CompletionEvent(3_000_000 + round * requests + i, 3)).ToArray()
            : eventBodies;
        var target = phase switch
        {
            "bare" => bare.Address,
            "acceptance" => held.Address,
            _ => service.Address,
        };
        var result = phase == "get"
            ? await LoadDriver.RunAsync(phase, concurrency, requests, maxPhase, i => GetRun(i + 1))
            : await LoadDriver.RunAsync(phase, concurrency, requests, maxPhase, i => Post(target, "/events/autofix-run-completed", fresh[i]));
        Console.WriteLine($"{phase} {result.Throughput:F0} req/s, p99 {result.P99:F2} ms, {result.AllocatedBytesPerRequest / 1024.0:F1} KB/req, GC {result.Collections}");
    }
}

// Fails loudly rather than let a later phase count launches that were still coming. Polls every 20 ms, not to take
// CPU from the service being measured, except where the wait itself is the measurement.
async Task WaitForLaunchesAsync(int expected, TimeSpan timeout, int pollMilliseconds = 20)
{
    var waited = Stopwatch.StartNew();
    while (provider.Launches < expected && waited.Elapsed < timeout)
    {
        await Task.Delay(pollMilliseconds);
    }

    if (provider.Launches < expected)
    {
        throw new TimeoutException($"{provider.Launches} of {expected} launches reached the provider within {timeout}.");
    }
}

async Task<int> CompletedAgentsOf(IEnumerable<long> runIds)
{
    var completed = 0;
    foreach (var runId in runIds)
    {
        var view = JsonNode.Parse(await client.GetStringAsync(new Uri(service.Address, $"/runs/{runId}/handoff")))!;
        completed += view["coding_agents"]!.AsObject().Count(pair => pair.Value!["status"]!.GetValue<string>() == "completed");
    }

    return completed;
}

async Task<List<(long RunId, string AgentId, string Repository)>> AgentsOf(IEnumerable<int> runIds)
{
    var list = new List<(long, string, string)>();
    foreach (var runId in runIds)
    {
        var view = JsonNode.Parse(await client.GetStringAsync(new Uri(service.Address, $"/runs/{runId}/handoff")))!;
        list.AddRange(view["launches"]!.AsArray()
            .Where(launch => launch!["agent_id"]?.GetValue<string>() is not null)
            .Select(launch => ((long)runId, launch!["agent_id"]!.GetValue<string>(), launch["repository"]!.GetValue<string>())));
    }

    return list;
}

// With its stored view (the API's answer, written with every save) as the service would have written it.
static async Task SeedAsync(string path, int count, System.Text.Json.JsonSerializerOptions http)
{
    await using var connection = new SqliteConnection($"Data Source={path}");
    await connection.OpenAsync();
    await using var transaction = (SqliteTransaction)await connection.BeginTransactionAsync();
    await using var command = connection.CreateCommand();
    command.Transaction = transaction;
    command.CommandText = "INSERT OR REPLACE INTO runs (run_id, group_id, version, state, view, view_version, view_format, view_format_version, updated_at) VALUES ($run, 456, 1, $state, $view, 1, $format, 1, 0)";
    var run = command.Parameters.Add("$run", SqliteType.Integer);
    var state = command.Parameters.Add("$state", SqliteType.Text);
    var view = command.Parameters.Add("$view", SqliteType.Blob);
    command.Parameters.AddWithValue("$format", HandoffDapr.Service.Embedded.SqliteRunStore.ViewFormat);
    for (var i = 0; i < count; i++)
    {
        var id = 10_000_000L + i;
        run.Value = id;
        state.Value = $$$"""{"run_id":{{{id}}},"snapshot":{"run_id":{{{id}}},"group":{"id":456,"title":"Seeded"}},"coding_agents":{"bc-{{{id}}}":{"id":"bc-{{{id}}}","status":"running","agent_url":null,"provider":"cursor_background_agent","name":"acme/shop","started_at":"2026-11-24T10:00:00+00:00","results":[]}},"launches":[{"repository":"acme/shop","repo_provider":"github","integration_id":42,"provider":"cursor_background_agent","generation":1,"branch_name":"seeded-abcdef","base_ref":null,"auto_create_pr":false,"instruction":null,"phase":"launched","attempts":1,"attempt_started_at":"2026-11-24T10:00:00+00:00","next_attempt_at":null,"agent_id":"bc-{{{id}}}","failure_type":null,"updated_at":"2026-11-24T10:00:00+00:00"}],"timeline":[]}""";
        var stored = System.Text.Json.JsonSerializer.Deserialize((string)state.Value, HandoffDapr.Core.Serialization.HandoffJsonContext.Default.RunHandoffState)!;
        view.Value = HandoffDapr.Service.Api.RunHandoffView.Json(stored, http);
        await command.ExecuteNonQueryAsync();
    }

    await transaction.CommitAsync();

    // Fold the seed into the main file, as SQLite's automatic checkpoint eventually would.
    await using var checkpoint = connection.CreateCommand();
    checkpoint.CommandText = "PRAGMA wal_checkpoint(TRUNCATE)";
    await checkpoint.ExecuteNonQueryAsync();
}

static async Task<double> MeasureStartupAsync()
{
    var directory = Directory.CreateTempSubdirectory("handoff-start-");
    // A port the system has just handed out as free, not a random one: 20000-39999 reached into Linux's ephemeral range
    // (32768 up), where the phases' own client connections sit, and a port so taken failed the start-up (NaN) now and then.
    var free = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
    free.Start();
    var port = ((System.Net.IPEndPoint)free.LocalEndpoint).Port;
    free.Stop();
    var start = new ProcessStartInfo("dotnet", $"\"{Path.Combine(AppContext.BaseDirectory, "HandoffDapr.Service.dll")}\"")
    {
        UseShellExecute = false,
        RedirectStandardOutput = true,
        RedirectStandardError = true,
        WorkingDirectory = AppContext.BaseDirectory,
    };
    start.Environment["ASPNETCORE_URLS"] = $"http://127.0.0.1:{port}";
    start.Environment["Handoff__Mode"] = "Embedded";
    start.Environment["Handoff__DataPath"] = Path.Combine(directory.FullName, "start.db");
    start.Environment["Handoff__Integrations__42__ApiKey"] = "startup-key";
    start.Environment["Handoff__Integrations__43__ApiKey"] = "startup-token";
    var clock = Stopwatch.StartNew();
    using var process = Process.Start(start)!;
    _ = process.StandardOutput.ReadToEndAsync();
    _ = process.StandardError.ReadToEndAsync();
    using var probe = new HttpClient { Timeout = TimeSpan.FromMilliseconds(500) };
    try
    {
        // A service that exited (a bad setting, a port in use) will not become healthy: no need to wait out the 30 s.
        while (clock.Elapsed < TimeSpan.FromSeconds(30) && !process.HasExited)
        {
            try
            {
                if ((await probe.GetAsync($"http://127.0.0.1:{port}/healthz")).IsSuccessStatusCode)
                {
                    return clock.Elapsed.TotalMilliseconds;
                }
            }
            catch (Exception exception) when (exception is HttpRequestException or TaskCanceledException)
            {
            }

            await Task.Delay(10);
        }

        return double.NaN;
    }
    finally
    {
        process.Kill(entireProcessTree: true);
        directory.Delete(recursive: true);
    }
}
