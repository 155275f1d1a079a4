using System.Net;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// At shutdown an actor turn in progress may still have to save what the provider answered; daprd keeps its APIs up
/// only while the app's health endpoint answers. So the app waits for its turns before its server stops listening.
/// </summary>
public sealed class RequestDrainTests
{
    [Fact]
    public async Task Server_keeps_answering_until_the_actor_call_in_progress_has_finished()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.Configure<HandoffOptions>(options => options.Dapr.ShutdownDrain = TimeSpan.FromSeconds(30));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(new HostingContext(HostingMode.Dapr));
        builder.Services.AddSingleton<RequestDrain>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<RequestDrain>());
        await using var app = builder.Build();
        app.UseRequestDrain();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        app.MapPut("/actors/HandoffRunActor/1/method/TriggerAsync", async () =>
        {
            entered.SetResult();
            await release.Task;
            return Results.Ok();
        });
        app.MapGet("/healthz", () => "Healthy");
        await app.StartAsync();
        var address = new Uri(app.Urls.Single());
        var drain = app.Services.GetRequiredService<RequestDrain>();

        using var daprd = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(30) };
        var turn = daprd.PutAsync("/actors/HandoffRunActor/1/method/TriggerAsync", null);
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var stopping = app.StopAsync();
        await WaitUntil(() => drain.IsDraining);

        // daprd's health probe, on a new connection as daprd's prober would open after a refusal.
        using (var probe = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.Zero }) { BaseAddress = address })
        {
            Assert.Equal(HttpStatusCode.OK, (await probe.GetAsync("/healthz")).StatusCode);
        }

        Assert.False(stopping.IsCompleted);
        release.SetResult();
        Assert.Equal(HttpStatusCode.OK, (await turn).StatusCode);
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, drain.InFlight);
        using var afterStop = new HttpClient { BaseAddress = address };
        await Assert.ThrowsAsync<HttpRequestException>(() => afterStop.GetAsync("/healthz"));
    }

    /// <summary>
    /// An API request is counted until its answer is written; the probes are not, the readiness probe as the liveness one
    /// and in any letter case: counted, a readiness check held up by a slow state store (the sidecar's, SQLite) would
    /// hold up the shutdown's drain with it.
    /// </summary>
    [Fact]
    public async Task Api_request_is_counted_until_its_answer_is_written_and_a_health_probe_is_not()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(new HostingContext(HostingMode.Dapr));
        builder.Services.AddSingleton<RequestDrain>();
        await using var app = builder.Build();
        app.UseRequestDrain();
        var writing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var written = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        // The owner has returned; the answer (a trigger's 503, say) is still being written.
        app.MapPost("/runs/1/handoff", () => new SlowAnswer(writing, written.Task));
        app.MapGet("/healthz", () => new SlowAnswer(writing, written.Task));
        app.MapGet("/readyz", () => new SlowAnswer(writing, written.Task));
        await app.StartAsync();
        var drain = app.Services.GetRequiredService<RequestDrain>();
        using var caller = new HttpClient { BaseAddress = new Uri(app.Urls.Single()), Timeout = TimeSpan.FromSeconds(30) };

        var trigger = caller.PostAsync("/runs/1/handoff", null);
        await writing.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, drain.InFlight);
        written.SetResult();
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await trigger).StatusCode);
        Assert.Equal(0, drain.InFlight);

        foreach (var path in new[] { "/healthz", "/readyz", "/ReadyZ" })
        {
            writing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            written = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var probe = caller.GetAsync(path);
            await writing.Task.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(0, drain.InFlight);
            written.SetResult();
            await probe;
        }

        await app.StopAsync();
    }

    private sealed class SlowAnswer(TaskCompletionSource writing, Task written) : IResult
    {
        public async Task ExecuteAsync(HttpContext httpContext)
        {
            writing.SetResult();
            await written;
            httpContext.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        }
    }

    [Fact]
    public async Task Drain_gives_up_at_its_limit_on_a_call_that_does_not_end()
    {
        var time = new FakeTimeProvider();
        var drain = Drain(HostingMode.Dapr, time, limit: TimeSpan.FromSeconds(40));
        _ = drain.Enter();

        var stopping = drain.StoppingAsync(CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(39));
        Assert.False(stopping.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(2));

        await stopping.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, drain.InFlight);
    }

    /// <summary>The host's own shutdown timeout, or a caller stopping it with a shorter one, ends the wait before the drain's limit.</summary>
    [Fact]
    public async Task Drain_stops_waiting_when_the_host_gives_up_before_its_limit()
    {
        var drain = Drain(HostingMode.Dapr, new FakeTimeProvider(), limit: TimeSpan.FromSeconds(40));
        _ = drain.Enter();
        using var host = new CancellationTokenSource();

        var stopping = drain.StoppingAsync(host.Token);
        host.Cancel();

        await stopping.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, drain.InFlight);
    }

    [Fact]
    public async Task Request_that_reached_the_server_after_the_drain_looked_ends_before_the_host_has_stopped()
    {
        var drain = Drain(HostingMode.Embedded);
        await drain.StoppingAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10)); // nothing in progress yet

        // A request already on its way is served after that; the app's services must outlive it.
        var late = drain.Enter();
        var stopped = drain.StoppedAsync(CancellationToken.None);
        await Task.Delay(100);
        Assert.False(stopped.IsCompleted, "the host would dispose its services under a request in progress");

        late.Dispose();
        await stopped.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Request_arriving_once_shutdown_is_over_is_refused_so_it_cannot_touch_the_apps_services()
    {
        var drain = Drain(HostingMode.Embedded);
        var served = drain.TryEnterRequest();
        Assert.NotNull(served);
        var stopped = drain.StoppedAsync(CancellationToken.None);

        // Still before shutdown is over: served, and waited for.
        var late = drain.TryEnterRequest();
        Assert.NotNull(late);
        served!.Dispose();
        await Task.Delay(50);
        Assert.False(stopped.IsCompleted);
        late!.Dispose();
        await stopped.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Null(drain.TryEnterRequest());

        // What such a request is answered instead, by the middleware and not by the route it asked for: the API's own
        // problem for an unavailable service.
        var reached = false;
        var pipeline = new ApplicationBuilder(new ServiceCollection().AddSingleton(drain).BuildServiceProvider());
        pipeline.UseRequestDrain();
        pipeline.Run(_ =>
        {
            reached = true;
            return Task.CompletedTask;
        });
        var request = new DefaultHttpContext
        {
            Request = { Method = HttpMethods.Post, Path = "/runs/1/handoff" },
            Response = { Body = new MemoryStream() },
        };
        await pipeline.Build()(request);
        Assert.False(reached, "the request reached the app's services");
        Assert.Equal((503, "application/problem+json"), (request.Response.StatusCode, request.Response.ContentType));
        var problem = System.Text.Json.Nodes.JsonNode.Parse(((MemoryStream)request.Response.Body).ToArray())!;
        Assert.Equal("https://handoff-dapr.dev/problems/unavailable", problem["type"]!.GetValue<string>());
        Assert.Equal(503, problem["status"]!.GetValue<int>());
        Assert.Equal("Temporarily unavailable", problem["title"]!.GetValue<string>());
    }

    /// <summary>
    /// With nothing in progress: a request after the first wait (the server still listens) is served; one after the last
    /// (shutdown over) is refused, as after a drain that waited.
    /// </summary>
    [Fact]
    public async Task With_nothing_in_progress_requests_are_served_until_shutdown_is_over_and_refused_after()
    {
        var drain = Drain(HostingMode.Embedded);

        await drain.StoppingAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        var served = drain.TryEnterRequest();
        Assert.NotNull(served);
        served!.Dispose();
        await drain.StoppedAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Null(drain.TryEnterRequest());
    }

    /// <summary>
    /// A call still running at the drain's limit is left to be cut off with the process, and the app's services go away:
    /// a request arriving after that is refused as one arriving after a drain that ended idle is.
    /// </summary>
    [Fact]
    public async Task Request_arriving_after_a_drain_cut_short_at_its_limit_is_refused_too()
    {
        var time = new FakeTimeProvider();
        var drain = Drain(HostingMode.Dapr, time, limit: TimeSpan.FromSeconds(40));
        _ = drain.Enter();

        var stopped = drain.StoppedAsync(CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(41));
        await stopped.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(1, drain.InFlight);
        Assert.Null(drain.TryEnterRequest());
    }

    [Fact]
    public async Task Second_wait_shares_the_one_limit_of_the_shutdown()
    {
        var time = new FakeTimeProvider();
        var drain = Drain(HostingMode.Dapr, time, limit: TimeSpan.FromSeconds(40));

        var stopped = await SecondWaitAfterAFirstOf30SecondsAsync(drain, time);
        time.Advance(TimeSpan.FromSeconds(9));
        Assert.False(stopped.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(2)); // 41 s since shutdown began

        await stopped.WaitAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>
    /// The runbook's ShutdownDraining ("as the wait starts") gives the wait's limit: the second wait's is what the first
    /// left of it, and a second wait with nothing left does not say it waits (it only says what is cut short).
    /// </summary>
    [Fact]
    public async Task Second_wait_is_logged_with_the_time_left_of_the_limit_and_not_at_all_once_it_is_spent()
    {
        var time = new FakeTimeProvider();
        var logger = new FakeLogger<RequestDrain>();
        var drain = Drain(HostingMode.Dapr, time, limit: TimeSpan.FromSeconds(40), logger);
        var stopped = await SecondWaitAfterAFirstOf30SecondsAsync(drain, time);
        time.Advance(TimeSpan.FromSeconds(11));
        await stopped.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(
            [("ShutdownDraining", "00:00:40"), ("ShutdownDrained", null), ("ShutdownDraining", "00:00:10"), ("ShutdownDrainCutShort", null)],
            logger.Collector.GetSnapshot().Select(record => (record.Id.Name, record.GetStructuredStateValue("Limit"))));

        // The call still runs: a later wait has nothing left.
        logger.Collector.Clear();
        await drain.StoppedAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(["ShutdownDrainCutShort"], logger.Collector.GetSnapshot().Select(record => record.Id.Name));
    }

    [Fact]
    public async Task Drain_waits_for_a_call_that_began_while_it_was_draining()
    {
        var drain = Drain(HostingMode.Dapr);
        var turn = drain.Enter();
        var stopping = drain.StoppingAsync(CancellationToken.None);

        // The turn in progress at SIGTERM ends, and daprd delivers a reminder whose round starts as it does.
        turn.Dispose();
        var reminder = drain.Enter();
        await Task.Delay(100);
        Assert.False(stopping.IsCompleted, $"the drain returned with {drain.InFlight} call(s) in progress");

        reminder.Dispose();
        await stopping.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Drain_with_nothing_in_progress_does_not_wait_and_counts_each_call_once()
    {
        var drain = Drain(HostingMode.Dapr);
        var call = drain.Enter();
        call.Dispose();
        call.Dispose();

        await drain.StoppingAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(0, drain.InFlight);
        Assert.False(drain.IsDraining);
    }

    /// <summary>
    /// The host cancels what is left of its stop at its ShutdownTimeout: one at the drain's limit (Handoff:Dapr:ShutdownDrain)
    /// or under it would cut the actor turns the drain waits for, and leave the server no time of its own after it.
    /// </summary>
    [Fact]
    public async Task Host_shutdown_timeout_outlasts_the_drain_as_configured_in_dapr_mode()
    {
        // Above the host's own default (30 s), which would outlast a drain under it without being set from it.
        await using var factory = await DaprServiceFactory.StartAsync("http://127.0.0.1:1", settings: new Dictionary<string, string?> { ["Handoff:Dapr:ShutdownDrain"] = "00:00:47" });

        var drain = factory.Services.GetRequiredService<RequestDrain>();
        var host = factory.Services.GetRequiredService<IOptions<HostOptions>>().Value;

        Assert.Equal(TimeSpan.FromSeconds(47), drain.Limit);
        Assert.True(host.ShutdownTimeout > drain.Limit, $"the host stops at {host.ShutdownTimeout}, the drain may take {drain.Limit}");
    }

    /// <summary>A drain as the host makes it, on a fake clock unless given one; <paramref name="limit"/> is <c>Handoff:Dapr:ShutdownDrain</c>.</summary>
    private static RequestDrain Drain(HostingMode mode, TimeProvider? time = null, TimeSpan? limit = null, ILogger<RequestDrain>? logger = null)
    {
        var options = new HandoffOptions();
        if (limit is { } shutdownDrain)
        {
            options.Dapr.ShutdownDrain = shutdownDrain;
        }

        return new RequestDrain(Options.Create(options), new HostingContext(mode), time ?? new FakeTimeProvider(), logger ?? NullLogger<RequestDrain>.Instance);
    }

    private static async Task WaitUntil(Func<bool> condition) =>
        Assert.True(await Eventually.Within(TimeSpan.FromSeconds(10), condition), "shutdown did not begin draining");

    /// <summary>The first wait (before the server stops) ends after 30 s, its call done; the second begins with a call in.</summary>
    private static async Task<Task> SecondWaitAfterAFirstOf30SecondsAsync(RequestDrain drain, FakeTimeProvider time)
    {
        var first = drain.Enter();
        var stopping = drain.StoppingAsync(CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(30));
        first.Dispose();
        await stopping.WaitAsync(TimeSpan.FromSeconds(10));
        _ = drain.Enter();
        return drain.StoppedAsync(CancellationToken.None);
    }
}
