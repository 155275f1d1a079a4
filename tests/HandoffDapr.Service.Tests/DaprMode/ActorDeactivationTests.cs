using System.Net;
using System.Text;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// daprd deactivating a run's actor (idle, rebalancing, shutdown, a lost placement stream) while a call of it still runs
/// in the app: it does not wait (targets/app/app.go Deactivate, lock.go Close), cancels its call into the app, sends the
/// DELETE while the app's method runs on, and per <c>retry: actorRetry</c> makes the call again, to a new activation.
/// The repeat must wait for the first turn and launch nothing twice. These tests do not show which lock sees to it:
/// with the run's own (HandoffRunActor.Guarded, RunLocks) taken on a random key they still pass, as
/// ActorCallTimeoutTests does (the actor runtime holds one per actor id too); HandoffRunActorTests pins the run's,
/// calling the actor directly.
/// </summary>
public sealed class ActorDeactivationTests : DaprModeTest
{
    private readonly FakeLogCollector logs = new();

    protected override Task<DaprServiceFactory> StartServiceAsync() =>
        DaprServiceFactory.StartAsync(cursor.Url, time: time, logs: logs, actorResiliency: true);

    [Fact]
    public async Task Trigger_whose_actor_is_deactivated_mid_turn_is_repeated_by_the_sidecar_and_launches_once()
    {
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/runs/175/handoff")).StatusCode); // warms the app up
        var triggers = new AppCallCounter(factory.Server.CreateHandler(), "/actors/HandoffRunActor/174/method/TriggerAsync");
        factory.Sidecar.AppChannel = triggers;

        // The trigger turn's first save waits until the sidecar has deactivated the actor and sent the call again.
        using var release = new ManualResetEventSlim();
        var saves = 0;
        var heldThroughDeactivation = false;
        factory.Sidecar.BeforeActorStateTransaction = async call =>
        {
            if (call.ActorId == "174" && Interlocked.Increment(ref saves) == 1)
            {
                heldThroughDeactivation = await Eventually.Within(TimeSpan.FromSeconds(20), () => release.IsSet);
            }
        };

        var response = client.PostJsonAsync("/runs/174/handoff", Payloads.Trigger(Payloads.Run(174, ["acme/shop"], automation: false)));
        await Eventually.True(() => Volatile.Read(ref saves) == 1);
        var deactivated = factory.Sidecar.DeactivateActorAsync(Actor, "174");
        await Eventually.True(() => triggers.Count == 2); // the cancelled call, made again to a new activation
        release.Set();
        (await deactivated).Dispose();

        var answered = await response;
        Assert.True(heldThroughDeactivation, "the first turn's save was not held through the deactivation");
        Assert.Equal(HttpStatusCode.Accepted, answered.StatusCode);
        // The first turn claimed the launch and its caller is gone; the repeat finds it claimed: a retry, not a launch.
        var answer = await answered.ReadJsonAsync();
        Assert.Empty(answer["successes"]!.AsArray());
        Assert.Equal("acme/shop", answer["retries"]![0]!["repo_name"]!.GetValue<string>());
        Assert.Equal(0, cursor.LaunchRequests);

        // The claim's deadline wakes the run: one launch, one agent.
        time.Advance(TimeSpan.FromMinutes(3));
        Assert.True((await factory.Sidecar.FireReminderAsync(Actor, "174", HandoffRunActor.WakeReminder)).IsSuccessStatusCode);
        await Eventually.True(() => LaunchPhase(174) == "launched");
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        Assert.Single(Agents(174));
    }

    /// <summary>
    /// The wake's activation is gone from daprd before its save (deactivated, or placement moved the run to another
    /// replica, whose turns register the run's reminder in the one Scheduler): the stale turn must leave that
    /// reminder be.
    /// </summary>
    [Fact]
    public async Task Wake_whose_actor_is_deactivated_mid_turn_leaves_the_reminder_to_the_next_host_and_launches_once_later()
    {
        cursor.Script("acme/down", FakeCursor.Status(503));
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/176/handoff", Payloads.Trigger(Payloads.Run(176, ["acme/down"], automation: false)))).StatusCode);
        var launchesBefore = cursor.LaunchRequests;
        time.Advance(TimeSpan.FromMinutes(10)); // the launch's retry is due
        (await factory.Sidecar.DeactivateActorAsync(Actor, "176")).Dispose(); // idle: the wake reads the run from the store

        // The wake turn's first read waits until the sidecar has deactivated the actor under it.
        using var release = new ManualResetEventSlim();
        var reads = 0;
        var heldThroughDeactivation = false;
        factory.Sidecar.BeforeActorStateRead = async call =>
        {
            if (call.ActorId == "176" && Interlocked.Increment(ref reads) == 1)
            {
                heldThroughDeactivation = await Eventually.Within(TimeSpan.FromSeconds(20), () => release.IsSet);
            }
        };

        var firing = factory.Sidecar.FireReminderAsync(Actor, "176", HandoffRunActor.WakeReminder);
        await Eventually.True(() => Volatile.Read(ref reads) == 1);
        var deactivated = factory.Sidecar.DeactivateActorAsync(Actor, "176");
        using (var fired = await firing)
        {
            // The delivery was cancelled: a failed firing for the Scheduler, while the turn runs on in the app.
            Assert.Equal(HttpStatusCode.InternalServerError, fired.StatusCode);
            Assert.Equal("context canceled", await fired.Content.ReadAsStringAsync());
        }

        // Meanwhile the run's next host registers its wake-up, 5 s out (as another replica's sidecar would).
        using (var sidecar = new HttpClient { BaseAddress = factory.Sidecar.HttpEndpoint })
        {
            var registered = await sidecar.PostAsync(
                $"/v1.0/actors/{Actor}/176/reminders/{HandoffRunActor.WakeReminder}",
                new StringContent("""{"dueTime":"5s","period":"1m"}""", Encoding.UTF8, "application/json"));
            Assert.True(registered.IsSuccessStatusCode, $"registration: {(int)registered.StatusCode}");
        }

        var nextHosts = Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "176");
        release.Set();
        (await deactivated).Dispose();
        Assert.True(heldThroughDeactivation, "the wake's read was not held through the deactivation");

        // The turn's save finds the actor gone from the sidecar (ERR_ACTOR_INSTANCE_MISSING): nothing is claimed or
        // launched, and the reminder stays the next host's.
        await Eventually.True(() => logs.GetSnapshot().Any(r => r.Id.Name == "ActorTurnFailed"));
        Assert.Equal(nextHosts, Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "176"));
        Assert.Equal("retry_scheduled", LaunchPhase(176)); // nothing claimed
        Assert.Equal(launchesBefore, cursor.LaunchRequests);

        time.Advance(TimeSpan.FromSeconds(5));
        Assert.True((await factory.Sidecar.FireReminderAsync(Actor, "176", HandoffRunActor.WakeReminder)).IsSuccessStatusCode);
        await Eventually.True(() => LaunchPhase(176) == "launched");
        Assert.Equal(launchesBefore + 1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/down"));
        Assert.Single(Agents(176));
    }
}
