using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.Core.Tests;

public sealed class RetryPolicyTests
{
    [Fact]
    public void Backoff_grows_by_the_factor_up_to_the_cap()
    {
        var policy = new RetryPolicy(new RetryOptions(), () => 0.5);

        Assert.Equal(
            [30, 120, 480, 1800, 1800],
            Enumerable.Range(1, 5).Select(attempt => policy.DelayAfter(attempt, null).TotalSeconds));
    }

    [Fact]
    public void Jitter_spreads_a_delay_by_twenty_percent_either_way()
    {
        Assert.Equal(24, new RetryPolicy(new RetryOptions(), () => 0).DelayAfter(1, null).TotalSeconds, 3);
        Assert.Equal(36, new RetryPolicy(new RetryOptions(), () => 1).DelayAfter(1, null).TotalSeconds, 3);
        Assert.Equal(1800, new RetryPolicy(new RetryOptions(), () => 1).DelayAfter(5, null).TotalSeconds, 3);
    }

    [Fact]
    public void Longer_retry_after_wins_and_a_shorter_one_is_ignored()
    {
        var policy = new RetryPolicy(new RetryOptions(), () => 0.5);

        Assert.Equal(TimeSpan.FromSeconds(120), policy.DelayAfter(1, TimeSpan.FromSeconds(120)));
        Assert.Equal(TimeSpan.FromSeconds(30), policy.DelayAfter(1, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public void Retries_stop_at_max_attempts_and_for_final_failures()
    {
        var policy = new RetryPolicy(new RetryOptions { MaxAttempts = 3 }, () => 0.5);
        var transient = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true);

        Assert.True(policy.CanRetry(transient, 2));
        Assert.False(policy.CanRetry(transient, 3));
        Assert.False(policy.CanRetry(new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false), 1));
    }
}
