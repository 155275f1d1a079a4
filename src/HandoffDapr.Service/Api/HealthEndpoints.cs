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
            return await store.ReadinessProblemAsync(cancellationToken) is { } problem ? HealthCheckResult.Unhealthy(problem) : HealthCheckResult.Healthy();
        }
        catch (Microsoft.Data.Sqlite.SqliteException)
        {
            return HealthCheckResult.Unhealthy("The data file could not be opened (deleted or moved?).");
        }
    }
}
