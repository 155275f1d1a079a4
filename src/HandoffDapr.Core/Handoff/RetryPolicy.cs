using HandoffDapr.Core.Providers;

namespace HandoffDapr.Core.Handoff;

public sealed record RetryOptions
{
    public TimeSpan BaseDelay { get; init; } = TimeSpan.FromSeconds(30);
    public double Factor { get; init; } = 4;
    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromMinutes(30);
    public int MaxAttempts { get; init; } = 5;

    /// <summary>Each delay is spread by ±this fraction so that many runs failing together do not retry together.</summary>
    public double JitterRatio { get; init; } = 0.2;
}

/// <summary>Exponential backoff with jitter, honouring a longer <c>Retry-After</c>.</summary>
public sealed class RetryPolicy(RetryOptions options, Func<double> nextRandom)
{
    public RetryOptions Options => options;

    public bool CanRetry(ProviderFailure failure, int attemptsMade) => failure.Retryable && attemptsMade < options.MaxAttempts;

    /// <param name="attemptsMade">Attempts already made, at least 1.</param>
    public TimeSpan DelayAfter(int attemptsMade, TimeSpan? retryAfter)
    {
        var exponent = Math.Max(0, attemptsMade - 1);
        var backoff = Math.Min(options.MaxDelay.TotalSeconds, options.BaseDelay.TotalSeconds * Math.Pow(options.Factor, exponent));
        var jitter = 1 - options.JitterRatio + (2 * options.JitterRatio * nextRandom());
        var delay = TimeSpan.FromSeconds(Math.Min(options.MaxDelay.TotalSeconds, backoff * jitter));
        return retryAfter is { } asked && asked > delay ? asked : delay;
    }
}
