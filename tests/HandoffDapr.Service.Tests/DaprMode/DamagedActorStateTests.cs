using System.Net;
using System.Text.Json;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// A run's actor state the actor did not write as it is (edited by hand, damaged, another run's): refused with a 503 or
/// a redelivery, never read as an empty or ownerless run that would be started over or taken by another group.
/// </summary>
public sealed class DamagedActorStateTests : IDisposable
{
    private const string Actor = HandoffRunActor.ActorTypeName;
    private const string Secret = "damaged-state-text-4e1d";
    private readonly FakeCursor cursor = new();

    public static TheoryData<string, string> Damages() => new()
    {
        { HandoffRunActor.SnapshotKey, "{\"run_id\": 600, " + Secret },
        { HandoffRunActor.SnapshotKey, "null" },
        { HandoffRunActor.SnapshotKey, "{\"organization_id\": 1}" },
        { HandoffRunActor.SnapshotKey, "{\"run_id\": 601, \"group\": {\"id\": 456}}" },
        { HandoffRunActor.CodingAgentsKey, "null" },
        { HandoffRunActor.CodingAgentsKey, "{\"agent\": {\"status\": \"running\"}}" },
        { HandoffRunActor.LaunchesKey, "null" },
        { HandoffRunActor.LaunchesKey, "[null]" },
        // A key gone (evicted by a store under memory pressure, or deleted by hand) while the others stay.
        { HandoffRunActor.LaunchesKey, Evicted },
        { HandoffRunActor.CodingAgentsKey, Evicted },
        { HandoffRunActor.SnapshotKey, Evicted },
    };

    private const string Evicted = "(evicted)";

    [Theory]
    [MemberData(nameof(Damages))]
    public async Task Damaged_state_is_refused_for_reads_triggers_and_events_and_left_as_it_is(string key, string raw)
    {
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url);
        var client = factory.CreateSidecarClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/600/handoff", Payloads.Trigger(Payloads.Run(600, ["acme/shop"], automation: false)))).StatusCode);
        if (raw == Evicted)
        {
            factory.Sidecar.RemoveActorState(Actor, "600", key);
        }
        else
        {
            factory.Sidecar.SetRawActorState(Actor, "600", key, raw);
        }

        await factory.Sidecar.DeactivateActorAsync(Actor, "600");

        var read = await client.GetAsync("/runs/600/handoff");
        // Another group's trigger: with the snapshot read as missing its group check was skipped.
        var trigger = await client.PostJsonAsync("/runs/600/handoff", Payloads.Trigger(Payloads.Run(600, ["acme/shop", "evil/repo"], automation: false, groupId: 999), groupId: 999));
        var delivered = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(600, ["acme/shop"]));
        await factory.Services.GetRequiredService<BackgroundRounds>().WhenIdleAsync();

        Assert.Equal(HttpStatusCode.ServiceUnavailable, read.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, trigger.StatusCode);
        Assert.Equal(DeliveryOutcome.Retry, delivered.Outcome);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(raw == Evicted ? null : raw, factory.Sidecar.GetActorStateKeys(Actor, "600").GetValueOrDefault(key));
        var answers = await read.Content.ReadAsStringAsync() + await trigger.Content.ReadAsStringAsync();
        Assert.DoesNotContain(Secret, answers);
        // Refused until an operator acts, as embedded mode says: not "try again shortly", which a caller would for ever.
        foreach (var answer in new[] { read, trigger })
        {
            Assert.Contains("restores or deletes it", await answer.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Damaged_run_that_keeps_being_called_does_not_shut_every_other_run_out()
    {
        // daprd as components/resiliency.yaml configures it: actor calls retried, and counted by a circuit breaker.
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, actorResiliency: true);
        var client = factory.CreateSidecarClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/600/handoff", Payloads.Trigger(Payloads.Run(600, ["acme/shop"], automation: false)))).StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/601/handoff", Payloads.Trigger(Payloads.Run(601, ["acme/web"], automation: false)))).StatusCode);
        factory.Sidecar.SetRawActorState(Actor, "600", HandoffRunActor.SnapshotKey, "null");
        await factory.Sidecar.DeactivateActorAsync(Actor, "600");

        // The damaged run is asked for a few times (a status page, a caller retrying its 503, its event redelivered):
        // every call fails, each attempt of daprd's retries with it.
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/runs/600/handoff")).StatusCode);
        }

        // Every other run still answers.
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/601/handoff")).StatusCode);
        Assert.Equal(DeliveryOutcome.Success, (await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(602, ["acme/api"]))).Outcome);
    }

    [Fact]
    public async Task Wake_up_that_fails_on_damaged_state_is_tried_again_and_wakes_the_run_once_it_is_repaired()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time);
        var client = factory.CreateSidecarClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/600/handoff", Payloads.Trigger(Payloads.Run(600, ["acme/shop"], automation: false)))).StatusCode);
        var intact = factory.Sidecar.GetActorStateKeys(Actor, "600")[HandoffRunActor.CodingAgentsKey];
        var agentId = JsonDocument.Parse(intact).RootElement.EnumerateObject().First().Name;
        factory.Sidecar.SetRawActorState(Actor, "600", HandoffRunActor.CodingAgentsKey, "{garbage");
        await factory.Sidecar.DeactivateActorAsync(Actor, "600");

        // The poll's reminder fires on the damage and fails: before, the one-shot reminder was spent for good.
        await FireFor600Async(factory, time, TimeSpan.FromMinutes(2));
        Assert.Contains(factory.Sidecar.Reminders, reminder => reminder.ActorId == "600" && reminder.Name == HandoffRunActor.WakeReminder);

        factory.Sidecar.SetRawActorState(Actor, "600", HandoffRunActor.CodingAgentsKey, intact);
        await factory.Sidecar.DeactivateActorAsync(Actor, "600");
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/9");
        for (var i = 0; i < 4; i++)
        {
            await FireFor600Async(factory, time, TimeSpan.FromMinutes(1));
        }

        var view = await (await client.GetAsync("/runs/600/handoff")).ReadJsonAsync();
        Assert.Equal("https://github.com/acme/shop/pull/9", view["coding_agents"]![agentId]!["results"]![0]!["pr_url"]!.GetValue<string>());
    }

    private static async Task FireFor600Async(DaprServiceFactory factory, FakeTimeProvider time, TimeSpan step)
    {
        time.Advance(step);
        await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow());
        await factory.Services.GetRequiredService<BackgroundRounds>().WhenIdleAsync();
    }

    public void Dispose() => cursor.Dispose();
}
