using System.Diagnostics;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

public sealed class SidecarStartupTests
{
    [Fact]
    public async Task Dapr_mode_stops_the_process_when_no_sidecar_answers_in_time_with_a_critical_line_naming_the_wait()
    {
        var logs = new FakeLogCollector();
        using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(builder =>
        {
            builder.UseEnvironment("Production");
            builder.UseSetting("Handoff:Mode", "Dapr");
            // Nothing listens on port 9 of loopback.
            builder.UseSetting("DAPR_HTTP_ENDPOINT", "http://127.0.0.1:9");
            builder.UseSetting("DAPR_GRPC_ENDPOINT", "http://127.0.0.1:9");
            builder.UseSetting("Handoff:Dapr:SidecarWaitTimeout", "00:00:00.500");
            builder.ConfigureLogging(logging => logging.AddProvider(new FakeLoggerProvider(logs)));
        });
        _ = factory.Server;
        var stopping = factory.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;

        await Task.Delay(TimeSpan.FromSeconds(10), stopping).ContinueWith(_ => { });

        Assert.True(stopping.IsCancellationRequested);
        // The runbook's SidecarMissing: critical, with the wait (Handoff:Dapr:SidecarWaitTimeout) that ran out.
        var missing = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarMissing");
        Assert.Equal((LogLevel.Critical, "00:00:00.5000000"), (missing.Level, missing.GetStructuredStateValue("Timeout")));
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
        // Waited for until the sidecar has answered, then past the wait's end: a wait still counting would stop the app.
        // (A wait this short that the sidecar missed, on a cold start, made this test flaky with 0.5 s.)
        var sidecarWait = TimeSpan.FromSeconds(3);
        using var cursor = new FakeCursor();
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Dapr:SidecarWaitTimeout"] = sidecarWait.ToString() }, logs: logs);
        // Timed from here, not from before the start: the wait began before StartAsync returned (it returns once the
        // wait has ended), and the app's start before it may take longer than the second this test waits past its end.
        var started = Stopwatch.StartNew();
        var stopping = factory.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;

        while (!logs.GetSnapshot().Any(record => record.Id.Name == "SidecarReady") && !stopping.IsCancellationRequested)
        {
            Assert.True(started.Elapsed < TimeSpan.FromSeconds(30), "The app never reported the sidecar ready.");
            await Task.Delay(20);
        }

        await Task.Delay(sidecarWait - started.Elapsed + TimeSpan.FromSeconds(1) is { Ticks: > 0 } rest ? rest : TimeSpan.Zero);

        Assert.False(stopping.IsCancellationRequested);
    }
}
