using Dapr.Client;
using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// The sidecar answers, takes our calls, and has what the app needs (<see cref="SidecarComponents"/>):
/// daprd's health endpoint answers anyone, while with an API token every other call needs <c>DAPR_API_TOKEN</c>, and it
/// starts without a component that is misnamed or not deployed. Without this the app read ready while its every actor
/// call was refused. The probe's answer says only healthy or not; why is logged once each time it changes (the health
/// check service also logs an error line per failed probe). An integration's missing binding is logged, not a reason
/// to be out of traffic. One check at a time, so that a slow probe's verdict cannot follow a newer one.
/// </summary>
public sealed partial class SidecarReadinessCheck(
    DaprClient dapr, SidecarFeatures features, IOptions<HandoffOptions> options, TimeProvider time, ILogger<SidecarReadinessCheck> logger) : IHealthCheck
{
    /// <param name="NotReadyBecause">Null when ready.</param>
    /// <param name="Starting">A reason every start goes through for a few seconds (daprd not up yet, the actor type not yet registered).</param>
    /// <param name="MissingBindings">Integrations' bindings daprd lacks, or null.</param>
    private sealed record Verdict(string? NotReadyBecause, bool Starting, string? MissingBindings);

    /// <summary>What was logged: a line is written when this changes.</summary>
    private enum Said { Nothing, NotReadyYet, NotReady, BindingsMissing, Ready }

    private readonly SemaphoreSlim oneAtATime = new(1, 1);
    private readonly DateTimeOffset firstCheck = time.GetUtcNow();
    private (Said What, string? Text) said = (Said.Nothing, null);
    private bool beenReady;

    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        await oneAtATime.WaitAsync(cancellationToken);
        try
        {
            var verdict = await JudgeAsync(cancellationToken);
            Log(verdict);
            beenReady |= verdict.NotReadyBecause is null;
            return verdict.NotReadyBecause is { } reason ? HealthCheckResult.Unhealthy(reason) : HealthCheckResult.Healthy();
        }
        finally
        {
            oneAtATime.Release();
        }
    }

    /// <summary>
    /// Once per change of what is said. A start's waiting is information until the app was first ready or the sidecar's
    /// start-up wait (<see cref="DaprOptions.SidecarWaitTimeout"/>) is over; past that, the same reason is a warning.
    /// </summary>
    private void Log(Verdict verdict)
    {
        var starting = verdict.Starting && !beenReady && time.GetUtcNow() - firstCheck < options.Value.Dapr.SidecarWaitTimeout;
        (Said What, string? Text) now = verdict switch
        {
            { NotReadyBecause: { } reason } => (starting ? Said.NotReadyYet : Said.NotReady, reason),
            { MissingBindings: { } bindings } => (Said.BindingsMissing, bindings),
            _ => (said.What == Said.Nothing ? Said.Nothing : Said.Ready, null), // the first probe's "ready" needs no line: SidecarReady said it
        };
        if (now == said)
        {
            return;
        }

        switch (now.What)
        {
            case Said.NotReadyYet:
                LogNotReadyYet(logger, now.Text!);
                break;
            case Said.NotReady:
                LogSidecarNotReady(logger, now.Text!);
                break;
            case Said.BindingsMissing:
                LogBindingsMissing(logger, now.Text!);
                break;
            case Said.Ready:
                LogSidecarReadyAgain(logger);
                break;
        }

        said = now;
    }

    private async Task<Verdict> JudgeAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (!await dapr.CheckHealthAsync(cancellationToken))
            {
                cancellationToken.ThrowIfCancellationRequested();
                return new("the Dapr sidecar is not healthy", Starting: true, null);
            }

            var (metadata, refused) = await SidecarStartup.ReadMetadataAsync(dapr, cancellationToken);
            cancellationToken.ThrowIfCancellationRequested(); // the probe went away mid-check: nothing learnt
            if (metadata is null)
            {
                return refused
                    ? new("the Dapr sidecar refuses the app's calls (DAPR_API_TOKEN)", Starting: false, null)
                    : new("the Dapr sidecar's metadata could not be read", Starting: true, null);
            }

            // Only retention needs a feature: without it, no second call.
            var enabledFeatures = options.Value.RunRetention is null ? null : await features.ReadAsync(cancellationToken);
            var missing = SidecarComponents.MissingForAll(metadata, options.Value, enabledFeatures);
            var bindings = SidecarComponents.MissingBindings(metadata, options.Value);
            return new(
                missing.Count > 0 ? "the Dapr sidecar lacks what the app needs: " + string.Join("; ", missing) : null,
                Starting: missing.Count > 0 && missing.All(reason => reason == SidecarComponents.ActorTypeNotRegistered),
                bindings.Count > 0 ? string.Join("; ", bindings) : null);
        }
        catch (Exception exception) when (exception is not OperationCanceledException)
        {
            // Anything else (the client disposed at shutdown, say): a fixed reason, never the exception's text.
            return new("the Dapr sidecar could not be asked", Starting: true, null);
        }
    }

    [LoggerMessage(EventId = 4104, EventName = "SidecarNotReady", Level = LogLevel.Warning, Message = "Not ready: {Reason}")]
    private static partial void LogSidecarNotReady(ILogger logger, string reason);

    [LoggerMessage(EventId = 4105, EventName = "SidecarReadyAgain", Level = LogLevel.Information, Message = "Ready: the Dapr sidecar has what the app needs")]
    private static partial void LogSidecarReadyAgain(ILogger logger);

    [LoggerMessage(EventId = 4106, EventName = "SidecarNotReadyYet", Level = LogLevel.Information, Message = "Not ready yet: {Reason}")]
    private static partial void LogNotReadyYet(ILogger logger, string reason);

    [LoggerMessage(EventId = 4107, EventName = "SidecarBindingsMissing", Level = LogLevel.Warning,
        Message = "Ready, but the Dapr sidecar has no binding component named {Bindings}: launches of those integrations fail (BindingRefused) until it has, or the integration is removed from configuration")]
    private static partial void LogBindingsMissing(ILogger logger, string bindings);
}
