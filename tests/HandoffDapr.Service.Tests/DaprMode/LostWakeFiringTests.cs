using System.Net;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// A <c>wake</c> firing the app never takes: its process is down while daprd still routes the run to it (until the app
/// health check fails). The Scheduler retries a failed firing three times, a second apart, then counts the tick as
/// done; a one-shot reminder would be gone, and the run's retry with it. The reminder repeats (HandoffRunActor.WakeRepeat).
/// </summary>
public sealed class LostWakeFiringTests : IAsyncLifetime
{
    private const string Actor = HandoffRunActor.ActorTypeName;
    private readonly FakeCursor cursor = new();
    private readonly Microsoft.Extensions.Time.Testing.FakeTimeProvider time = new(DateTimeOffset.UtcNow);
    private DaprServiceFactory factory = null!;
    private HttpClient client = null!;

    public async Task InitializeAsync()
    {
        factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time);
        client = factory.CreateSidecarClient();
    }

    [Fact]
    public async Task A_retry_whose_wake_firings_all_fail_while_the_app_is_down_is_made_at_the_reminders_next_repeat()
    {
        cursor.Script("acme/down", FakeCursor.Status(503));
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/700/handoff", Payloads.Trigger(Payloads.Run(700, ["acme/down"], automation: false)))).StatusCode);
        var launchesBefore = cursor.LaunchRequests;
        var reminder = Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "700");
        Assert.Equal(HandoffRunActor.WakeRepeat, TimeSpan.FromMinutes(1)); // the "0h1m0s0ms" below
        Assert.Equal("0h1m0s0ms", reminder.Period);

        // The app is down: the firing and the Scheduler's three retries, a second apart, all fail.
        var app = factory.Sidecar.AppChannel;
        factory.Sidecar.AppChannel = new RefusingHandler();
        time.Advance(reminder.NextDueAt - time.GetUtcNow());
        var failed = 0;
        for (var i = 0; i < 4; i++)
        {
            var firings = await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow());
            failed += firings.Count(f => f.Reminder.ActorId == "700" && f.StatusCode != HttpStatusCode.OK);
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Equal(4, failed);
        Assert.Equal(launchesBefore, cursor.LaunchRequests);
        // The tick is spent; the reminder is still there, due at its next repeat.
        var repeating = Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "700");
        Assert.Equal(reminder.NextDueAt + HandoffRunActor.WakeRepeat, repeating.NextDueAt);

        // The app is back: the repeat wakes the run, and the retry is made once.
        factory.Sidecar.AppChannel = app;
        time.Advance(repeating.NextDueAt - time.GetUtcNow());
        var woken = Assert.Single(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()), f => f.Reminder.ActorId == "700");
        Assert.Equal(HttpStatusCode.OK, woken.StatusCode);
        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "700", "launches")!.Value[0].GetProperty("phase").GetString() == "launched");
        Assert.Equal(launchesBefore + 1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/down"));
    }

    [Fact]
    public async Task A_wake_that_leaves_nothing_to_wake_for_removes_its_repeating_reminder()
    {
        // Refused for good (401): the wake's retry ends the launch, and the run has nothing left to wake for.
        cursor.Script("acme/down", FakeCursor.Status(503), FakeCursor.Status(401));
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/701/handoff", Payloads.Trigger(Payloads.Run(701, ["acme/down"], automation: false)))).StatusCode);
        var reminder = Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "701");

        time.Advance(reminder.NextDueAt - time.GetUtcNow());
        Assert.Equal(HttpStatusCode.OK, Assert.Single(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()), f => f.Reminder.ActorId == "701").StatusCode);

        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "701", "launches")!.Value[0].GetProperty("phase").GetString() == "failed");
        await Eventually.True(() => !factory.Sidecar.Reminders.Any(r => r.ActorId == "701"));
        time.Advance(TimeSpan.FromHours(1));
        Assert.DoesNotContain(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()), f => f.Reminder.ActorId == "701");
    }

    [Fact]
    public async Task A_wake_for_a_run_whose_state_is_gone_removes_its_repeating_reminder()
    {
        cursor.Script("acme/down", FakeCursor.Status(503));
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/702/handoff", Payloads.Trigger(Payloads.Run(702, ["acme/down"], automation: false)))).StatusCode);
        var reminder = Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "702");

        // The run's keys are gone from the store (an operator deleted them, or a store evicted them); its reminder is not.
        foreach (var key in factory.Sidecar.GetActorStateKeys(Actor, "702").Keys)
        {
            factory.Sidecar.RemoveActorState(Actor, "702", key);
        }

        (await factory.Sidecar.DeactivateActorAsync(Actor, "702")).Dispose();
        time.Advance(reminder.NextDueAt - time.GetUtcNow());
        Assert.Equal(HttpStatusCode.OK, Assert.Single(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()), f => f.Reminder.ActorId == "702").StatusCode);

        // Nothing to wake for: without its removal the reminder would fire every minute for good.
        Assert.DoesNotContain(factory.Sidecar.Reminders, r => r.ActorId == "702");
    }

    public async Task DisposeAsync()
    {
        client.Dispose();
        await factory.DisposeAsync();
        cursor.Dispose();
    }

    /// <summary>The app's port with nothing listening: every call daprd makes into it is refused.</summary>
    private sealed class RefusingHandler : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            throw new HttpRequestException("dial tcp 127.0.0.1:5080: connect: connection refused");
    }
}
