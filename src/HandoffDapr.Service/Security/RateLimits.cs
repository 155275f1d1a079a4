using System.Globalization;
using System.Threading.RateLimiting;
using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Security;

/// <summary>
/// Fixed-window limits: manual triggers per group (a runaway client of one team cannot starve the others) and
/// webhooks per integration. Both are keyed on what only the request's body or signature tells, so the endpoints
/// ask the limiters themselves. Over the limit: 429 with <c>Retry-After</c>.
/// </summary>
public static class RateLimits
{
    /// <summary>The limits come from the validated <see cref="HandoffOptions"/>, not from a second binding of the section.</summary>
    public static void AddHandoffRateLimits(this IServiceCollection services)
    {
        services.AddSingleton(sp => new TriggerRateLimiter(sp.GetRequiredService<IOptions<HandoffOptions>>().Value.RateLimits));
        services.AddSingleton(sp => new WebhookRateLimiter(sp.GetRequiredService<IOptions<HandoffOptions>>().Value.RateLimits));
        services.AddSingleton(sp => new RefusalLog(sp.GetRequiredService<TimeProvider>()));
    }
}

/// <summary>A fixed window of <paramref name="permitsPerMinute"/> per key.</summary>
public abstract class KeyedRateLimiter<TKey>(int permitsPerMinute) where TKey : notnull
{
    /// <summary>The limit, for the 429's detail.</summary>
    public int PermitsPerMinute { get; } = permitsPerMinute;

    private readonly PartitionedRateLimiter<TKey> limiter = PartitionedRateLimiter.Create<TKey, TKey>(
        key => RateLimitPartition.GetFixedWindowLimiter(key, _ => new FixedWindowRateLimiterOptions
        {
            PermitLimit = permitsPerMinute,
            Window = TimeSpan.FromMinutes(1),
            QueueLimit = 0,
            AutoReplenishment = true,
        }));

    /// <returns>Null when allowed, else how long to wait.</returns>
    public TimeSpan? TryAcquire(TKey key)
    {
        using var lease = limiter.AttemptAcquire(key);
        return lease.IsAcquired ? null : lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromMinutes(1);
    }
}

/// <summary>The manual trigger's limit is per group, known only once the body is read.</summary>
public sealed class TriggerRateLimiter(RateLimitOptions limits) : KeyedRateLimiter<long>(limits.TriggersPerGroupPerMinute);

/// <summary>
/// Webhooks per configured integration, with separate budgets for signed and unsigned requests: a flood of forged
/// webhooks is throttled but cannot use up the budget of the provider's real, signed ones.
/// </summary>
public sealed class WebhookRateLimiter(RateLimitOptions limits) : KeyedRateLimiter<(long IntegrationId, bool Signed)>(limits.WebhooksPerIntegrationPerMinute);

public static class RetryAfterHeader
{
    public static string Format(TimeSpan wait) => Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
}
