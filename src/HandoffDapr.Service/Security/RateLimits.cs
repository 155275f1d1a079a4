using System.Globalization;
using System.Threading.RateLimiting;
using HandoffDapr.Service.Api;
using HandoffDapr.Service.Configuration;
using Microsoft.AspNetCore.RateLimiting;

namespace HandoffDapr.Service.Security;

/// <summary>
/// Fixed-window limits: manual triggers per group (a runaway client of one team cannot starve the others)
/// and webhooks per integration. Over the limit: 429 with <c>Retry-After</c>.
/// </summary>
public static class RateLimits
{
    public const string Webhooks = "webhooks";

    public static void AddHandoffRateLimits(this IServiceCollection services, RateLimitOptions limits)
    {
        services.AddSingleton(new TriggerRateLimiter(limits));
        services.AddRateLimiter(options =>
        {
            options.AddPolicy(Webhooks, context => RateLimitPartition.GetFixedWindowLimiter(
                context.Request.RouteValues["integrationId"]?.ToString() ?? string.Empty,
                _ => Window(limits.WebhooksPerIntegrationPerMinute)));
            options.OnRejected = async (context, cancellationToken) =>
            {
                var retryAfter = context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromMinutes(1);
                await Problems.RateLimited(retryAfter).ExecuteAsync(context.HttpContext);
            };
        });
    }

    internal static FixedWindowRateLimiterOptions Window(int permits) => new()
    {
        PermitLimit = permits,
        Window = TimeSpan.FromMinutes(1),
        QueueLimit = 0,
        AutoReplenishment = true,
    };
}

/// <summary>The manual trigger's limit is per group, known only once the body is read: the endpoint asks this limiter.</summary>
public sealed class TriggerRateLimiter(RateLimitOptions limits)
{
    private readonly PartitionedRateLimiter<long> limiter = PartitionedRateLimiter.Create<long, long>(
        groupId => RateLimitPartition.GetFixedWindowLimiter(groupId, _ => RateLimits.Window(limits.TriggersPerGroupPerMinute)));

    /// <returns>Null when allowed, else how long to wait.</returns>
    public TimeSpan? TryAcquire(long groupId)
    {
        using var lease = limiter.AttemptAcquire(groupId);
        return lease.IsAcquired ? null : lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromMinutes(1);
    }
}

public static class RetryAfterHeader
{
    public static string Format(TimeSpan wait) => Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
}
