using Dapr.Client;
using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// Waits for the sidecar in the background (daprd may itself wait for our port, so blocking start-up could
/// deadlock); stops the process if the sidecar never comes, so the orchestrator restarts it.
/// </summary>
public sealed partial class SidecarStartup(
    DaprClient dapr,
    IOptions<HandoffOptions> options,
    IHostApplicationLifetime lifetime,
    ILogger<SidecarStartup> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        timeout.CancelAfter(options.Value.Dapr.SidecarWaitTimeout);
        try
        {
            await dapr.WaitForSidecarAsync(timeout.Token);
            LogSidecarReady();
        }
        catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
        {
            LogSidecarMissing(options.Value.Dapr.SidecarWaitTimeout);
            // A failed start: the process must not exit 0 (an orchestrator would not restart it, a script would go on).
            Environment.ExitCode = 1;
            lifetime.StopApplication();
        }
    }

    [LoggerMessage(EventId = 4101, EventName = "SidecarReady", Level = LogLevel.Information, Message = "Dapr sidecar is ready")]
    private partial void LogSidecarReady();

    [LoggerMessage(EventId = 4102, EventName = "SidecarMissing", Level = LogLevel.Critical, Message = "No Dapr sidecar answered within {Timeout}; stopping")]
    private partial void LogSidecarMissing(TimeSpan timeout);
}
