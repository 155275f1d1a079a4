using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace HandoffDapr.Service.Tests.DaprMode;

public sealed class SidecarStartupTests
{
    [Fact]
    public async Task Dapr_mode_stops_the_process_when_no_sidecar_answers_in_time()
    {
        using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(builder =>
        {
            builder.UseEnvironment("Production");
            builder.UseSetting("Handoff:Mode", "Dapr");
            // Nothing listens on port 9 of loopback.
            builder.UseSetting("DAPR_HTTP_ENDPOINT", "http://127.0.0.1:9");
            builder.UseSetting("DAPR_GRPC_ENDPOINT", "http://127.0.0.1:9");
            builder.UseSetting("Handoff:Dapr:SidecarWaitTimeout", "00:00:00.500");
        });
        _ = factory.Server;
        var stopping = factory.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;

        await Task.Delay(TimeSpan.FromSeconds(10), stopping).ContinueWith(_ => { });

        Assert.True(stopping.IsCancellationRequested);
    }

    [Fact]
    public async Task Dapr_mode_keeps_running_once_the_sidecar_answers()
    {
        using var cursor = new FakeCursor();
        // The same short wait as the test above: past it, a start-up that had not seen the sidecar would have stopped.
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Dapr:SidecarWaitTimeout"] = "00:00:00.500" });
        var lifetime = factory.Services.GetRequiredService<IHostApplicationLifetime>();

        await Task.Delay(TimeSpan.FromSeconds(2));

        Assert.False(lifetime.ApplicationStopping.IsCancellationRequested);
    }
}
