using System.Net;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// daprd's actor-call timeout (components/resiliency.yaml <c>timeout: actorCall</c>, shortened here): past it daprd
/// cancels its call into the app, frees the actor's turn and, per <c>retry: actorRetry</c>, makes the call again while
/// the app's first turn still runs. The repeat must wait for that turn: two locks see to it in this process, the run's
/// own (HandoffRunActor.Guarded, RunLocks) and the actor runtime's (Dapr.Actors 1.19 ActorTurnLock, taken in
/// ActorManager.DispatchInternalAsync); with the run's lock taken on a random key this test still passes.
/// </summary>
public sealed class ActorCallTimeoutTests : DaprModeTest
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromMilliseconds(1500);

    protected override Task<DaprServiceFactory> StartServiceAsync() =>
        DaprServiceFactory.StartAsync(cursor.Url, time: time, actorResiliency: true, actorCallTimeout: CallTimeout);

    [Fact]
    public async Task Trigger_whose_first_turn_outlasts_the_actor_call_timeout_is_repeated_by_the_sidecar_and_launches_once()
    {
        // A first actor call (activation, JIT) warms the app up, so only the slow write below outlasts the timeout.
        // On a busy machine it may outlast it too (and be sent again): only the timeouts after it count.
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/runs/171/handoff")).StatusCode);
        var timeoutsBefore = factory.Sidecar.ActorCallTimeouts;

        // The trigger turn's first save is slow: it answers only after the sidecar has given up on the call (and, with no
        // wait between attempts, sent it again). Awaited, not blocked on: a blocked thread-pool thread could delay the
        // very timer callback of the sidecar's that it waits for (CI once waited 15 s for it, with a spinning thread).
        var slowWrites = 0;
        var gaveUpWhileTheTurnRan = false;
        factory.Sidecar.BeforeActorStateTransaction = async call =>
        {
            if (call.ActorType == HandoffRunActor.ActorTypeName && call.ActorId == "170" && Interlocked.Increment(ref slowWrites) == 1)
            {
                gaveUpWhileTheTurnRan = await Eventually.Within(TimeSpan.FromSeconds(15), () => factory.Sidecar.ActorCallTimeouts > timeoutsBefore);
                await Task.Delay(300); // time for the repeat, sent at once, to reach the app while this turn still runs
            }
        };

        var response = await client.PostJsonAsync("/runs/170/handoff", Payloads.Trigger(Payloads.Run(170, ["acme/shop"], automation: false)));

        Assert.True(gaveUpWhileTheTurnRan, "the sidecar never gave up on the slow turn");
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);

        // The caller got the repeat's answer: the launch was claimed by the first turn, whose answer the sidecar threw
        // away, so it is a retry for later, not a second launch now.
        var answer = await response.ReadJsonAsync();
        Assert.Empty(answer["successes"]!.AsArray());
        Assert.Equal("acme/shop", answer["retries"]![0]!["repo_name"]!.GetValue<string>());
        Assert.Equal(0, cursor.LaunchRequests);

        // When the claim's retry is due the run's wake reminder resolves it: one launch, one agent.
        time.Advance(TimeSpan.FromMinutes(3));
        Assert.True((await factory.Sidecar.FireReminderAsync(HandoffRunActor.ActorTypeName, "170", HandoffRunActor.WakeReminder)).IsSuccessStatusCode);
        // The reminder's turn ends once the attempt is saved in flight; the call and its answer's turn follow.
        await Eventually.True(() => LaunchPhase(170) == "launched");
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        var agents = factory.Sidecar.GetActorState(HandoffRunActor.ActorTypeName, "170", "coding_agents");
        Assert.NotNull(agents);
        Assert.Single(agents.Value.EnumerateObject());
    }

    [Fact]
    public async Task Wake_whose_turn_outlasts_the_actor_call_timeout_is_fired_again_while_it_runs_and_launches_once()
    {
        // daprd gives a reminder's delivery the same timeout (targets/app/app.go InvokeReminder, post-lock policy) and
        // reports it FAILED; the Scheduler fires it again 1 s later (here: FireReminderAsync once more) while the first
        // turn still runs in the app.
        cursor.Script("acme/down", FakeCursor.Status(503));
        var trigger = await client.PostJsonAsync("/runs/172/handoff", Payloads.Trigger(Payloads.Run(172, ["acme/down"], automation: false)));
        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        var launchesBefore = cursor.LaunchRequests;
        time.Advance(TimeSpan.FromMinutes(10)); // the launch's retry is due

        var deliveries = new AppCallCounter(factory.Server.CreateHandler(), "/actors/HandoffRunActor/172/method/remind/wake");
        factory.Sidecar.AppChannel = deliveries;
        var timeoutsBefore = factory.Sidecar.ActorCallTimeouts;
        using var release = new ManualResetEventSlim();
        var slowSaves = 0;
        var heldWhileRepeated = false;
        factory.Sidecar.BeforeActorStateTransaction = async call =>
        {
            // The wake turn's first save (the launch claimed in flight) waits until the sidecar has given up on the
            // delivery and the Scheduler's repeat has reached the app.
            if (call.ActorId == "172" && Interlocked.Increment(ref slowSaves) == 1)
            {
                heldWhileRepeated = await Eventually.Within(TimeSpan.FromSeconds(20), () => release.IsSet);
            }
        };

        using (var first = await factory.Sidecar.FireReminderAsync(HandoffRunActor.ActorTypeName, "172", HandoffRunActor.WakeReminder))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, first.StatusCode);
            Assert.Equal("context deadline exceeded", await first.Content.ReadAsStringAsync());
        }

        Assert.Equal(timeoutsBefore + 1, factory.Sidecar.ActorCallTimeouts);
        // Not spent: the Scheduler's failure policy fires the same tick again.
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "172" && r.Name == HandoffRunActor.WakeReminder);
        var repeat = factory.Sidecar.FireReminderAsync(HandoffRunActor.ActorTypeName, "172", HandoffRunActor.WakeReminder);
        await Eventually.True(() => deliveries.Count == 2);
        release.Set();
        (await repeat).Dispose();

        Assert.True(heldWhileRepeated, "the first turn's save was not held until the repeat arrived");
        // The first turn claimed the launch and made it; the repeat found it under way and made none.
        await Eventually.True(() => LaunchPhase(172) == "launched");
        Assert.Equal(launchesBefore + 1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/down"));
        Assert.Single(Agents(172));
        // And the run still has its wake-up (the agent's status poll).
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "172" && r.Name == HandoffRunActor.WakeReminder);
    }
}

/// <summary>The sidecar's channel to the app, counting the requests to one path as they are sent.</summary>
internal sealed class AppCallCounter(HttpMessageHandler app, string path) : DelegatingHandler(app)
{
    private int count;

    public int Count => Volatile.Read(ref count);

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (request.RequestUri?.AbsolutePath == path)
        {
            Interlocked.Increment(ref count);
        }

        return base.SendAsync(request, cancellationToken);
    }
}
