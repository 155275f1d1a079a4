using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// 50 runs × 3 repositories against a provider that fails 30 % of launches in every way it can (fixed seed),
/// with duplicate and concurrent triggers: every repository ends with exactly one agent, at the provider and in
/// <c>coding_agents</c>, and nothing is left pending.
/// </summary>
public sealed class ChaosTests : IDisposable
{
    private const int Runs = 50;
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task Faulty_provider_and_duplicate_triggers_end_with_exactly_one_agent_per_repository()
    {
        // A lost answer takes 3 s, well past the 1.5 s timeout; ordinary answers stay far below it even on a loaded machine.
        cursor.Chaos(seed: 1124, failureRate: 0.3, timeoutDelay: TimeSpan.FromSeconds(3));
        // A launch starved in the fake's queue past the timeout must not be carried out after the retry that looks for it.
        using var unserved = cursor.WatchUnservedLaunches();
        using var factory = new EmbeddedServiceFactory(temp.File("chaos.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:Integrations:42:RequestTimeout"] = "00:00:01.500",
            // 30 % failures ten times in a row is 6 in a million: attempts are not what this test is about.
            ["Handoff:Launch:MaxAttempts"] = "10",
            ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "100000",
        });
        var client = factory.CreateClient();
        string[] Repositories(int run) => [$"org{run}/api", $"org{run}/web", $"org{run}/worker"];

        // Each run: its completion event twice at once, a manual trigger alongside, and a late redelivery.
        await Parallel.ForEachAsync(Enumerable.Range(1, Runs), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (run, _) =>
        {
            var snapshot = Payloads.Run(run, Repositories(run));
            var answers = await Task.WhenAll(
                client.PostJsonAsync("/events/autofix-run-completed", snapshot),
                client.PostJsonAsync("/events/autofix-run-completed", Payloads.CloudEvent(snapshot), "application/cloudevents+json"),
                client.PostJsonAsync($"/runs/{run}/handoff", Payloads.Trigger(snapshot)));
            Assert.All(answers, answer => Assert.True(answer.StatusCode is HttpStatusCode.OK or HttpStatusCode.Accepted, $"run {run}: {answer.StatusCode}"));
            await client.PostJsonAsync("/events/autofix-run-completed", snapshot);
        });

        // Let the durable schedule work off every retry and reconciliation.
        for (var round = 0; round < 30 && await AnyPending(client); round++)
        {
            await unserved.WaitUntilServedAsync(TimeSpan.FromSeconds(5));
            time.Advance(TimeSpan.FromMinutes(31));
            await factory.Scheduler.RunDueAsync(CancellationToken.None);
        }

        for (var run = 1; run <= Runs; run++)
        {
            var view = await (await client.GetAsync($"/runs/{run}/handoff")).ReadJsonAsync();
            var agents = view["coding_agents"]!.AsObject();
            Assert.True(agents.Count == 3, $"run {run}: {view.ToJsonString()}");
            foreach (var repository in Repositories(run))
            {
                Assert.Equal(1, cursor.AgentsFor(repository));
                var launch = view["launches"]!.AsArray().Single(l => l!["repository"]!.GetValue<string>() == repository)!;
                Assert.Equal("launched", launch["phase"]!.GetValue<string>());
                Assert.True(cursor.Agents.ContainsKey(launch["agent_id"]!.GetValue<string>()));
            }
        }

        Assert.Equal(Runs * 3, cursor.Agents.Count);
        // The chaos really happened: more launch requests than agents.
        Assert.True(cursor.LaunchRequests > Runs * 3, $"{cursor.LaunchRequests} launch requests");
    }

    private static async Task<bool> AnyPending(HttpClient client)
    {
        for (var run = 1; run <= Runs; run++)
        {
            var view = await (await client.GetAsync($"/runs/{run}/handoff")).ReadJsonAsync();
            if (view["launches"]!.AsArray().Any(l => l!["phase"]!.GetValue<string>() != "launched"))
            {
                return true;
            }
        }

        return false;
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
