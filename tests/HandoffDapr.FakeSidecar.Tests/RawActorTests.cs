using System.Net;
using System.Text;
using static HandoffDapr.FakeSidecar.Tests.SidecarTest;

namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>
/// daprd's actor rules seen on the app channel itself (<see cref="RawActorApp"/>: no Dapr SDK, whose own turn lock would
/// hide the sidecar's): one call at a time per actor id (targets/app/lock/lock.go, reentrancy off) for method calls and
/// reminder deliveries alike (targets/app/app.go InvokeMethod and InvokeReminder take the lock), and what a deactivation
/// does to calls waiting for the turn.
/// </summary>
public sealed class RawActorTests : IAsyncLifetime
{
    private FakeDaprSidecar sidecar = null!;
    private RawActorApp app = null!;
    private HttpClient http = null!;

    public async Task InitializeAsync()
    {
        sidecar = await FakeDaprSidecar.StartAsync();
        app = await RawActorApp.StartAsync(sidecar);
        http = new HttpClient { BaseAddress = sidecar.HttpEndpoint, Timeout = TimeSpan.FromSeconds(60) };
    }

    public async Task DisposeAsync()
    {
        http.Dispose();
        await app.DisposeAsync();
        await sidecar.DisposeAsync();
    }

    [Fact]
    public async Task A_second_call_to_the_same_actor_waits_for_the_first_turn()
    {
        var first = Call("a", "hold");
        await WaitUntil(() => app.Inside("a") == 1);

        var second = Call("a", "quick");
        await SettleAsync();

        Assert.False(app.Arrived("a/quick")); // held back by the sidecar, not sent beside the first
        app.ReleaseHolds();
        using (var r1 = await first)
        using (var r2 = await second)
        {
            Assert.Equal((HttpStatusCode.OK, HttpStatusCode.OK), (r1.StatusCode, r2.StatusCode));
        }

        Assert.Equal(1, app.MaxInsidePerId);
        Assert.Equal(["a/hold", "other/quick", "a/quick"], app.Arrivals);
    }

    [Fact]
    public async Task A_reminder_firing_waits_for_the_turn_of_a_call_in_progress()
    {
        await RegisterReminder("r", "once", """{"dueTime":"1s"}""");
        var call = Call("r", "hold");
        await WaitUntil(() => app.Inside("r") == 1);

        var firing = sidecar.FireReminderAsync("Raw", "r", "once");
        await SettleAsync();

        Assert.False(app.Arrived("r/remind/once"));
        app.ReleaseHolds();
        (await call).Dispose();
        using var fired = await firing;
        Assert.Equal(HttpStatusCode.OK, fired.StatusCode);
        Assert.Equal(1, app.MaxInsidePerId);
        Assert.Empty(sidecar.Reminders); // a one-shot reminder delivered is spent
    }

    [Fact]
    public async Task A_call_waiting_for_the_turn_fails_with_actor_lock_is_closed_when_the_actor_is_deactivated()
    {
        var first = Call("d", "hold");
        await WaitUntil(() => app.Inside("d") == 1);
        var waiting = Call("d", "quick");
        await SettleAsync();

        (await sidecar.DeactivateActorAsync("Raw", "d")).Dispose();

        using (var w = await waiting)
        {
            Assert.Equal(HttpStatusCode.InternalServerError, w.StatusCode);
            Assert.Equal("""{"errorCode":"ERR_ACTOR_INVOKE_METHOD","message":"error invoke actor method: actor lock is closed"}""",
                await w.Content.ReadAsStringAsync());
        }

        using (var f = await first)
        {
            Assert.Contains("context canceled", await f.Content.ReadAsStringAsync());
        }

        Assert.False(app.Arrived("d/quick"));
        Assert.Equal(1, app.MaxInsidePerId);
    }

    [Fact]
    public async Task A_reminder_re_registered_while_it_fires_keeps_the_new_registration()
    {
        await RegisterReminder("x", "hold", """{"dueTime":"1s"}""");
        var firing = sidecar.FireReminderAsync("Raw", "x", "hold");
        await WaitUntil(() => app.Inside("x") == 1);

        await RegisterReminder("x", "hold", """{"dueTime":"1h"}"""); // a new job: the old one's result is not its own
        app.ReleaseHolds();
        using (var fired = await firing)
        {
            Assert.Equal(HttpStatusCode.OK, fired.StatusCode);
        }

        var kept = Assert.Single(sidecar.Reminders);
        Assert.Equal(("hold", "1h"), (kept.Name, kept.DueTime));
    }

    [Theory]
    [InlineData(200, true)] // the .NET SDK's way of reporting an exception: 200 with X-DaprErrorResponseHeader
    [InlineData(204, false)] // daprd wants exactly 200
    public async Task A_reminder_firing_answered_with_the_error_header_or_a_status_other_than_200_is_a_failed_firing(int status, bool errorHeader)
    {
        app.Reply = (_, method) => method == "remind/once" ? new RawReply(status, errorHeader) : Microsoft.AspNetCore.Http.Results.Ok();
        await RegisterReminder("f", "once", """{"dueTime":"1s"}""");
        var due = Assert.Single(sidecar.Reminders).NextDueAt;

        (await sidecar.FireReminderAsync("Raw", "f", "once")).Dispose();

        Assert.Equal(due.AddSeconds(1), Assert.Single(sidecar.Reminders).NextDueAt); // not spent: the Scheduler retries it 1 s later
    }

    [Fact]
    public async Task A_reminder_delivery_activates_the_actor_so_its_state_can_be_saved()
    {
        const string Ops = """[{"operation":"upsert","request":{"key":"k","value":1}}]""";
        await RegisterReminder("n", "once", """{"dueTime":"1s"}""");

        using (var fired = await sidecar.FireReminderAsync("Raw", "n", "once"))
        {
            Assert.Equal(HttpStatusCode.OK, fired.StatusCode);
        }

        using var saved = await http.PutAsync("v1.0/actors/Raw/n/state", new StringContent(Ops));
        Assert.Equal(HttpStatusCode.NoContent, saved.StatusCode);
        Assert.Equal(1, sidecar.GetActorState("Raw", "n", "k")!.Value.GetInt32());
    }

    private Task<HttpResponseMessage> Call(string id, string method) =>
        http.PutAsync($"v1.0/actors/Raw/{id}/method/{method}", new StringContent("{}", Encoding.UTF8, "application/json"));

    private async Task RegisterReminder(string id, string name, string body)
    {
        using var response = await http.PutAsync($"v1.0/actors/Raw/{id}/reminders/{name}", new StringContent(body));
        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
    }

    /// <summary>
    /// Gives requests already sent time to reach the app if the sidecar let them: a call to another actor id goes all
    /// the way through, then a short pause. A request the sidecar rightly holds back is never sent, however long this takes.
    /// </summary>
    private async Task SettleAsync()
    {
        using (var other = await Call("other", "quick"))
        {
            Assert.Equal(HttpStatusCode.OK, other.StatusCode);
        }

        await Task.Delay(300);
    }

    /// <summary>A reply with a status and, optionally, the header the .NET SDK sets when the actor threw.</summary>
    private sealed class RawReply(int status, bool errorHeader) : Microsoft.AspNetCore.Http.IResult
    {
        public Task ExecuteAsync(Microsoft.AspNetCore.Http.HttpContext httpContext)
        {
            httpContext.Response.StatusCode = status;
            if (errorHeader)
            {
                httpContext.Response.Headers["X-DaprErrorResponseHeader"] = "true";
            }

            return Task.CompletedTask;
        }
    }
}
