using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace HandoffDapr.Service.Api;

public static class HealthEndpoints
{
    public const string ReadinessTag = "ready";
    public const string LivenessPath = "/healthz";
    public const string ReadinessPath = "/readyz";

    /// <summary>A liveness or readiness probe (any letter case), which tracing and the shutdown drain leave out.</summary>
    public static bool IsProbe(PathString path) => path.StartsWithSegments(LivenessPath) || path.StartsWithSegments(ReadinessPath);

    // GET and HEAD only: a probe never changes anything, and any other method is a client's mistake (405).
    internal static readonly HttpMethodMetadata ProbeMethods = new(["GET", "HEAD"]);

    /// <summary><c>/healthz</c>: the process answers. <c>/readyz</c>: its state store (SQLite or the sidecar) answers too.</summary>
    public static IEndpointRouteBuilder MapHealthEndpoints(this IEndpointRouteBuilder app)
    {
        app.MapHealthChecks(LivenessPath, new() { Predicate = _ => false }).WithMetadata(ProbeMethods);
        app.MapHealthChecks(ReadinessPath, new() { Predicate = check => check.Tags.Contains(ReadinessTag) }).WithMetadata(ProbeMethods);
        return app;
    }
}

public sealed class SqliteReadinessCheck(Embedded.SqliteRunStore store) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            return await store.IsHealthyAsync(cancellationToken) ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy("The data file does not hold the run tables.");
        }
        catch (Microsoft.Data.Sqlite.SqliteException)
        {
            return HealthCheckResult.Unhealthy("The data file could not be opened (deleted or moved?).");
        }
    }
}

/// <summary>
/// The sidecar answers, takes our calls, and has loaded what the app needs (<see cref="DaprHost.SidecarComponents"/>):
/// daprd's health endpoint answers anyone, while with an API token every other call needs <c>DAPR_API_TOKEN</c>, and it
/// starts without a component that is misnamed or not deployed. Without this the app read ready while its every actor and
/// binding call was refused. The probe's answer says only healthy or not; why is logged, once each time it changes.
/// </summary>
public sealed partial class SidecarReadinessCheck(
    Dapr.Client.DaprClient dapr, Microsoft.Extensions.Options.IOptions<Configuration.HandoffOptions> options, ILogger<SidecarReadinessCheck> logger) : IHealthCheck
{
    private const string Ready = "";
    private string lastReason = Ready;

    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var reason = await WhyNotReadyAsync(cancellationToken);
        var previous = Interlocked.Exchange(ref lastReason, reason);
        if (reason != previous)
        {
            if (reason == Ready)
            {
                LogSidecarReadyAgain(logger);
            }
            else
            {
                LogSidecarNotReady(logger, reason);
            }
        }

        return reason == Ready ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy(reason);
    }

    private async Task<string> WhyNotReadyAsync(CancellationToken cancellationToken)
    {
        if (!await dapr.CheckHealthAsync(cancellationToken))
        {
            return "the Dapr sidecar is not healthy";
        }

        if (await DaprHost.SidecarStartup.ReadMetadataAsync(dapr, cancellationToken) is not { } metadata)
        {
            return "the Dapr sidecar refuses the app's calls (DAPR_API_TOKEN)";
        }

        return DaprHost.SidecarComponents.Missing(metadata, options.Value) is { Count: > 0 } missing
            ? "the Dapr sidecar lacks what the app needs: " + string.Join("; ", missing)
            : Ready;
    }

    [LoggerMessage(EventId = 4104, EventName = "SidecarNotReady", Level = LogLevel.Warning, Message = "Not ready: {Reason}")]
    private static partial void LogSidecarNotReady(ILogger logger, string reason);

    [LoggerMessage(EventId = 4105, EventName = "SidecarReadyAgain", Level = LogLevel.Information, Message = "Ready: the Dapr sidecar has what the app needs")]
    private static partial void LogSidecarReadyAgain(ILogger logger);
}
