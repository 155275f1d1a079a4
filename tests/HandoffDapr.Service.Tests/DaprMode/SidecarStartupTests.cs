using System.Diagnostics;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

public sealed class SidecarStartupTests
{
    /// <summary>
    /// The wait runs on the app's clock: an hour's wait, which real time would not run out within the test, ends when the
    /// test moves the clock past it. The real process's exit code is StartupErrorTests'.
    /// </summary>
    [Fact]
    public async Task Dapr_mode_stops_the_process_when_no_sidecar_answers_in_time_with_a_critical_line_naming_the_wait()
    {
        var logs = new FakeLogCollector();
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(builder =>
        {
            builder.UseEnvironment("Production");
            builder.UseSetting("Handoff:Mode", "Dapr");
            // Nothing listens on port 9 of loopback.
            builder.UseSetting("DAPR_HTTP_ENDPOINT", "http://127.0.0.1:9");
            builder.UseSetting("DAPR_GRPC_ENDPOINT", "http://127.0.0.1:9");
            builder.UseSetting("Handoff:Dapr:SidecarWaitTimeout", "01:00:00");
            builder.ConfigureLogging(logging => logging.AddProvider(new FakeLoggerProvider(logs)));
            builder.ConfigureServices(services => services.Replace(ServiceDescriptor.Singleton<TimeProvider>(time)));
        });
        _ = factory.Server;
        var stopping = factory.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;

        // Moved again until the app stops: the wait starts on the thread pool after the host has started, at a moment
        // the test cannot see, and a clock moved before it began would not count.
        var realTime = Stopwatch.StartNew();
        while (!stopping.IsCancellationRequested && realTime.Elapsed < TimeSpan.FromSeconds(30))
        {
            time.Advance(TimeSpan.FromHours(1) + TimeSpan.FromSeconds(1));
            await Task.Delay(50);
        }

        Assert.True(stopping.IsCancellationRequested, "The app did not stop once its clock had passed the sidecar wait.");
        // The runbook's SidecarMissing: critical, with the wait (Handoff:Dapr:SidecarWaitTimeout) that ran out.
        var missing = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarMissing");
        Assert.Equal((LogLevel.Critical, "01:00:00"), (missing.Level, missing.GetStructuredStateValue("Timeout")));
    }

    /// <summary>
    /// A shutdown (SIGTERM, a rolling update) while the app still waits for its sidecar is an ordinary stop: not the
    /// start-up failure of a sidecar that never came, with its critical line and failing exit code.
    /// </summary>
    [Fact]
    public async Task Shutdown_while_waiting_for_the_sidecar_is_an_ordinary_stop_not_a_missing_sidecar()
    {
        var logs = new FakeLogCollector();
        var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(builder =>
        {
            builder.UseEnvironment("Production");
            builder.UseSetting("Handoff:Mode", "Dapr");
            // Nothing listens on port 9 of loopback.
            builder.UseSetting("DAPR_HTTP_ENDPOINT", "http://127.0.0.1:9");
            builder.UseSetting("DAPR_GRPC_ENDPOINT", "http://127.0.0.1:9");
            builder.UseSetting("Handoff:Dapr:SidecarWaitTimeout", "01:00:00");
            builder.ConfigureLogging(logging => logging.AddProvider(new FakeLoggerProvider(logs)));
        });
        _ = factory.Server;

        await factory.DisposeAsync();

        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "SidecarMissing");
    }

    [Fact]
    public async Task Dapr_mode_keeps_running_once_the_sidecar_answers()
    {
        // On a test clock, so the wait cannot run out before the sidecar has answered however slow the start (with a
        // real 0.5 s wait, missed on a cold start, this test was flaky); then the clock passes the wait's end, where a
        // wait still counting would stop the app.
        var sidecarWait = TimeSpan.FromSeconds(3);
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var cursor = new FakeCursor();
        var logs = new FakeLogCollector();
        // Returns once the app's start-up wait has ended.
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, settings: new Dictionary<string, string?> { ["Handoff:Dapr:SidecarWaitTimeout"] = sidecarWait.ToString() }, logs: logs);
        var stopping = factory.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;

        time.Advance(sidecarWait + TimeSpan.FromSeconds(1));

        Assert.False(stopping.IsCancellationRequested);
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Name == "SidecarReady");
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "SidecarMissing");
    }
}
