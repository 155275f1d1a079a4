using System.Net;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// Handoff:RunRetention in Dapr mode: a settled run's state keys all get the same TTL at its save, a run with something
/// pending has none on any key (also once it had one), and a completion event redelivered after the keys expired meets
/// the tombstone and launches nothing. The fake sidecar expires keys as the Redis store does (a write without
/// ttlInSeconds keeps a key's TTL; "-1" takes it off), on the same clock as the app.
/// </summary>
public sealed class DaprRetentionTests : DaprModeTest
{
    private const string Route = "autofix-run-completed";
    private static readonly TimeSpan Retention = TimeSpan.FromDays(1);

    // The sidecar on the app's clock too: its keys expire as the app's time moves.
    protected override Task<DaprServiceFactory> StartServiceAsync() => DaprServiceFactory.StartAsync(
        cursor.Url, time: time, sidecarTime: time, settings: new Dictionary<string, string?> { ["Handoff:RunRetention"] = "1.00:00:00" });

    [Fact]
    public async Task Every_key_of_a_settled_run_expires_at_the_same_moment_and_its_tombstone_after()
    {
        await SettleAsync(800);

        var expiries = factory.Sidecar.GetActorStateExpiries(Actor, "800");
        var runKeys = expiries.Where(key => key.Key != HandoffRunActor.DeletedRunKey).ToList();
        Assert.Contains(runKeys, key => key.Key == "snapshot");
        Assert.Contains(runKeys, key => key.Key == "launches");
        Assert.All(runKeys, key => Assert.Equal(time.GetUtcNow() + Retention, key.Value));
        Assert.Equal(time.GetUtcNow() + Retention + Core.Handoff.RunRetention.TombstoneLifetime, expiries[HandoffRunActor.DeletedRunKey]);
    }

    /// <summary>
    /// The TTL is taken off as the store needs: Redis keeps a key's TTL on a write without one, so the keys are written
    /// with "-1"; SQL Server, MongoDB and DynamoDB store now + ttl, so "-1" would delete the run at once (its pending
    /// retry lost, a redelivered event launching again), and the keys are written without a TTL.
    /// </summary>
    [Theory]
    [InlineData("state.redis")]
    [InlineData("state.sqlserver")]
    public async Task A_run_with_something_pending_again_has_no_ttl_on_any_key(string storeType)
    {
        factory.Sidecar.Options.StateStoreType = storeType;
        await SettleAsync(801);
        Assert.All(factory.Sidecar.GetActorStateExpiries(Actor, "801").Values, expiry => Assert.NotNull(expiry));

        var trigger = await RelaunchWhileTheProviderIsDownAsync(801);

        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        var expiries = factory.Sidecar.GetActorStateExpiries(Actor, "801");
        Assert.Contains("launches", expiries.Keys);
        Assert.Contains("snapshot", expiries.Keys);
        Assert.DoesNotContain(HandoffRunActor.DeletedRunKey, expiries.Keys);
        Assert.All(expiries, key => Assert.Null(key.Value));
        // Long past the retention the pending run is all there, and read as it was.
        time.Advance(Retention * 2);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/801/handoff")).StatusCode);
        Assert.Equal("retry_scheduled", LaunchPhase(801));
    }

    [Fact]
    public async Task A_run_pending_again_is_not_saved_while_the_actor_state_stores_type_cannot_be_told_and_keeps_its_ttl()
    {
        // Two stores of two types could hold actors, neither named Handoff:Dapr:StateStoreName: taking the TTL off the
        // wrong way would delete the run (or leave it to expire), so the save fails, and readiness says why.
        await SettleAsync(804);
        var settled = factory.Sidecar.GetActorStateExpiries(Actor, "804");
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);
        factory.Sidecar.Options.StateStoreNames.Clear();
        factory.Sidecar.Options.StateStoreNames.Add("actors");
        factory.Sidecar.Options.OtherStateStores["cache"] = "state.postgresql";

        var trigger = await RelaunchWhileTheProviderIsDownAsync(804);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, trigger.StatusCode);
        Assert.Equal(settled, factory.Sidecar.GetActorStateExpiries(Actor, "804"));
        Assert.Equal("failed", LaunchPhase(804));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/readyz")).StatusCode);
        Assert.DoesNotContain("not known", await trigger.Content.ReadAsStringAsync(), StringComparison.Ordinal); // no exception text
    }

    [Fact]
    public async Task A_run_pending_again_on_a_slow_store_that_refuses_a_ttl_below_minus_one_still_saves_without_ttl()
    {
        // The SDK counts a TTL from the SetStateAsync and sends the whole seconds left at the save: reads of the store
        // between the two (here slow, as a loaded PostgreSQL or Cosmos DB may be) must not age "-1" to "-2", which
        // those stores refuse, failing the turn again at every retry for as long as the store is slow.
        await SettleAsync(802);
        factory.Sidecar.Options.StateStoreRefusesTtlBelowMinusOne = true;
        // Slow until its next save, the one that takes the TTL off: a read then takes longer than a second.
        var saved = 0;
        factory.Sidecar.BeforeActorStateTransaction = _ => Task.FromResult(Interlocked.Exchange(ref saved, 1));
        factory.Sidecar.BeforeActorStateRead = _ => Volatile.Read(ref saved) == 0 ? Task.Delay(TimeSpan.FromSeconds(1.1)) : Task.CompletedTask;

        var trigger = await RelaunchWhileTheProviderIsDownAsync(802);

        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        var expiries = factory.Sidecar.GetActorStateExpiries(Actor, "802");
        Assert.DoesNotContain(HandoffRunActor.DeletedRunKey, expiries.Keys);
        Assert.All(expiries, key => Assert.Null(key.Value));
        Assert.Equal("retry_scheduled", LaunchPhase(802));
    }

    [Fact]
    public async Task A_completion_event_redelivered_after_the_run_expired_launches_nothing_and_reads_and_triggers_say_deleted()
    {
        var run = await SettleAsync(802);
        var launches = cursor.LaunchRequests;

        time.Advance(Retention + TimeSpan.FromMinutes(1));
        Assert.Equal([HandoffRunActor.DeletedRunKey], factory.Sidecar.GetActorStateKeys(Actor, "802").Keys);
        var redelivery = await factory.Sidecar.DeliverEventAsync("pubsub", Route, run);
        var read = await client.GetAsync("/runs/802/handoff");
        var trigger = await client.PostJsonAsync("/runs/802/handoff", Payloads.Trigger());
        var listed = await (await client.GetAsync("/runs")).ReadJsonArrayAsync();

        Assert.Equal(DeliveryOutcome.Success, redelivery.Outcome);
        Assert.Equal(1, launches);
        Assert.Equal(launches, cursor.LaunchRequests);
        Assert.Equal([HandoffRunActor.DeletedRunKey], factory.Sidecar.GetActorStateKeys(Actor, "802").Keys);
        Assert.Equal(HttpStatusCode.NotFound, read.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/run-deleted", (await read.ReadJsonAsync())["type"]!.GetValue<string>());
        // The trigger's answer carries the deletion time across the actor call (TriggerOutcome.DeletedAt).
        Assert.Equal(HttpStatusCode.NotFound, trigger.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/run-deleted", (await trigger.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(launches, cursor.LaunchRequests);
        Assert.DoesNotContain(listed, listedRun => listedRun!["run_id"]!.GetValue<long>() == 802);
    }

    [Fact]
    public async Task A_followup_at_the_provider_when_the_run_expires_keeps_its_run_and_is_recorded()
    {
        var launched = await client.PostJsonAsync("/runs/803/handoff", Payloads.Trigger(Payloads.Run(803, ["acme/shop"], automation: false)));
        var agentId = await launched.ReadFirstLaunchedAgentIdAsync();
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/8");
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Sidecar.FireReminderAsync(Actor, "803", HandoffRunActor.WakeReminder);
        await Eventually.True(() => factory.Sidecar.GetActorStateExpiries(Actor, "803").ContainsKey(HandoffRunActor.DeletedRunKey));
        time.Advance(Retention - TimeSpan.FromMinutes(1));

        // A person's follow-up reaches the provider; the run's retention runs out before the provider answers.
        using var held = cursor.HoldCommands();
        var followup = client.PostJsonAsync($"/runs/803/agents/{agentId}/followup", new System.Text.Json.Nodes.JsonObject { ["text"] = "Add a test" });
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        time.Advance(TimeSpan.FromMinutes(2));
        held.Release();
        var answer = await followup;

        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/803/handoff")).StatusCode);
        Assert.Contains(
            factory.Sidecar.GetActorState(Actor, "803", "timeline")!.Value.EnumerateArray(),
            entry => entry.GetProperty("event").GetString() == "followup_sent");
    }

    /// <summary>
    /// A state store whose clock is ahead of the app's expires a settled run's keys before the tombstone's deleted_at has
    /// come on the app's clock: the tombstone alone is left, and the run is read as deleted all the same, never as one
    /// not stored yet that a redelivered event would hand off again.
    /// </summary>
    [Fact]
    public async Task A_run_whose_keys_expired_before_its_deleted_at_on_the_apps_clock_is_read_as_deleted()
    {
        var run = await SettleAsync(804);
        var launches = cursor.LaunchRequests;
        time.Advance(Retention - TimeSpan.FromMinutes(5));
        foreach (var key in factory.Sidecar.GetActorStateKeys(Actor, "804").Keys.Where(key => key != HandoffRunActor.DeletedRunKey).ToList())
        {
            factory.Sidecar.RemoveActorState(Actor, "804", key);
        }

        await factory.Sidecar.DeactivateActorAsync(Actor, "804");

        var redelivery = await factory.Sidecar.DeliverEventAsync("pubsub", Route, run);
        var read = await client.GetAsync("/runs/804/handoff");

        Assert.Equal(DeliveryOutcome.Success, redelivery.Outcome);
        Assert.Equal(launches, cursor.LaunchRequests);
        Assert.Equal([HandoffRunActor.DeletedRunKey], factory.Sidecar.GetActorStateKeys(Actor, "804").Keys);
        Assert.Equal(HttpStatusCode.NotFound, read.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/run-deleted", (await read.ReadJsonAsync())["type"]!.GetValue<string>());
    }

    /// <summary>
    /// The ids of a run's recorded stops and follow-ups (kept so daprd's retry of a recording records nothing twice) are
    /// one of the run's keys: a save that settles the run gives them its TTL with the others, so once the run has
    /// expired nothing of it but the tombstone is left in the store.
    /// </summary>
    [Fact]
    public async Task A_settled_runs_recorded_command_ids_expire_with_its_other_keys()
    {
        var launched = await client.PostJsonAsync("/runs/805/handoff", Payloads.Trigger(Payloads.Run(805, ["acme/shop"], automation: false)));
        var agentId = await launched.ReadFirstLaunchedAgentIdAsync();

        // The stop ends the run's one agent; the status poll it had scheduled finds nothing left to watch and settles the run.
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"/runs/805/agents/{agentId}/stop", null)).StatusCode);
        Assert.Contains(HandoffRunActor.RecordedCommandsKey, factory.Sidecar.GetActorStateKeys(Actor, "805").Keys);
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Sidecar.FireReminderAsync(Actor, "805", HandoffRunActor.WakeReminder);
        await Eventually.True(() => factory.Sidecar.GetActorStateExpiries(Actor, "805").ContainsKey(HandoffRunActor.DeletedRunKey));

        var expiries = factory.Sidecar.GetActorStateExpiries(Actor, "805");
        Assert.Contains(HandoffRunActor.RecordedCommandsKey, expiries.Keys);
        Assert.Contains(HandoffRunActor.DeletedRunKey, expiries.Keys);
        Assert.All(expiries.Where(key => key.Key != HandoffRunActor.DeletedRunKey), key => Assert.Equal(time.GetUtcNow() + Retention, key.Value));
        time.Advance(Retention + TimeSpan.FromMinutes(1));
        Assert.Equal([HandoffRunActor.DeletedRunKey], factory.Sidecar.GetActorStateKeys(Actor, "805").Keys);
    }

    /// <summary>
    /// The digests of the snapshots a run replaced are one of its keys too, written only when they change: replaced
    /// while an agent was at work (no TTL then), they get the run's TTL at the save that settles it, so once the run
    /// has expired nothing of it but the tombstone is left in the store.
    /// </summary>
    [Fact]
    public async Task A_settled_runs_replaced_snapshots_written_while_it_was_pending_expire_with_its_other_keys()
    {
        var first = Payloads.Run(806, ["acme/shop"], automation: false);
        var launched = await client.PostJsonAsync("/runs/806/handoff", Payloads.Trigger(first));
        var agentId = await launched.ReadFirstLaunchedAgentIdAsync();
        var newer = Payloads.Run(806, ["acme/shop", "acme/web"], automation: false);
        var replacing = await factory.Sidecar.DeliverEventAsync("pubsub", Route, newer);
        Assert.Equal(DeliveryOutcome.Success, replacing.Outcome);
        Assert.Null(factory.Sidecar.GetActorStateExpiries(Actor, "806")[HandoffRunActor.ReplacedSnapshotsKey]);

        // The stop ends the run's one agent; the status poll it had scheduled finds nothing left and settles the run.
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"/runs/806/agents/{agentId}/stop", null)).StatusCode);
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Sidecar.FireReminderAsync(Actor, "806", HandoffRunActor.WakeReminder);
        await Eventually.True(
            () => factory.Sidecar.GetActorStateExpiries(Actor, "806").ContainsKey(HandoffRunActor.DeletedRunKey));

        var expiries = factory.Sidecar.GetActorStateExpiries(Actor, "806");
        Assert.Equal(time.GetUtcNow() + Retention, expiries[HandoffRunActor.ReplacedSnapshotsKey]);
        time.Advance(Retention + TimeSpan.FromMinutes(1));
        Assert.Equal([HandoffRunActor.DeletedRunKey], factory.Sidecar.GetActorStateKeys(Actor, "806").Keys);
    }

    /// <summary>A person relaunches the settled run's failed repository an hour on; the provider is down: a retry is pending.</summary>
    private async Task<HttpResponseMessage> RelaunchWhileTheProviderIsDownAsync(long runId)
    {
        cursor.Script("acme/shop", FakeCursor.Status(503));
        time.Advance(TimeSpan.FromHours(1));
        return await client.PostJsonAsync($"/runs/{runId}/handoff", Payloads.Trigger());
    }

    /// <summary>A completion event whose one launch the provider refuses for good: nothing pending.</summary>
    private async Task<System.Text.Json.Nodes.JsonObject> SettleAsync(long runId)
    {
        cursor.Script("acme/shop", FakeCursor.Status(401));
        var run = Payloads.Run(runId, ["acme/shop"]);
        Assert.Equal(DeliveryOutcome.Success, (await factory.Sidecar.DeliverEventAsync("pubsub", Route, run)).Outcome);
        Assert.Equal("failed", LaunchPhase(runId));
        return run;
    }
}
