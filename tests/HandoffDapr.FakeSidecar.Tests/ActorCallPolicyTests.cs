using Dapr;
using Dapr.Actors;

namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>daprd's resiliency policy around actor calls: retries, and a circuit breaker every attempt is counted by.</summary>
public sealed class ActorCallPolicyTests : SidecarTest
{
    protected override FakeSidecarOptions Options => WithTestActorPolicy(
        new ActorCallPolicy(MaxRetries: 3, BreakerConsecutiveFailures: 10, BreakerTimeout: TimeSpan.FromSeconds(30)));

    [Fact]
    public async Task Call_whose_actor_throws_is_retried_and_answered_with_the_last_attempts_error()
    {
        await Assert.ThrowsAsync<ActorMethodInvocationException>(() => Proxy("x").FailAsync("no luck"));

        Assert.Equal(4, App.ReminderLog.Failures.Count);
        Assert.Equal(1, await Proxy("x").AddAsync(1));
        var thrown = "X-DaprErrorResponseHeader"; // the SDK's answer to a method that threw: 200 with the error header
        Assert.Equal(
            [("FailAsync", thrown), ("FailAsync", thrown), ("FailAsync", thrown), ("FailAsync", thrown), ("AddAsync", null)],
            Sidecar.ActorCallAttempts.Where(attempt => attempt.ActorId == "x").Select(attempt => (attempt.Method, attempt.Error)));
    }

    [Fact]
    public async Task Type_scoped_breaker_opened_by_one_actors_failures_refuses_calls_to_every_actor_of_the_type()
    {
        // Three calls, four attempts each: twelve failures in a row.
        for (var i = 0; i < 3; i++)
        {
            await Assert.ThrowsAnyAsync<Exception>(() => Proxy("bad").FailAsync("no luck"));
        }

        var ex = await Assert.ThrowsAsync<DaprApiException>(() => Proxy("good").AddAsync(1));

        Assert.Equal("ERR_ACTOR_INVOKE_METHOD", ex.ErrorCode);
        Assert.Equal("error invoke actor method: circuit breaker is open", ex.Message);
        Assert.Equal(10, App.ReminderLog.Failures.Count); // the breaker opened at the tenth; the rest never reached the app
        Assert.Null(Sidecar.GetActorState("TestActor", "good", "count"));
    }
}

/// <summary>The same with <c>circuitBreakerScope: id</c>: one breaker per actor.</summary>
public sealed class ActorCallPolicyPerIdTests : SidecarTest
{
    protected override FakeSidecarOptions Options => WithTestActorPolicy(
        new ActorCallPolicy(MaxRetries: 3, BreakerConsecutiveFailures: 10, BreakerTimeout: TimeSpan.FromSeconds(30), BreakerPerActorId: true));

    [Fact]
    public async Task Id_scoped_breaker_refuses_only_the_failing_actor()
    {
        var proxy = Proxy("bad");
        for (var i = 0; i < 3; i++)
        {
            await Assert.ThrowsAnyAsync<Exception>(() => proxy.FailAsync("no luck"));
        }

        Assert.Equal(1, await Proxy("good").AddAsync(1));
        var ex = await Assert.ThrowsAsync<DaprApiException>(() => proxy.AddAsync(1));
        Assert.Equal("error invoke actor method: circuit breaker is open", ex.Message);
    }
}

/// <summary>
/// What daprd's actor retry does with the app's answers (<see cref="RawActorApp"/>: the status is the test's): a 404 is
/// "actor method not found", a permanent error the retry stops at (targets/app/app.go doInvokeMethod); any other failure is
/// tried again. The circuit breaker counts both.
/// </summary>
public sealed class ActorCallPolicyAppAnswerTests : IAsyncLifetime
{
    private FakeDaprSidecar sidecar = null!;
    private RawActorApp app = null!;
    private HttpClient http = null!;

    public async Task InitializeAsync()
    {
        var options = new FakeSidecarOptions();
        options.ActorCallPolicies["Raw"] = new ActorCallPolicy(MaxRetries: 3, BreakerConsecutiveFailures: 10, BreakerTimeout: TimeSpan.FromSeconds(30));
        sidecar = await FakeDaprSidecar.StartAsync(options);
        app = await RawActorApp.StartAsync(sidecar);
        app.Reply = (_, method) => method switch
        {
            "gone" => Microsoft.AspNetCore.Http.Results.NotFound(),
            // Each attempt's answer names its number, so that which one the caller is answered with can be told.
            "broken" => Microsoft.AspNetCore.Http.Results.Text(
                $"attempt {app.Arrivals.Count(arrival => arrival == "a/broken")}", statusCode: 500),
            _ => Microsoft.AspNetCore.Http.Results.Ok(),
        };
        http = new HttpClient { BaseAddress = sidecar.HttpEndpoint };
    }

    public async Task DisposeAsync()
    {
        http.Dispose();
        await app.DisposeAsync();
        await sidecar.DisposeAsync();
    }

    [Fact]
    public async Task Method_the_app_answers_404_is_not_retried()
    {
        using var response = await http.PutAsync("v1.0/actors/Raw/a/method/gone", new StringContent("{}"));

        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Equal("""{"errorCode":"ERR_ACTOR_INVOKE_METHOD","message":"error invoke actor method: actor method not found: actors/Raw/a/method/gone"}""",
            await response.Content.ReadAsStringAsync());
        Assert.Equal(["a/gone"], app.Arrivals);
    }

    [Fact]
    public async Task Method_the_app_answers_500_is_retried_and_answered_with_the_last_attempts_error()
    {
        using var response = await http.PutAsync("v1.0/actors/Raw/a/method/broken", new StringContent("{}"));

        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Equal(4, app.Arrivals.Count(arrival => arrival == "a/broken"));
        var answer = await response.Content.ReadAsStringAsync();
        Assert.EndsWith("""error invoke actor method: error from actor service: (500) attempt 4"}""", answer);
    }
}
