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
    TimeProvider timeProvider,
    ILogger<SidecarStartup> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // On the app's clock, as every other wait: a test can hold the wait open or run it out without waiting in real time.
        using var waitEnded = new CancellationTokenSource(options.Value.Dapr.SidecarWaitTimeout, timeProvider);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, waitEnded.Token);
        try
        {
            await dapr.WaitForSidecarAsync(timeout.Token);
            LogSidecarReady();
            if ((await ReadMetadataAsync(dapr, stoppingToken)).Refused)
            {
                // Not a reason to stop: readiness keeps the app out of traffic, and says so until the token is right.
                LogSidecarRefusedCalls();
            }
        }
        catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
        {
            LogSidecarMissing(options.Value.Dapr.SidecarWaitTimeout);
            // A failed start: the process must not exit 0 (an orchestrator would not restart it, a script would go on).
            Environment.ExitCode = 1;
            lifetime.StopApplication();
        }
    }

    /// <summary>
    /// daprd's metadata, or whether it was refused (the token) when it could not be read. A call daprd's API token guards:
    /// its health endpoint does not, so answering there says nothing of whether our calls are taken. The reason of a
    /// failure is not logged (it may quote the request).
    /// </summary>
    public static async Task<(DaprMetadata? Metadata, bool Refused)> ReadMetadataAsync(DaprClient dapr, CancellationToken cancellationToken)
    {
        try
        {
            return (await dapr.GetMetadataAsync(cancellationToken), false);
        }
        catch (Exception exception) when (exception is Dapr.DaprException or Grpc.Core.RpcException or HttpRequestException)
        {
            // The SDK wraps the gRPC status; daprd answers a missing or wrong token with Unauthenticated (its API token
            // check), and only that is the token. A call its API allow-list leaves out is Unimplemented: unread, not refused.
            var status = (exception as Grpc.Core.RpcException ?? exception.InnerException as Grpc.Core.RpcException)?.StatusCode;
            return (null, status is Grpc.Core.StatusCode.Unauthenticated);
        }
    }

    [LoggerMessage(EventId = 4103, EventName = "SidecarRefusedCalls", Level = LogLevel.Critical,
        Message = "The Dapr sidecar answers its health check but refuses the app's calls: set DAPR_API_TOKEN to daprd's API token (dapr.io/api-token-secret); the app reads not ready until it does")]
    private partial void LogSidecarRefusedCalls();

    [LoggerMessage(EventId = 4101, EventName = "SidecarReady", Level = LogLevel.Information, Message = "Dapr sidecar is ready")]
    private partial void LogSidecarReady();

    [LoggerMessage(EventId = 4102, EventName = "SidecarMissing", Level = LogLevel.Critical, Message = "No Dapr sidecar answered within {Timeout}; stopping")]
    private partial void LogSidecarMissing(TimeSpan timeout);
}
